"""distill's train loop under FSDP2 (Accelerate's own preparation) on 2 ranks against one process on the same global
batch: sft on a tiny Qwen2 (packing, accumulation, clipping, the chunked CE; killed after a sharded checkpoint and
resumed), kd on a tiny Llama (the fused kd head), the gathered final save, LoRA refused up front.

The ranks run tests/sharded_worker.py (distill.train.loop.main plus the one switch that makes Accelerate prepare
FSDP2 on CPU). DISTILL_SHARDED_BACKEND=nccl (make gpu-check, 2+ GPUs) runs the same checks over NCCL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import make_curate, metrics, recipe, trace_rows, weights
from test_train_kd import kd_recipe, self_teacher_rows, tiny_smol  # noqa: F401 (a fixture)

from distill.config import dump_recipe
from distill.train import loop

WORKER = Path(__file__).with_name("sharded_worker.py")
BACKEND = os.environ.get("DISTILL_SHARDED_BACKEND", "gloo")  # gloo: CPU ranks; nccl: one GPU per rank
pytestmark = [pytest.mark.gpu] if BACKEND == "nccl" else []
# fp32 on both sides (also on CUDA: dtype is set); the sharded run sums gradients in another order (reduce-scatter of shards)
LOSS_REL, NORM_REL = (1e-6, 1e-4) if BACKEND == "gloo" else (1e-5, 1e-4)


def launch(tmp: Path, jobs: list[tuple], ranks: int = 2, mode: str = "fsdp2") -> subprocess.CompletedProcess:
    """The worker under torchrun (2 ranks) or alone (ranks=1: the refusal needs no process group); jobs are
    (recipe, curate dir, out dir, *extra args), run one after another in the same ranks."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent.parent)}
    if (
        BACKEND == "gloo"
    ):  # DeepSpeed's CPU accelerator falls back to gloo without oneCCL (DeepSpeed >= 0.14.1)
        env.update(ACCELERATE_USE_CPU="true", DS_ACCELERATOR="cpu")
    head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    cmd = [*(head if ranks > 1 else [sys.executable]), str(WORKER), mode]
    for i, (recipe_obj, data, out, *extra) in enumerate(jobs):
        (tmp / f"r{i}.yaml").write_text(dump_recipe(recipe_obj))
        cmd += ["--"] * (i > 0) + [str(tmp / f"r{i}.yaml"), "--data", str(data), "--out", str(out), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def sft_recipe(model: Path):
    """Clipping active (norms ~3 > 0.5), 16-token loss chunks, packed bins, accumulation 2 per rank, a cosine lr."""
    r = recipe(
        "qwen-1.5b", model=str(model), max_steps=3, grad_accum=2, lr=1e-3, max_length=96, dtype="float32"
    )
    r.train = r.train.model_copy(
        update={"save_every": 2, "max_grad_norm": 0.5, "loss_chunk_tokens": 16, "lr_scheduler": "cosine"}
    )
    return r


def kd_run_recipe(model: Path):
    """Unpacked: the 4 short samples would fill a single bin."""
    return kd_recipe(
        model, str(model), max_steps=2, grad_accum=1, micro_batch_size=1, max_grad_norm=0.5, packing=False
    )


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_qwen2, tiny_smol) -> dict:  # noqa: F811
    """Two launches of 2 ranks: (kd on the Llama; sft on the Qwen2, killed after its step-2 checkpoint), then the
    sft run relaunched to resume. Returns the folders and the killed launch."""
    tmp = tmp_path_factory.mktemp("sharded")
    runs = {
        "sft": (sft_recipe(tiny_qwen2), make_curate(tmp / "sft-curate", trace_rows(12, seed=4, steps=8))),
        "kd": (kd_run_recipe(tiny_smol), make_curate(tmp / "kd-curate", self_teacher_rows(tiny_smol))),
    }
    sft_out, kd_out = tmp / "sft" / "train", tmp / "kd" / "train"
    killed = launch(tmp, [(*runs["kd"], kd_out), (*runs["sft"], sft_out, "--crash-after-save")])
    assert "exitcode  : 3" in killed.stderr, killed.stderr[-3000:]
    state = {
        "final_after_kill": (sft_out / "final").exists() or (sft_out / "manifest.json").exists(),
        "shards": sorted(
            p.name for p in (sft_out / "checkpoints/step-2/pytorch_model_fsdp_0").glob("*.distcp")
        ),
    }
    resumed = launch(tmp, [(*runs["sft"], sft_out)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {"tmp": tmp, "runs": runs, "out": {"sft": sft_out, "kd": kd_out}, **state}


def rank_facts(out: Path, ranks: int = 2) -> list[dict]:
    return [json.loads((out.parent / f"rank-{r}.json").read_text()) for r in range(ranks)]


def assert_fsdp2_ran(facts: list[dict], single_bytes: int) -> None:
    """Accelerate's FSDP2 path, not DDP: every parameter a DTensor, lm_head's weight a shard outside the forward,
    and the two ranks together hold each parameter and each AdamW moment once."""
    for f in facts:
        assert (f["distributed_type"], f["is_fsdp2"]) == ("DistributedType.FSDP", True)
        assert f["dtensor_params"] == f["params"] and f["lm_head_weight"] == "DTensor"
    assert sum(f["param_bytes"] for f in facts) == single_bytes
    assert sum(f["optimizer_state_bytes"] for f in facts) == 2 * single_bytes  # exp_avg, exp_avg_sq


def assert_plan_prices_each_rank(facts: list[dict], model: str, student: str) -> None:
    """distill plan's weights and AdamW bytes per rank under FSDP2 x 2 (memory.model_states, the model as train
    holds it) are what each rank held in this run, to FSDP2's dim-0 shard padding (< 1 %)."""
    from distill.memory import Launch, as_trained, local_shape, model_states

    planned = model_states(as_trained(local_shape(model), student), Launch("fsdp2", 2, 1, False, "test"))
    for f in facts:
        assert f["param_bytes"] == pytest.approx(planned["parameters"], rel=0.01)
        assert f["optimizer_state_bytes"] == pytest.approx(planned["optimizer"], rel=0.01)


def assert_same_curve(sharded: list[dict], single: list[dict], terms: tuple[str, ...] = ()) -> None:
    assert [m["step"] for m in sharded] == [m["step"] for m in single]
    for a, b in zip(sharded, single, strict=True):
        assert (a["tokens"], a["trained_tokens"], a["lr"]) == (b["tokens"], b["trained_tokens"], b["lr"])
        assert a["loss"] == pytest.approx(b["loss"], rel=LOSS_REL)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=NORM_REL)
        for t in terms:
            assert a[t] == pytest.approx(b[t], rel=LOSS_REL, abs=1e-7)  # kd of a self-distilled pair: ~1e-9


def param_bytes(folder: Path) -> int:
    return sum(t.numel() * t.element_size() for t in weights(folder).values())


@pytest.fixture(scope="module", autouse=True)
def enough_gpus():
    if BACKEND == "nccl" and torch.cuda.device_count() < 2:
        pytest.skip(f"NCCL needs one GPU per rank: {torch.cuda.device_count()} visible, 2 needed")


def test_fsdp2_sft_qwen2_equals_one_process_resumes_and_saves_full_weights(sharded):
    """The sharded run, killed right after its step-2 checkpoint (one shard file per rank) and relaunched, has the
    single process's curve (steps 1-2 before the kill, 3 after) and final/ holds the same full weights in the
    release layout AutoModelForCausalLM loads."""
    from transformers import AutoModelForCausalLM

    tmp, (r, src), out = sharded["tmp"], sharded["runs"]["sft"], sharded["out"]["sft"]
    assert not sharded["final_after_kill"]
    assert sharded["shards"] == ["__0_0.distcp", "__1_0.distcp"]  # per-rank shards, never a gathered model
    assert json.loads((out / "manifest.json").read_text())["metrics"]["resumed_from_step"] == 2
    r.train.grad_accum = 4
    single = loop.train(r, src, tmp / "sft-single")
    assert single.metrics["world_size"] == 1
    assert_same_curve(metrics(out), metrics(tmp / "sft-single"))
    assert_fsdp2_ran(rank_facts(out), param_bytes(tmp / "sft-single" / "final"))
    assert_plan_prices_each_rank(rank_facts(out), r.train.model, r.student)
    # Adam divides by sqrt(v): summation-order noise in a near-zero gradient moves a weight by ~1e-6 in 3 steps
    ref, got = weights(tmp / "sft-single" / "final"), weights(out / "final")
    assert set(ref) == set(got) and all(torch.allclose(ref[k], got[k], atol=1e-5) for k in ref)
    ids = torch.tensor([[151644, 872, 198, 3838, 374, 220, 17, 10, 17, 30]])  # <|im_start|>user What is 2+2?
    logits = [
        AutoModelForCausalLM.from_pretrained(f).eval()(ids).logits
        for f in (out / "final", tmp / "sft-single" / "final")
    ]
    assert torch.allclose(logits[0], logits[1], atol=1e-5)


def test_fsdp2_kd_llama_fused_head_equals_one_process(sharded):
    """kd (α·CE + (1 − α)·KL against stored top-8 rows) on a tiny Llama: the fused head reads lm_head.weight
    directly after the forward, which under FSDP2 is the root unit's gathered weight; per-step loss, its CE and KL
    parts and the gradient norm match one process."""
    tmp, (r, src), out = sharded["tmp"], sharded["runs"]["kd"], sharded["out"]["kd"]
    r.train.grad_accum = 2
    loop.train(r, src, tmp / "kd-single")
    assert_same_curve(metrics(out), metrics(tmp / "kd-single"), terms=("ce", "kd"))
    assert_fsdp2_ran(rank_facts(out), param_bytes(tmp / "kd-single" / "final"))
    assert_plan_prices_each_rank(rank_facts(out), r.train.model, r.student)


def test_loss_heads_with_a_dtensor_lm_head_weight_equal_plain_ones(tmp_path):
    """An lm_head whose weight is a DTensor shard (as FSDP2 leaves it outside its unit's forward) through the
    chunked CE and the fused kd loss on 2 ranks, each with its own batch: the same losses and hidden-state gradients
    as a plain weight, and the weight's gradient is the mean of the ranks' plain gradients (what FSDP2 gives the
    rest of the model)."""
    from sharded_worker import head_inputs

    from distill.train.kd import KDSpec, chunked_kd_loss
    from distill.train.loss import chunked_cross_entropy

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(WORKER.parent.parent)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
    ]
    done = subprocess.run(
        [*cmd, "heads", str(tmp_path / "heads.pt")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(tmp_path / "heads.pt", weights_only=False)
    grads = []
    for rank, (ce_got, kd_got, hidden_grad) in enumerate(got["ranks"]):
        head = torch.nn.Linear(16, 40, bias=False)
        head.weight = torch.nn.Parameter(got["weight"].clone())
        hidden, positions, labels, top_ids, top_lp = head_inputs(rank)
        ce = chunked_cross_entropy(hidden, head, positions, labels, 5)
        kd, _, _ = chunked_kd_loss(hidden, head, positions, labels, top_ids, top_lp, KDSpec(alpha=0.3), 5)
        (ce + kd).backward()
        assert (ce_got, kd_got) == pytest.approx((ce.item(), kd.item()), rel=1e-6)
        assert torch.allclose(hidden_grad, hidden.grad, atol=1e-6)
        grads.append(head.weight.grad)
    assert torch.allclose(got["grad"], torch.stack(grads).mean(0), atol=1e-6)


def test_lora_under_fsdp2_is_refused_before_weights_load(tiny_llama, tmp_path):
    """A LoRA adapter cannot be merged from FSDP2 shards: one line, exit 2, nothing trained or written."""
    src = make_curate(tmp_path / "curate", trace_rows(4))
    r = recipe("llama-8b", model=str(tiny_llama), lora={"r": 4})
    done = launch(tmp_path, [(r, src, tmp_path / "lora" / "train")], ranks=1)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: train.lora cannot be merged from ZeRO-3/FSDP shards; train LoRA with single_gpu.yaml or "
        "ddp.yaml (a LoRA student fits one GPU)"
    ]
    assert not (tmp_path / "lora" / "rank-0.json").exists()  # refused before prepare
    assert not (tmp_path / "lora" / "train" / "final").exists()


def test_zero3_with_a_release_that_unties_lm_head_is_refused_before_weights_load(tiny_qwen2, tmp_path):
    """Qwen-1.5B's release unties lm_head from the embeddings, an edit ZeRO-3's partitioned loading cannot take
    (it left an empty lm_head): one line naming the student and what to use instead, exit 2."""
    src = make_curate(tmp_path / "curate", trace_rows(4))
    r = recipe("qwen-1.5b", model=str(tiny_qwen2))
    done = launch(tmp_path, [(r, src, tmp_path / "z3" / "train")], ranks=1, mode="zero3")
    assert done.returncode == 2, done.stderr[-3000:]
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        "error: student qwen-1.5b: its release unties lm_head from the embeddings, which cannot be done to weights "
        "ZeRO-3 partitions while they load; train it with pipelines/accelerate/fsdp2.yaml or ddp.yaml"
    ]
    assert not (tmp_path / "z3" / "rank-0.json").exists()  # refused before prepare


