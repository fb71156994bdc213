"""Throughput of `distill eval` against a raw vLLM + math-verify loop over the same prompts, seeds and engine:

    flock /tmp/distill-heavy.lock .venv/bin/python bench/eval.py            # ~3 min on 2 CPU cores

Workload: the embedded SmolLM2-135M, arith:test and math500 (--limit problems each), k samples per problem,
temperature 0.6 / top-p 0.95, --max-tokens new tokens, the eval stage's R1 prompts (no system prompt, the
boxed directive, "<think>\\n" prefilled) and seeds (eval.seed + 1000 x problem index), one batch per benchmark.
  naive    vllm.LLM(...) with the engine settings the stage uses on CPU (fp32, eager, 2048 context, whole
           prefills, the same VLLM_CPU_* environment), prompts rendered with the tokenizer's chat template,
           LLM.generate(texts, [SamplingParams(n=k, seed=...)]) per benchmark, then every sample graded
           serially in this process with math_verify.verify(parse(gold), parse(completion));
  distill  distill.eval.run.evaluate: the same engine started by the stage's make_backend, then the stage
           (prompts, generation, trace parsing, verification in its worker pool, scores, Parquet, report,
           manifest).
Naive runs first, then distill, one engine each (started and shut down inside the pass; the model files are
read once before, so both load from the page cache). samples/s = graded samples / wall seconds, with and
without the engine start (printed apart). Goal: distill/naive >= 0.95 without the start. Both passes must
produce the same completions (same seeds, same batches), and pass@1 is compared: it differs only where the
two graders read an answer differently (distill grades the last \\boxed{}; math_verify's defaults also take
a bare last expression), which is counted.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

BENCHMARKS = ("arith:test", "math500")
MAX_MODEL_LEN = 2048


def engine_env() -> None:
    """The stage's own vllm-cpu settings (distill.engines.backends.cpu_engine_env), with a 1 GiB KV cache
    instead of its 2 GiB, set once before either engine starts so both see the same."""
    from distill.engines.backends import cpu_engine_env
    from distill.models import distill_home

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cpu_engine_env(distill_home() / "cache")


def naive_pass(model: Path, limit: int, k: int, max_tokens: int, seed: int) -> dict:
    """Raw vLLM + in-process math_verify, written the way one would without distill."""
    from math_verify import parse, verify
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams

    from distill.config import R1_MATH_DIRECTIVE
    from distill.data import load_prompts, split_spec
    from distill.models import engine_tokenizer

    start = time.perf_counter()
    tokenizer = engine_tokenizer(str(model)) or str(model)
    llm = LLM(
        model=str(model),
        tokenizer=tokenizer,
        dtype="float32",
        enforce_eager=True,
        max_model_len=MAX_MODEL_LEN,
        enable_chunked_prefill=False,  # vllm-cpu 0.32 cannot rewind a seeded request's generator
    )
    started = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    completions, correct = {}, {}
    for name in BENCHMARKS:
        base, split = split_spec(name)
        problems = load_prompts(base, split or "test", limit)
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": f"{p['problem']}\n\n{R1_MATH_DIRECTIVE}"}],
                tokenize=False,
                add_generation_prompt=True,
            )
            + "<think>\n"
            for p in problems
        ]
        params = [
            SamplingParams(n=k, temperature=0.6, top_p=0.95, max_tokens=max_tokens, seed=seed + 1000 * i)
            for i in range(len(problems))
        ]
        outs = llm.generate(texts, params, use_tqdm=False)
        completions[name] = [[c.text for c in o.outputs] for o in outs]
        correct[name] = [
            [bool(verify(parse(f"${p['reference']}$"), parse(c.text))) for c in o.outputs]
            for p, o in zip(problems, outs, strict=True)
        ]
    seconds = time.perf_counter() - start
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return {"seconds": seconds, "start": started - start, "completions": completions, "correct": correct}


def distill_pass(model: Path, limit: int, k: int, max_tokens: int, seed: int, out: Path) -> dict:
    from distill.artifacts import read_parquet
    from distill.config import recipe_from_dict
    from distill.engines.backends import make_backend
    from distill.eval.run import engine_config, evaluate

    engine = {"dtype": "float32", "enforce_eager": True, "max_model_len": MAX_MODEL_LEN}
    recipe = recipe_from_dict(
        {
            "name": "bench-eval",
            "eval": {
                "benchmarks": {b: {"k": k, "limit": limit} for b in BENCHMARKS},
                "max_tokens": max_tokens,
                "seed": seed,
                "engine": engine,
            },
        }
    )
    start = time.perf_counter()
    # the stage's own start-up (evaluate() calls make_backend itself when given none), timed apart
    backend = make_backend(engine_config(recipe.eval, model))
    started = time.perf_counter()
    try:
        evaluate(recipe, model, out, force=True, backend=backend)
    finally:
        seconds = time.perf_counter() - start
        backend.close()
    rows = sorted(read_parquet(out / "samples.parquet"), key=lambda r: (r["prompt_id"], r["sample_index"]))
    completions: dict[str, dict[str, list[str]]] = {}
    correct: dict[str, dict[str, list[bool]]] = {}
    for r in rows:
        completions.setdefault(r["benchmark"], {}).setdefault(r["prompt_id"], []).append(r["completion"])
        correct.setdefault(r["benchmark"], {}).setdefault(r["prompt_id"], []).append(
            r["verdict"] == "correct"
        )
    return {"seconds": seconds, "start": started - start, "completions": completions, "correct": correct}


def in_order(by_prompt: dict[str, list], limit: int, name: str) -> list:
    """The stage's rows keyed by prompt_id, back in problem order (load_prompts' order)."""
    from distill.data import load_prompts, split_spec

    base, split = split_spec(name)
    return [by_prompt[p["prompt_id"]] for p in load_prompts(base, split or "test", limit)]


def pass1(correct: list[list[bool]]) -> float:
    flat = [c for group in correct for c in group]
    return sum(flat) / max(len(flat), 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, default=4, help="problems per benchmark")
    parser.add_argument("--k", type=int, default=4, help="samples per problem")
    parser.add_argument("--max-tokens", type=int, default=256, help="new tokens per sample")
    parser.add_argument("--seed", type=int, default=0, help="eval.seed")
    args = parser.parse_args()

    from distill.models import fetch_embedded

    model = fetch_embedded("smollm2-135m")
    for p in model.iterdir():  # page cache: both engines load the weights from memory
        p.read_bytes()
    engine_env()
    naive = naive_pass(model, args.limit, args.k, args.max_tokens, args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        ours = distill_pass(model, args.limit, args.k, args.max_tokens, args.seed, Path(tmp) / "eval")
    for name in BENCHMARKS:
        ours["completions"][name] = in_order(ours["completions"][name], args.limit, name)
        ours["correct"][name] = in_order(ours["correct"][name], args.limit, name)

    samples = len(BENCHMARKS) * args.limit * args.k
    print(
        f"\nsmollm2-135m, {', '.join(BENCHMARKS)} x {args.limit} problems, k={args.k}, max {args.max_tokens} "
        f"new tokens: {samples} samples"
    )
    rate = {}
    for label, r in [("naive (raw LLM + math_verify)", naive), ("distill eval", ours)]:
        work = r["seconds"] - r["start"]
        rate[label] = (samples / r["seconds"], samples / work)
        print(
            f"{label:<30} engine start {r['start']:5.1f} s, then {work:5.1f} s: "
            f"{rate[label][0]:.3f} samples/s with start, {rate[label][1]:.3f} without"
        )
    (a, a_work), (b, b_work) = rate.values()
    print(f"ratio distill/naive: {b / a:.3f} with engine start, {b_work / a_work:.3f} without (goal >= 0.95)")
    same = naive["completions"] == ours["completions"]
    print(f"same completions (same seeds, same batches): {same}")
    for name in BENCHMARKS:
        n_c, o_c = naive["correct"][name], ours["correct"][name]
        differ = sum(x != y for gn, go in zip(n_c, o_c, strict=True) for x, y in zip(gn, go, strict=True))
        print(
            f"  {name:<11} pass@1 naive {pass1(n_c):.3f}, distill {pass1(o_c):.3f} "
            f"({differ} of {args.limit * args.k} verdicts differ)"
        )


if __name__ == "__main__":  # vLLM starts its engine with spawn
    main()
