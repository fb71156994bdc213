"""One rank of distill's own train loop under FSDP2 or DeepSpeed ZeRO-3 on CPU gloo ranks, for test_sharded.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/sharded_worker.py fsdp2|zero3 RECIPE \\
        --data CURATE --out OUT [--crash-after-save] [-- RECIPE2 --data CURATE2 --out OUT2 ...]

It runs `distill.train.loop.main` unchanged, with two hooks: Accelerate is switched to FSDP2 or ZeRO-3 right after
the Accelerator is made (`use_fsdp2` / `use_zero3`, the only place this is done), and what ran is written to
OUT/../rank-R.json: Accelerate's distributed type, how many parameters are DTensors (ZeRO-3: partitioned),
lm_head.weight's type outside the forward, and
the rank's peak RSS and its local parameter / gradient / optimizer bytes (what the memory plan prices). With
--crash-after-save every rank exits (code 3, no cleanup) right after the first checkpoint is complete.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

from distill.train import loop


def use_fsdp2(accelerator) -> None:
    """Accelerate on CPU is MULTI_CPU (DDP over gloo) and silently ignores an FSDP plugin or
    ACCELERATE_USE_FSDP (accelerate 1.16: only a CUDA/XPU/NPU state becomes FSDP). Setting the distributed type
    and an FSDP2 plugin on the state after the Accelerator exists and before `prepare` makes `prepare` run
    Accelerate's own FSDP2 preparation (fsdp2_prepare_model: fully_shard per decoder layer, then the root),
    which works on gloo. The plugin mirrors pipelines/accelerate/fsdp2.yaml (minus bf16 and meta-device
    loading, which CPU fp32 runs do not use). On CUDA (make gpu-check) the same switch is used over NCCL."""
    from accelerate import DistributedType, FullyShardedDataParallelPlugin, PartialState

    # on PartialState too: every later AcceleratorState() copies PartialState's type back over its own
    PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        reshard_after_forward=True,
        state_dict_type="SHARDED_STATE_DICT",
        cpu_ram_efficient_loading=False,
    )


def use_zero3(accelerator) -> None:
    """DeepSpeed ZeRO-3 the same way (DS_ACCELERATOR=cpu: DeepSpeed's CPU accelerator, gloo without oneCCL): Accelerate
    turns DEEPSPEED on only off-CPU (accelerate 1.16 AcceleratorState: `ACCELERATE_USE_DEEPSPEED ... and not cpu`).
    The plugin mirrors pipelines/accelerate/zero3.yaml: the model is partitioned while it loads."""
    from accelerate import DeepSpeedPlugin, DistributedType, PartialState

    plugin = DeepSpeedPlugin(zero_stage=3, zero3_init_flag=True, zero3_save_16bit_model=True)
    plugin.set_mixed_precision("no")
    PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.DEEPSPEED
    accelerator.state.deepspeed_plugins = plugin
    plugin.select(_from_accelerator_state=True)  # transformers' from_pretrained now loads under zero.Init
    accelerator.deepspeed_engine_wrapped = None  # what Accelerator() sets when it is given a plugin


BASELINE: dict[str, float] = {}


class Mallinfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (malloc.h, glibc >= 2.33): ten size_t counters."""

    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]  # fmt: skip


@functools.cache
def _mallinfo2():
    """glibc's mallinfo2, loaded once (the probe calls it every 2 ms)."""
    fn = ctypes.CDLL("libc.so.6").mallinfo2
    fn.restype = Mallinfo2
    return fn


def malloc_in_use() -> int:
    """Bytes malloc has handed out and not yet had back, over all arenas: uordblks (in the arenas) + hblkhd (in
    mmapped chunks). PyTorch's CPU allocator is malloc (c10 alloc_cpu: posix_memalign), so this is the CPU
    counterpart of torch.cuda.memory_allocated: live tensors, plus the other libraries' heap (gloo, Python's
    large objects), without the freed pages glibc keeps (which RSS counts)."""
    info = _mallinfo2()()
    return info.uordblks + info.hblkhd


def on_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def in_use() -> int:
    """What the device's allocator holds now: CUDA's caching allocator on a GPU (make gpu-check), malloc on CPU."""
    import torch

    return torch.cuda.memory_allocated() if on_cuda() else malloc_in_use()


class PeakProbe:
    """The highest malloc_in_use() and RSS seen while `on`, sampled every 2 ms by a daemon thread."""

    def __init__(self) -> None:
        self.on, self.alloc, self.rss = False, 0, 0.0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            if self.on:
                self.alloc, self.rss = max(self.alloc, malloc_in_use()), max(self.rss, current_rss_mib())
            time.sleep(0.002)


