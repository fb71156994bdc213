"""SFT benchmarks, each against a baseline measured in the same run:

    flock /tmp/distill-heavy.lock .venv/bin/python bench/train.py               # all sections
    .venv/bin/python bench/train.py --only packing,memory                        # seconds, no model

(a) packing  token utilisation (real tokens / token slots) of best-fit-decreasing packing into 32k bins vs
             padded micro-batches of 8, on an R1-like long-tailed length distribution (goal >= 0.99 vs ~0.5);
             and the packer's speed on 200k samples.
(b) memory   peak memory of the loss at 32k tokens x 152k vocab x 3584 hidden (Qwen2.5-7B), bf16:
             distill's chunked cross-entropy vs full logits + F.cross_entropy (goal <= 1/8). Measured
             by tracking every tensor allocation and free on fake tensors (no 57 GB needed); the tracker
             is checked against real tensors at a small size first.
(c) trl      optimizer-step time of distill.train vs TRL's SFTTrainer (packing "bfd", padding-free,
             completion-only loss) on the same tiny random Qwen2 (real 152k vocab) and the same token
             ids, in this process (goal <= 1.0x). Needs `pip install trl` (the bench extra).
(d) gpu      only with CUDA: tokens/s and MFU of a Qwen2.5-1.5B-shaped student (random weights) at 16k
             packed tokens per step, bf16 autocast, flash-attention varlen when installed (goal >= 50%).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
import weakref
from pathlib import Path

import numpy as np

QWEN_1_5B = dict(
    vocab_size=151936,
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=10000.0,
    tie_word_embeddings=True,
)


def r1_lengths(n: int, cap: int, seed: int = 0) -> np.ndarray:
    """Token lengths shaped like R1 traces: median ~4k, a long tail to the 32k cap (lognormal, sigma 0.9)."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(4000), 0.9, n), 256, cap).astype(np.int64)


def bench_packing(n: int, cap: int, micro: int) -> None:
    from distill.train.data import epoch_micro_batches, pack_bfd, token_utilisation, training_units

    lengths = r1_lengths(n, cap)
    bins = pack_bfd(lengths, cap)
    packed = token_utilisation(lengths, bins, cap, packing=True)
    padded_batches = epoch_micro_batches(training_units(lengths, cap, packing=False), micro, seed=0, epoch=0)
    padded = token_utilisation(lengths, padded_batches, cap, packing=False)
    big = r1_lengths(200_000, cap, seed=1)
    t1 = time.perf_counter()
    pack_bfd(big, cap)
    pack_s = time.perf_counter() - t1
    print(f"(a) packing: {n} R1-like samples (median {int(np.median(lengths))}, max {lengths.max()} tokens)")
    print(f"    padded batches of {micro}: token utilisation {padded:.3f}")
    print(
        f"    BFD packed into {len(bins)} bins of {cap}: token utilisation {packed:.4f} "
        f"({packed / padded:.2f}x padded; goal >= 0.99)"
    )
    print(f"    BFD speed: 200k samples packed in {pack_s:.1f} s")


class PeakMemory:
    """Bytes of tensor storage alive, tracked through every op (TorchDispatchMode) and freed by weakref;
    works on fake tensors, so a 57 GB computation can be measured without the memory."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker.track(out)
                return out

        self.mode, self.live, self.peak, self.alive = Mode(), 0, 0, {}

    def track(self, out) -> None:
        import torch
        from torch.utils._pytree import tree_flatten

        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            if id(storage) in self.alive:
                continue
            nbytes = storage.nbytes()
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            self.alive[id(storage)] = weakref.finalize(storage, self.free, id(storage), nbytes)

    def free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self.alive.pop(key, None)


def loss_peak(tokens: int, vocab: int, hidden: int, chunk: int | None, fake: bool, dtype_name: str) -> int:
    """Peak bytes allocated by the loss forward + backward (inputs and the lm_head weight excluded)."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from torch._subclasses.fake_tensor import FakeTensorMode

    from distill.train.loss import chunked_cross_entropy

    dtype = getattr(torch, dtype_name)
    with FakeTensorMode() if fake else contextlib.nullcontext():
        h = torch.randn(tokens, hidden, dtype=dtype, requires_grad=True)
        head = torch.nn.Linear(hidden, vocab, bias=False, dtype=dtype)
        labels = torch.randint(0, vocab, (tokens,))
        tracker = PeakMemory()
        with tracker.mode:
            if chunk is None:  # what a model's forward(labels=...) does: full logits, upcast, CE
                loss = F.cross_entropy(head(h).float(), labels, reduction="sum")
            else:
                loss = chunked_cross_entropy(h, head, torch.arange(tokens), labels, chunk)
            loss.backward()
        return tracker.peak


