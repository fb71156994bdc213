"""Curate's difficulty step: a model answers each prompt k times (vLLM), the graders score it, and prompts whose
pass rate falls outside `curate.difficulty.keep` are dropped (open-r1's pass-rate filter, Light-R1, SkyThought).

    curate: {difficulty: {model: Qwen/Qwen2.5-7B-Instruct, k: 8, keep: [0.0, 0.5]}}   # drop what 7B solves >50%

Worked example (k = 4, keep [0.25, 0.75]): 0/4 correct -> 0.0, dropped (too hard for the signal); 2/4 -> 0.5 kept;
4/4 -> 1.0 dropped (too easy). Prompts no grader can score (no reference, a general prompt) get no rate and are
kept. Rates are cached in the run's work folder (difficulty.json), so a rerun after a crash samples nothing again;
metrics["difficulty"] holds every rate, the histogram (10 bins of 0.1) and the yields, which the card shows.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from distill.config import DifficultyConfig, GenerateConfig, TeacherConfig, VerifyConfig
from distill.errors import DistillError

BINS = 10  # histogram bins of width 0.1 over [0, 1]


def check(dc: DifficultyConfig) -> None:
    lo, hi = dc.keep
    if not (0.0 <= lo <= hi <= 1.0):
        raise DistillError(f"curate.difficulty.keep: [{lo}, {hi}] must satisfy 0 <= lo <= hi <= 1")
    if dc.k < 1:
        raise DistillError(f"curate.difficulty.k: {dc.k} must be >= 1")


def engine(dc: DifficultyConfig) -> TeacherConfig:
    return (dc.engine or TeacherConfig()).model_copy(update={"model": dc.model, "backend": "vllm"})


def sample(prompts: dict[str, dict[str, Any]], dc: DifficultyConfig) -> dict[str, list[str]]:
    """{prompt_id: k answers} from the model, prompted as R1 prompts are (directives; no system turn)."""
    from distill.engines.backends import SamplingSpec, make_backend
    from distill.engines.prompts import build_messages, load_teacher_tokenizer, make_request, prefilled
    from distill.engines.traces import parse_trace

    teacher = engine(dc)
    gen = GenerateConfig(force_think=teacher.thinking)
    tokenizer = load_teacher_tokenizer(teacher)
    ids = list(prompts)
    requests = [
        make_request(tokenizer, build_messages(p["problem"], p["domain"], gen), gen.force_think, seed=i)
        for i, p in enumerate(prompts.values())
    ]
    backend = make_backend(teacher)
    try:
        spec = SamplingSpec(n=dc.k, temperature=dc.temperature, top_p=dc.top_p, max_tokens=dc.max_tokens)
        outs = backend.generate(requests, spec)
    finally:
        backend.close()
    return {
        pid: [
            parse_trace(c.text, c.finish_reason, teacher.thinking, prefilled(r.prompt_text)).answer
            for c in out
        ]
        for pid, r, out in zip(ids, requests, outs, strict=True)
    }


def pass_rates(
    prompts: dict[str, dict[str, Any]], dc: DifficultyConfig, verify: VerifyConfig, cache: Path
) -> dict[str, float | None]:
    """{prompt_id: correct / k}, None where no grader applies; read from `cache` when it holds these prompts."""
    if cache.exists():
        cached = json.loads(cache.read_text())
        if set(cached) == set(prompts):
            return cached
    from distill.artifacts import atomic_write_text
    from distill.graders import grader_for, verify_batch

    gradable = {pid: p for pid, p in prompts.items() if grader_for(p["domain"], verify) and p["reference"]}
    answers = sample(gradable, dc) if gradable else {}
    items = [
        (gradable[pid]["domain"], gradable[pid]["reference"], a) for pid, ans in answers.items() for a in ans
    ]
    verdicts = iter(verify_batch(items, verify))
    rates: dict[str, float | None] = {pid: None for pid in prompts}
    for pid, ans in answers.items():
        rates[pid] = sum(
            (v is not None and v.verdict == "correct") for v in (next(verdicts) for _ in ans)
        ) / len(ans)
    atomic_write_text(cache, json.dumps(rates, sort_keys=True))
    return rates


def outside(rate: float | None, keep: tuple[float, float]) -> str | None:
    """The drop detail of a rate outside the range, else None (unrated prompts are kept)."""
    if rate is None or keep[0] <= rate <= keep[1]:
        return None
    side = "above" if rate > keep[1] else "below"
    return f"pass rate {rate:.3f} {side} [{keep[0]}, {keep[1]}]"


def histogram(rates: dict[str, float | None]) -> list[int]:
    """Prompts per 0.1-wide bin of pass rate; 1.0 falls in the last bin."""
    counts = Counter(min(int(r * BINS), BINS - 1) for r in rates.values() if r is not None)
    return [counts[b] for b in range(BINS)]


def report(rates: dict[str, float | None], dc: DifficultyConfig, dropped: int) -> dict[str, Any]:
    rated = [r for r in rates.values() if r is not None]
    return {
        "model": dc.model,
        "k": dc.k,
        "keep": list(dc.keep),
        "prompts": len(rates),
        "rated": len(rated),
        "dropped_prompts": dropped,
        "kept_prompts": len(rates) - dropped,
        "mean_pass_rate": round(sum(rated) / len(rated), 4) if rated else None,
        "histogram": histogram(rates),
        "pass_rates": rates,
    }


def card_section(metrics: dict[str, Any]) -> list[str]:
    """The card's difficulty section: yields and the pass-rate histogram (a text bar per bin)."""
    d = metrics.get("difficulty")
    if not d:
        return []
    out = ["## Difficulty (pass-rate filter)", ""]
    out.append(
        f"- `{d['model']}` answered each prompt {d['k']} times; kept pass rates in [{d['keep'][0]}, {d['keep'][1]}]"
    )
    out.append(
        f"- prompts: {d['prompts']}, rated: {d['rated']}, kept: {d['kept_prompts']}, dropped: {d['dropped_prompts']}, "
        f"mean pass rate: {d['mean_pass_rate']}"
    )
    out += ["", "| pass rate | prompts | |", "|---|---|---|"]
    top = max(d["histogram"]) or 1
    for b, n in enumerate(d["histogram"]):
        out.append(f"| {b / BINS:.1f}-{(b + 1) / BINS:.1f} | {n} | {'#' * round(20 * n / top)} |")
    return [*out, ""]