def file_backed_bytes(tensors) -> int:
    """Bytes of these tensors' storages that live in a file mapping, not in malloc: safetensors weights loaded
    as they are (fp32 on fp32) stay mmapped (copy-on-write once trained), where a GPU run copies them to the
    device, so a CPU peak counts them beside malloc_in_use()."""
    maps = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        span, *rest = line.split()
        if len(rest) >= 5 and rest[4].startswith("/"):
            lo, hi = (int(x, 16) for x in span.split("-"))
            maps.append((lo, hi))
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(n for ptr, n in storages.items() if any(lo <= ptr < hi for lo, hi in maps))


def measured_peak(facts: dict) -> int:
    """A run's peak over its step loop: what the allocator held above the moment before the weights loaded, plus
    the weights still mmapped from the checkpoint (a single process trains the safetensors pages in place)."""
    return facts["loop_peak_alloc_bytes"] - facts["alloc_before_model_bytes"] + facts["file_backed_bytes"]


def probe_steps() -> None:
    """Wrap distill.train.loop's load_model and loop so BASELINE gets the allocator before the weights load and
    this process's peaks over the step loop (not while it loads or saves). On a GPU, CUDA's own peak counter."""
    import torch

    probe = PeakProbe()

    def load_model(*args, **kwargs):
        BASELINE["alloc_before_model_bytes"] = in_use()  # tokenizer and data in memory, no weights yet
        BASELINE["rss_before_load_mib"] = current_rss_mib()
        return load(*args, **kwargs)

    def measured_loop(run):
        local = [p.to_local() if hasattr(p, "to_local") else p for p in run.model.parameters()]
        mapped = 0 if on_cuda() else file_backed_bytes(local)
        if on_cuda():
            torch.cuda.reset_peak_memory_stats()
        probe.on = True
        rows = steps(run)
        probe.on = False
        peak = torch.cuda.max_memory_allocated() if on_cuda() else probe.alloc
        BASELINE.update(loop_peak_alloc_bytes=peak, loop_peak_rss_mib=probe.rss, file_backed_bytes=mapped)
        return rows

    loop.load_model, loop.loop = load_model, measured_loop


def current_rss_mib() -> float:
    """This process's resident memory now (MiB), from /proc/self/statm (pages)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def local_bytes(tensors) -> int:
    """Bytes this rank holds for these tensors (a DTensor counts its local shard only)."""
    total = 0
    for t in tensors:
        local = t.to_local() if hasattr(t, "to_local") else t
        total += local.numel() * local.element_size()
    return total


def report(path: Path, accelerator, model, optimizer) -> None:
    """What ran on this rank and what it held, as JSON (read by the test)."""
    from torch.distributed.tensor import DTensor

    net = accelerator.unwrap_model(model)
    params = list(net.parameters())
    if accelerator.state.deepspeed_plugin is not None:  # ZeRO-3: partitions, not DTensors
        path.write_text(json.dumps(zero3_facts(accelerator, net, params), indent=2))
        return
    states = [v for s in optimizer.state.values() for v in s.values() if hasattr(v, "numel") and v.dim()]
    facts = {
        "distributed_type": str(accelerator.distributed_type),
        "is_fsdp2": bool(getattr(accelerator, "is_fsdp2", False)),
        "params": len(params),
        "dtensor_params": sum(isinstance(p, DTensor) for p in params),
        "lm_head_weight": type(net.get_output_embeddings().weight).__name__,
        "param_bytes": local_bytes(params),
        "optimizer_state_bytes": local_bytes(states),
        # ru_maxrss is in KiB on Linux: the rank's peak resident memory over the whole run
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **BASELINE,
    }
    path.write_text(json.dumps(facts, indent=2))


def run(mode: str, argv: list[str]) -> None:
    """One `distill.train.loop.main(argv)` with the hooks; `--crash-after-save` in argv kills the ranks after the
    first checkpoint."""
    crash = "--crash-after-save" in argv
    argv = [a for a in argv if a != "--crash-after-save"]
    out = Path(argv[argv.index("--out") + 1])
    facts = out.parent / f"rank-{os.environ.get('RANK', '0')}.json"

    def make_accelerator(cfg, folder):
        BASELINE["rss_before_model_mib"] = current_rss_mib()  # imports and the interpreter, no model yet
        accelerator = made(cfg, folder)
        {"fsdp2": use_fsdp2, "zero3": use_zero3}[mode](accelerator)
        return accelerator

    def prepared(accelerator, model, cfg, schedule):
        wrapped = prepare(accelerator, model, cfg, schedule)
        BASELINE["alloc_after_prepare_bytes"] = in_use()  # the sharded model states, before any step
        report(facts, accelerator, wrapped[0], wrapped[1])
        return wrapped

    def save_checkpoint(accelerator, *args, **kwargs):
        save(accelerator, *args, **kwargs)
        if crash:  # killed right after the checkpoint is complete: no final/, no manifest
            accelerator.wait_for_everyone()
            os._exit(3)

    def summarize(run, rows):
        report(facts, run.accelerator, run.model, run.optimizer)
        return finish(run, rows)

    probe_steps()
    loop.make_accelerator, loop.prepare, loop.save_checkpoint = make_accelerator, prepared, save_checkpoint
    loop.summarize = summarize
    loop.main(argv)


made, prepare, save, finish = loop.make_accelerator, loop.prepare, loop.save_checkpoint, loop.summarize
load, steps = loop.load_model, loop.loop


def zero3_facts(accelerator, net, params) -> dict:
    """What ZeRO-3 left on this rank: every parameter partitioned (ds_numel its real size; numel 0 outside a
    forward unless it is small) and this rank's partition bytes."""
    return {
        "distributed_type": str(accelerator.distributed_type),
        "params": len(params),
        "partitioned": sum(hasattr(p, "ds_numel") for p in params),
        # below DeepSpeed's persistence threshold (1e5 elements) a parameter stays whole between forwards
        "empty_outside_forward": sum(p.numel() == 0 for p in params),
        "lm_head_numel": net.get_output_embeddings().weight.numel(),
        "param_bytes": sum(p.ds_tensor.numel() * p.ds_tensor.element_size() for p in params),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **BASELINE,
    }