def bench_memory(tokens: int, vocab: int, hidden: int, chunk: int) -> None:
    small = [loss_peak(512, 8000, 64, c, fake, "float32") for fake in (False, True) for c in (None, 64)]
    assert small[:2] == small[2:], f"tracker disagrees with real tensors: {small}"
    naive = loss_peak(tokens, vocab, hidden, None, True, "bfloat16")
    chunked = loss_peak(tokens, vocab, hidden, chunk, True, "bfloat16")
    gib = 2**30
    print(
        f"(b) loss memory at {tokens} tokens x {vocab} vocab x {hidden} hidden, bf16 (tracker == real tensors "
        f"at 512 x 8000: {small[0] / 2**20:.1f} / {small[1] / 2**20:.1f} MiB)"
    )
    print(f"    full logits + cross_entropy: peak {naive / gib:.2f} GiB")
    print(
        f"    chunked ({chunk} tokens/chunk): peak {chunked / gib:.2f} GiB  -> {chunked / naive:.3f}x naive "
        f"(goal <= 0.125)"
    )


def trace_rows(n: int, seed: int = 0) -> list[dict]:
    """Kept rows with R1-like (long-tailed) reasoning lengths, scaled down to fit a 512-token bin."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        steps = max(1, min(40, int(rng.lognormvariate(2.0, 0.8))))
        work = " ".join(f"Step {k}: {a} plus {b} is {a + b}." for k in range(steps))
        rows.append(
            {
                "prompt_id": f"p{i}",
                "messages": [{"role": "user", "content": f"What is {a} + {b}?"}],
                "reasoning": work,
                "answer": f"\\boxed{{{a + b}}}",
            }
        )
    return rows


def tiny_qwen2(folder: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from distill.vocab import base_tokenizer

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    base_tokenizer("qwen2").save_pretrained(folder)
    return folder


def bench_vs_trl(steps: int, max_length: int, accum: int) -> None:
    """Same model file, same kept rows, same token ids (TRL gets distill's tokens pre-tokenized)."""
    import json

    from distill.artifacts import finish_manifest, start_manifest, write_parquet
    from distill.config import recipe_from_dict
    from distill.train.data import load_tokens
    from distill.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tiny_qwen2(tmp / "model")
        write_parquet(trace_rows(400), tmp / "curate" / "kept" / "part-00000.parquet")
        finish_manifest(tmp / "curate", start_manifest("curate", "bench"))
        train_cfg = {
            "model": str(model_dir),
            "max_length": max_length,
            "max_steps": steps,
            "grad_accum": accum,
            "micro_batch_size": 1,
            "lr": 1e-4,
            "gradient_checkpointing": True,
            "save_every": 10**6,
        }
        recipe = recipe_from_dict({"name": "bench", "student": "qwen-1.5b", "train": train_cfg})
        train(recipe, tmp / "curate", tmp / "train", force=True)
        ours = [
            json.loads(line)["step_s"] for line in (tmp / "train" / "metrics.jsonl").read_text().splitlines()
        ]
        data = load_tokens(tmp / "train" / "tokens")
        theirs = trl_step_times(model_dir, data, steps, max_length, accum, tmp / "trl")
    a, b = statistics.median(ours[2:]), statistics.median(theirs[2:])
    print(
        f"(c) step time, tiny Qwen2 (4 x 256, 152k vocab), {max_length}-token packed bins x accum {accum}, "
        f"median of steps 3..{steps}"
    )
    print(f"    TRL SFTTrainer (bfd packing, padding-free, completion-only): {b:.3f} s/step")
    print(
        f"    distill.train:                                                {a:.3f} s/step  -> {a / b:.2f}x TRL "
        f"(goal <= 1.0)"
    )


def trl_step_times(model_dir: Path, data, steps: int, max_length: int, accum: int, out: Path) -> list[float]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from distill.patch import release_tokenizer
    from distill.vocab import base_tokenizer

    rows = []
    for i in range(len(data)):
        ids, n_prompt = data.sample(i)
        rows.append(
            {"input_ids": ids.tolist(), "completion_mask": [0] * n_prompt + [1] * (len(ids) - n_prompt)}
        )
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.t0)

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    args = SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=accum,
        learning_rate=1e-4,
        max_length=max_length,
        packing=True,
        packing_strategy="bfd",
        completion_only_loss=True,
        gradient_checkpointing=True,
        use_cpu=True,
        bf16=False,
        report_to=[],
        save_strategy="no",
        logging_steps=10**6,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    tokenizer = release_tokenizer(base_tokenizer("qwen2"), "qwen-1.5b")
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    trainer.train()
    return times