def test_zero3_sft_llama_equals_one_process(tiny_llama, tmp_path):
    """DeepSpeed ZeRO-3 on DeepSpeed's CPU accelerator over gloo: every parameter partitioned (lm_head.weight has
    numel 0 outside the forward, so the chunked CE calls lm_head as a module and all ranks make the same number of
    calls), the same curve as one process, and final/ gathered from the partitions."""
    src = make_curate(tmp_path / "curate", trace_rows(12, seed=4, steps=8))
    r = recipe(
        "llama-8b", model=str(tiny_llama), max_steps=3, grad_accum=2, lr=1e-3, max_length=96, dtype="float32"
    )
    r.train = r.train.model_copy(update={"max_grad_norm": 0.5, "loss_chunk_tokens": 16})
    out = tmp_path / "zero3" / "train"
    done = launch(tmp_path, [(r, src, out)], mode="zero3")
    assert done.returncode == 0, done.stderr[-3000:]
    r.train.grad_accum = 4
    loop.train(r, src, tmp_path / "single")
    assert_same_curve(metrics(out), metrics(tmp_path / "single"))
    facts = rank_facts(out)
    for f in facts:
        assert f["distributed_type"] == "DistributedType.DEEPSPEED"
        assert f["partitioned"] == f["params"] and f["lm_head_numel"] == 0
        assert f["empty_outside_forward"] == 2  # embed_tokens and lm_head; the small rest persists whole
    assert sum(f["param_bytes"] for f in facts) == param_bytes(tmp_path / "single" / "final")
    ref, got = weights(tmp_path / "single" / "final"), weights(out / "final")
    assert set(ref) == set(got) and all(torch.allclose(ref[k], got[k], atol=1e-5) for k in ref)