def head_inputs(rank: int, hidden_size: int = 16, vocab: int = 40, k: int = 4):
    """Rank `rank`'s hidden states [2, 9, H] and the trained positions, labels and teacher top-K rows of a loss
    head check (rank-dependent, and a different number of trained positions per rank)."""
    import torch

    g = torch.Generator().manual_seed(100 + rank)
    hidden = torch.randn(2, 9, hidden_size, generator=g, requires_grad=True)
    positions = torch.arange(3, 18 - rank)
    labels = torch.randint(0, vocab, (len(positions),), generator=g)
    top_ids = torch.randint(0, vocab, (len(positions), k), generator=g)
    top_lp = torch.log_softmax(torch.randn(len(positions), k + 2, generator=g), -1)[:, :k]
    return hidden, positions, labels, top_ids, top_lp


def heads(out: Path) -> None:
    """The loss heads with lm_head.weight a DTensor shard (Shard(0) over the ranks, as FSDP2 leaves it between
    forwards): chunked CE + the fused kd loss, backward; rank 0 saves the losses, the full weight gradient and
    every rank's hidden-state gradient for the test to compare with plain-tensor heads."""
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from distill.train.kd import KDSpec, chunked_kd_loss
    from distill.train.loss import chunked_cross_entropy

    dist.init_process_group("gloo")
    rank, mesh = dist.get_rank(), init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 40, bias=False)
    head.weight = torch.nn.Parameter(distribute_tensor(head.weight.detach(), mesh, [Shard(0)]))
    hidden, positions, labels, top_ids, top_lp = head_inputs(rank)
    ce = chunked_cross_entropy(hidden, head, positions, labels, 5)
    kd, _, _ = chunked_kd_loss(hidden, head, positions, labels, top_ids, top_lp, KDSpec(alpha=0.3), 5)
    (ce + kd).backward()
    found = [None] * dist.get_world_size()
    dist.all_gather_object(found, (ce.item(), kd.item(), hidden.grad))
    weight, grad = head.weight.full_tensor(), head.weight.grad.full_tensor()  # collectives: every rank
    if rank == 0:
        torch.save({"weight": weight, "grad": grad, "ranks": found}, out)
    # every rank leaves together: a rank that tears gloo down while another still holds its pairs can abort the
    # other ("terminate called without an active exception", seen once in the full suite)
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    """Jobs separated by `--` run one after another in these ranks (one launch, one start-up for several runs)."""
    if sys.argv[1] == "heads":
        heads(Path(sys.argv[2]))
        return
    mode, jobs = sys.argv[1], [[]]
    for arg in sys.argv[2:]:
        jobs.append([]) if arg == "--" else jobs[-1].append(arg)
    for job in jobs:
        run(mode, job)


if __name__ == "__main__":
    main()
