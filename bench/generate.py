"""Throughput of `distill generate` against raw `LLM.generate` on one engine, same prompts, same seeds.

    flock /tmp/distill-heavy.lock .venv/bin/python bench/generate.py            # ~7 min on 2 CPU cores (3 rounds)

The pipeline pass is the whole stage (load prompts, render, generate, parse, Parquet shard, marker, manifest);
the raw pass is one `LLM.generate(prompt_texts, sampling_params)` call. Passes alternate (raw, pipeline, pipeline,
raw, ...) so drift in a shared machine's speed hits both; tokens/s = generated tokens / wall seconds. Goal: ratio
pipeline/raw >= 0.97. With the same seeds both passes must produce the same samples, which is checked too.
The stage also pays a fixed ~1 s per run (model folder integrity check, tokenizer load), printed apart: the
default workload (12 prompts x 4 x 256 tokens, ~1 min a pass) is sized so that it weighs as little as it does
in a real run, where a pass takes hours.

--logprobs K adds a third pass, the stage with generate.logprobs: K (the teacher's top-K log-probs per token,
for logit distillation), in the same alternation: its tok/s over the plain stage's is the capture overhead
(goal >= 0.90), and its shard bytes beyond the plain shard's, per generated token, the on-disk cost (zstd).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def raw_pass(llm, texts: list[str], seeds: list[int], n: int, max_tokens: int) -> tuple[int, float, list]:
    from vllm import SamplingParams

    params = [SamplingParams(n=n, temperature=0.6, top_p=0.95, max_tokens=max_tokens, seed=s) for s in seeds]
    start = time.perf_counter()
    outs = llm.generate(texts, params, use_tqdm=False)
    seconds = time.perf_counter() - start
    return (
        sum(len(c.token_ids) for o in outs for c in o.outputs),
        seconds,
        [[c.text for c in o.outputs] for o in outs],
    )


def pipeline_pass(recipe, backend, out: Path) -> tuple[int, float, float, list, int]:
    """Tokens, wall seconds, fixed seconds (before the first request and after the last shard), samples,
    shard bytes."""
    from distill.artifacts import read_shards
    from distill.generate.run import generate

    start = time.perf_counter()
    manifest = generate(recipe, None, out, force=True, backend=backend)
    seconds = time.perf_counter() - start
    rows = list(read_shards(out))
    by_prompt: dict[str, list[str]] = {}
    for r in sorted(rows, key=lambda r: r["sample_index"]):
        by_prompt.setdefault(r["prompt_id"], []).append(r["completion"])
    fixed = seconds - manifest.metrics["run_generate_seconds"]
    size = sum((out / o["file"]).stat().st_size for o in manifest.outputs)
    return sum(r["completion_tokens"] for r in rows), seconds, fixed, list(by_prompt.values()), size


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m", help="teacher: registry name, path or hub id")
    parser.add_argument("--prompts", type=int, default=12, help="gsm8k test prompts (one shard, one batch)")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=256, help="new tokens per sample")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of (raw, pipeline) passes")
    parser.add_argument(
        "--logprobs", type=int, default=0, help="K: also time the stage storing top-K log-probs"
    )
    args = parser.parse_args()

    from distill.config import recipe_from_dict
    from distill.engines.backends import VLLMBackend
    from distill.engines.prompts import build_messages, load_teacher_tokenizer, make_request
    from distill.generate.run import load_prompt_set, prompt_seed

    teacher = {
        "model": args.model,
        "thinking": False,
        "dtype": "float32",
        "enforce_eager": True,
        "max_model_len": 2048,
    }
    recipe = recipe_from_dict(
        {
            "name": "bench-generate",
            "teacher": teacher,
            "generate": {
                "prompts": [{"source": "gsm8k", "split": "test", "limit": args.prompts}],
                "n": args.n,
                "max_tokens": args.max_tokens,
                "force_think": False,
                "shard_size": args.prompts,
            },
        }
    )
    with_lp = recipe.model_copy(deep=True)
    with_lp.generate.logprobs = args.logprobs
    cfg = recipe.generate
    prompts = load_prompt_set(cfg)[0]
    tok = load_teacher_tokenizer(recipe.teacher)
    texts = [
        make_request(tok, build_messages(p["problem"], p["domain"], cfg), False, None).prompt_text
        for p in prompts
    ]
    seeds = [prompt_seed(cfg.seed, p["prompt_id"]) for p in prompts]

    start = time.perf_counter()
    backend = VLLMBackend.start(recipe.teacher)
    print(f"engine start: {time.perf_counter() - start:.1f} s")
    raw_pass(backend.llm, texts[:2], seeds[:2], 2, 8)  # warm-up: first steps of a fresh engine are slower
    kinds = ["raw", "pipeline"] + (["logprobs"] if args.logprobs else [])
    totals = {k: [0, 0.0] for k in kinds}
    fixed = 0.0
    samples, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]  # rotate: drift hits every kind
            for kind in order:
                if kind == "raw":
                    tokens, seconds, samples[kind] = raw_pass(
                        backend.llm, texts, seeds, args.n, args.max_tokens
                    )
                else:
                    which = recipe if kind == "pipeline" else with_lp
                    tokens, seconds, pass_fixed, samples[kind], sizes[kind] = pipeline_pass(
                        which, backend, Path(tmp) / kind
                    )
                    fixed += pass_fixed if kind == "pipeline" else 0.0
                totals[kind][0] += tokens
                totals[kind][1] += seconds
                print(
                    f"round {r + 1} {kind:>8}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s"
                )
    backend.close()
    raw, pipe = (totals[k][0] / totals[k][1] for k in ("raw", "pipeline"))
    print(
        f"\n{args.prompts} prompts x n={args.n}, max {args.max_tokens} new tokens, {args.model}, "
        f"{args.rounds} rounds"
    )
    print(f"raw LLM.generate:  {raw:.1f} tok/s")
    print(f"distill generate:  {pipe:.1f} tok/s")
    print(f"ratio pipeline/raw: {pipe / raw:.3f}  (goal >= 0.97)")
    per_run = fixed / args.rounds
    steady = totals["pipeline"][0] / (totals["pipeline"][1] - fixed)
    print(
        f"  of which fixed per run: {per_run:.2f} s (model check, tokenizer, manifest); without it {steady / raw:.3f}"
    )
    print(f"same samples (same seeds): {samples['raw'] == samples['pipeline']}")
    if args.logprobs:
        lp = totals["logprobs"][0] / totals["logprobs"][1]
        extra = (sizes["logprobs"] - sizes["pipeline"]) / totals["logprobs"][0] * args.rounds
        print(f"distill generate, logprobs={args.logprobs}: {lp:.1f} tok/s")
        print(f"capture ratio logprobs/plain: {lp / pipe:.3f}  (goal >= 0.90)")
        print(f"stored log-probs on disk: {extra:.1f} bytes/token (zstd; 126 raw at K=20)")
        print(f"same samples with log-probs: {samples['logprobs'] == samples['pipeline']}")


if __name__ == "__main__":  # vLLM starts its engine with spawn
    main()