@pytest.mark.parametrize("mode", ["fsdp2", pytest.param("zero3", marks=pytest.mark.slow)])
def test_each_ranks_measured_peak_is_the_memory_plan_within_15_percent(mode, smollm2_path, tmp_path):
    """distill plan's peak per rank (distill.memory.train_parts) against what each of 2 gloo ranks' allocator
    held while SmolLM2-135M trained (fp32, 512-token bins, checkpointing): malloc in use (glibc mallinfo2, which
    PyTorch's CPU allocator draws from) sampled every 2 ms over the step loop. ZeRO-3 loads partitioned, so it
    starts from the model in its release layout (the 6 added rows cannot be added to partitions)."""
    from sharded_worker import measured_peak

    from distill.memory import Launch, TrainShape, as_trained, local_shape, train_parts, train_total

    sys.path.insert(0, str(WORKER.parent.parent / "bench"))
    from on_policy import release_copy

    model = (
        release_copy(str(smollm2_path), tmp_path / "release", "smollm2-135m")
        if mode == "zero3"
        else smollm2_path
    )
    r = recipe("smollm2-135m", model=str(model), max_steps=2, max_length=512, lr=1e-4, dtype="float32")
    out = tmp_path / mode / "train"
    done = launch(tmp_path, [(r, make_curate(tmp_path / "curate", trace_rows(64, steps=60)), out)], mode=mode)
    assert done.returncode == 0, done.stderr[-3000:]
    t = TrainShape(512, 1, True, r.train.loss_chunk_tokens)
    planned = train_total(train_parts(as_trained(local_shape(str(model)), "smollm2-135m"), t, Launch(mode, 2, 1, False, "t")))  # fmt: skip
    for f in rank_facts(out):
        assert planned / measured_peak(f) == pytest.approx(1.0, abs=0.15), (planned, measured_peak(f))