def bench_gpu(steps: int, tokens: int, checkpointing: bool) -> None:
    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM, Qwen2Config

    from distill.config import TrainConfig
    from distill.train.data import collate_packed, pack_bfd
    from distill.train.loop import attention_impl, model_flops, param_count, peak_flops, train_step

    if not torch.cuda.is_available():
        print("(d) gpu: skipped (no CUDA)")
        return
    attn, peak = attention_impl("auto"), peak_flops()  # peak None: a GPU missing from PEAK_BF16_FLOPS
    accelerator = Accelerator(mixed_precision="bf16")
    model = AutoModelForCausalLM.from_config(
        Qwen2Config(**QWEN_1_5B), dtype=torch.float32, attn_implementation=attn
    )
    model.config.use_cache = False
    if checkpointing:  # 16k tokens of a 1.5B model fit an 80+ GB GPU without it (and MFU ignores recompute)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params = param_count(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    lengths = r1_lengths(4000, tokens, seed=2)
    bins = sorted(pack_bfd(lengths, tokens), key=lambda b: -sum(lengths[i] for i in b))[:steps]
    rng = np.random.default_rng(0)
    cfg = TrainConfig(max_grad_norm=1.0)
    rates, mfus = [], []
    for k, b in enumerate(bins):
        samples = [(rng.integers(0, 150000, int(lengths[i])), 64) for i in b]
        batch = {
            k2: v.to(accelerator.device) if hasattr(v, "to") else v
            for k2, v in collate_packed(samples).items()
        }
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        stats = train_step(
            accelerator, model, model.lm_head, optimizer, scheduler, [batch], cfg, attn == "flash_attention_2"
        )
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if k >= 2:  # warm-up: allocator, kernels
            rates.append(stats["tokens"] / dt)
            mfus.append(
                model_flops(n_params, 28, 1536, stats["tokens"], stats["sq_lens"]) / dt / (peak or math.inf)
            )
    print(
        f"(d) gpu: Qwen2.5-1.5B-shaped, {torch.cuda.get_device_name()}, attn {attn}, {tokens}-token packed "
        f"bins, bf16, gradient checkpointing {'on' if checkpointing else 'off'}"
    )
    print(
        f"    {statistics.median(rates):,.0f} tokens/s, "
        f"MFU {f'{statistics.median(mfus):.1%}' if peak else 'n/a (unknown GPU peak)'} (goal >= 50%), "
        f"peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="packing,memory,trl,gpu", help="comma-separated sections")
    parser.add_argument("--samples", type=int, default=20000, help="(a) R1-like samples to pack")
    parser.add_argument("--chunk", type=int, default=None, help="(b) chunk tokens (default: TrainConfig's)")
    parser.add_argument("--steps", type=int, default=10, help="(c, d) optimizer steps per trainer")
    parser.add_argument("--gpu-tokens", type=int, default=16384, help="(d) tokens per packed step")
    parser.add_argument("--gpu-checkpointing", action="store_true", help="(d) recompute activations")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if "packing" in only:
        bench_packing(args.samples, 32768, micro=8)
    if "memory" in only:
        from distill.config import TrainConfig

        bench_memory(32768, 152064, 3584, args.chunk or TrainConfig().loss_chunk_tokens)
    if "trl" in only:
        bench_vs_trl(args.steps, max_length=512, accum=2)
    if "gpu" in only:
        bench_gpu(args.steps, args.gpu_tokens, args.gpu_checkpointing)


if __name__ == "__main__":
    main()
