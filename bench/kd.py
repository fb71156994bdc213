"""Top-K logit KD loss: peak memory and time of distill's chunked loss vs the naive full-vocab KL, same run.

    .venv/bin/python bench/kd.py                       # memory at 32k x 152k (fake tensors) + time at 1k x 152k
    .venv/bin/python bench/kd.py --time-tokens 2048    # a bigger real-tensor timing (needs ~12 GB free)

Naive: what a KD trainer without chunking does (TRL GKD, most KD scripts): full student logits [T, V], upcast,
log_softmax, the teacher's top-K scattered into a dense [T, V] distribution, F.kl_div + F.cross_entropy.
distill: `chunked_kd_loss` (only trained rows, `chunk` rows at a time, activation-checkpointed, K+1 outcomes).
Memory is tracked per tensor allocation (bench/train.py's PeakMemory, checked there against real tensors) on fake
tensors, so the 32k x 152k case needs no 60 GB. Goals (issue 11): <= 1/8 memory, <= 1x time.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train import PeakMemory  # noqa: E402  (the tracker bench/train.py validates against real tensors)


def naive_kd(h, head, labels, top_ids, top_lp, alpha: float):
    import torch
    import torch.nn.functional as F

    logp = torch.log_softmax(head(h).float(), dim=-1)
    dense = torch.zeros_like(logp).scatter_(-1, top_ids, top_lp.float().exp())
    kd = F.kl_div(logp, dense, reduction="sum")
    ce = F.nll_loss(logp, labels, reduction="sum")
    return alpha * ce + (1 - alpha) * kd


def make_inputs(tokens: int, vocab: int, hidden: int, k: int, dtype):
    import torch

    h = torch.randn(tokens, hidden, dtype=dtype, requires_grad=True)
    head = torch.nn.Linear(hidden, vocab, bias=False, dtype=dtype)
    labels = torch.randint(0, vocab, (tokens,))
    top_ids = torch.randint(0, vocab, (tokens, k))
    top_lp = torch.log_softmax(torch.randn(tokens, k), -1) - 0.05
    return h, head, labels, top_ids, top_lp


def run_loss(which: str, inputs, chunk: int):
    import torch

    from distill.train.kd import KDSpec, chunked_kd_loss

    h, head, labels, top_ids, top_lp = inputs
    if which == "naive":
        return naive_kd(h, head, labels, top_ids, top_lp, 0.5)
    pos = torch.arange(len(labels))
    return chunked_kd_loss(h, head, pos, labels, top_ids, top_lp, KDSpec(alpha=0.5), chunk)[0]


def peak(
    which: str, tokens: int, vocab: int, hidden: int, k: int, chunk: int, fake: bool, dtype_name: str
) -> int:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() if fake else contextlib.nullcontext():
        inputs = make_inputs(tokens, vocab, hidden, k, getattr(torch, dtype_name))
        tracker = PeakMemory()
        with tracker.mode:
            run_loss(which, inputs, chunk).backward()
        return tracker.peak


def seconds(which: str, tokens: int, vocab: int, hidden: int, k: int, chunk: int, rounds: int) -> float:
    import torch

    inputs = make_inputs(tokens, vocab, hidden, k, torch.float32)
    times = []
    for _ in range(rounds):
        inputs[0].grad = None
        start = time.perf_counter()
        run_loss(which, inputs, chunk).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=32768)
    parser.add_argument("--vocab", type=int, default=152064)
    parser.add_argument("--hidden", type=int, default=3584)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument(
        "--chunk", type=int, default=None, help="rows per chunk (default: train.loss_chunk_tokens)"
    )
    parser.add_argument("--time-tokens", type=int, default=1024)
    parser.add_argument("--time-hidden", type=int, default=896)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from distill.config import TrainConfig

    chunk = args.chunk or TrainConfig().loss_chunk_tokens
    small = [
        peak(w, 512, 8000, 64, 8, 64, fake, "float32") for fake in (False, True) for w in ("naive", "chunked")
    ]
    assert small[:2] == small[2:], f"tracker disagrees with real tensors: {small}"
    shape = (args.tokens, args.vocab, args.hidden, args.k, chunk)
    naive = peak("naive", *shape, True, "bfloat16")
    ours = peak("chunked", *shape, True, "bfloat16")
    gib = 2**30
    print(
        f"kd loss memory, {args.tokens} tokens x {args.vocab} vocab x {args.hidden} hidden, K={args.k}, bf16"
    )
    print(f"  naive full-vocab KL + CE: peak {naive / gib:.2f} GiB")
    print(
        f"  distill chunked ({chunk}/chunk): peak {ours / gib:.2f} GiB -> {ours / naive:.3f}x naive (goal <= 0.125)"
    )
    tshape = (args.time_tokens, args.vocab, args.time_hidden, args.k, chunk)
    t_naive = seconds("naive", *tshape, args.rounds)
    t_ours = seconds("chunked", *tshape, args.rounds)
    print(
        f"kd loss time (forward + backward, fp32, {args.time_tokens} x {args.vocab} x {args.time_hidden}, median)"
    )
    print(
        f"  naive {t_naive:.3f} s, distill {t_ours:.3f} s -> {t_ours / t_naive:.2f}x naive time (goal <= 1.0)"
    )


if __name__ == "__main__":
    main()
