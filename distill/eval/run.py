"""Stage 5: sample k answers per benchmark problem from the patched student and grade them with curate's verifiers.

    distill eval pipelines/demo-cpu.yaml        # reads runs/demo-cpu/patch/release, writes runs/demo-cpu/eval/

Prompts follow the R1 evaluation setup: one user turn with the domain directive, no system prompt, the release
template's generation prompt ending in "<think>\\n", temperature 0.6 / top-p 0.95, k samples per problem.
With `eval.baseline` another model (e.g. "base": the model before distillation) is scored the same way on its own
chat template, without the <think> prefill, and gets its own row in table.md and the model card.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from distill.artifacts import (
    atomic_write_text,
    finish_manifest,
    manifest_hash,
    prepare_stage,
    read_manifest,
    write_parquet,
)
from distill.config import EvalConfig, Recipe, TeacherConfig, config_hash
from distill.errors import DistillError
from distill.eval.metrics import cons_at_k, normalize_answer, pass1_mean_se
from distill.report import DISPLAY, render_table


def student_model(src: Path) -> Path:
    """The checkpoint to evaluate: the patch stage's release folder, or src itself when it is a model folder."""
    for candidate in (src / "release", src / "final", src):
        if (candidate / "config.json").exists():
            return candidate
    raise DistillError(
        f"{src}: no model to evaluate (expected release/ from the patch stage, or a model folder)"
    )


def baseline_model(recipe: Recipe) -> Path:
    """eval.baseline as a model folder (or hub id); "base" is what the student was trained from."""
    from distill.models import resolve_model

    name = recipe.eval.baseline
    if name == "base":
        name = recipe.train.model or recipe.student  # a student name resolves to its base model
    return Path(resolve_model(name))


def engine_config(cfg: EvalConfig, model: Path, thinking: bool = True) -> TeacherConfig:
    student = {
        "model": str(model),
        "backend": "vllm",
        "thinking": thinking,
        "tokenizer": None,
        "chat_template": None,
    }
    return (cfg.engine or TeacherConfig()).model_copy(update=student)


def evaluate(
    recipe: Recipe,
    src: Path,
    out: Path,
    force: bool = False,
    backend: Any = None,
    baseline_backend: Any = None,
):
    """Stage function. `backend` / `baseline_backend` let a caller share engines that already serve the
    student / the baseline (tests)."""
    src, out = Path(src), Path(out)
    model = student_model(src)
    inputs = {"patch": manifest_hash(src)} if (src / "manifest.json").exists() else {"model": str(model)}
    cfg_hash = config_hash(
        {
            "eval": recipe.eval.model_dump(mode="json"),
            "directives": recipe.generate.model_dump(
                include={"math_directive", "code_directive", "mcq_directive"}
            ),
        }
    )
    manifest = prepare_stage("eval", out, cfg_hash, inputs, force)
    if manifest is None:
        return read_manifest(out)
    base = baseline_model(recipe) if recipe.eval.baseline else None  # a bad name fails before any sampling
    results, samples = run_benchmarks(recipe, model, backend, thinking=True)
    baseline = None
    if base is not None:
        base_results, base_samples = run_benchmarks(recipe, base, baseline_backend, thinking=False)
        baseline = {"model": str(base), "name": recipe.eval.baseline, "benchmarks": base_results}
        samples += base_samples
    return write_outputs(out, manifest, recipe, model, results, samples, baseline)


def run_benchmarks(recipe: Recipe, model: Path, backend: Any, thinking: bool) -> tuple[dict, list[dict]]:
    """Every benchmark on one engine (started here and closed after, unless given)."""
    from distill.engines.backends import make_backend
    from distill.models import load_tokenizer

    tokenizer = load_tokenizer(str(model))
    owned = backend is None
    backend = backend or make_backend(engine_config(recipe.eval, model, thinking))
    results, samples = {}, []
    try:
        for name, spec in recipe.eval.benchmarks.items():
            rows = sample_benchmark(recipe, name, spec, tokenizer, backend, thinking)
            results[name] = score(rows, spec.k)
            samples.extend({**row, "model": "student" if thinking else "baseline"} for row in rows)
    finally:
        if owned:
            backend.close()
    return results, samples


def benchmark_prompts(name: str, limit: int | None) -> list[dict]:
    from distill.data import load_prompts, split_spec

    base, split = split_spec(name)
    return load_prompts(base, split or "test", limit)


def sample_benchmark(recipe: Recipe, name: str, spec, tokenizer: Any, backend: Any, thinking: bool = True):
    """spec.k samples per problem, graded; one row per sample. thinking: the R1 `<think>\\n` prefill."""
    from distill.engines.backends import SamplingSpec
    from distill.engines.prompts import build_messages, make_request, prefilled
    from distill.engines.traces import parse_trace
    from distill.graders import verify_batch

    cfg = recipe.eval
    gen_cfg = recipe.generate.model_copy(update={"system_prompt": None})  # R1 eval: no system prompt
    prompts = benchmark_prompts(name, spec.limit)
    requests = []
    for i, p in enumerate(prompts):
        messages = build_messages(p["problem"], p["domain"], gen_cfg)
        requests.append(make_request(tokenizer, messages, force_think=thinking, seed=cfg.seed + 1000 * i))
    sampling = SamplingSpec(n=spec.k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens)
    started = time.perf_counter()
    outs = backend.generate(requests, sampling)
    seconds = time.perf_counter() - started
    rows, items = [], []
    for p, req, completions in zip(prompts, requests, outs, strict=True):
        for j, c in enumerate(completions):
            trace = parse_trace(c.text, c.finish_reason, thinking, prefilled=prefilled(req.prompt_text))
            graded = trace.answer or c.text  # an unclosed thought is graded on the whole text
            items.append((p["domain"], p["reference"], graded))
            rows.append(
                {
                    "benchmark": name,
                    "prompt_id": p["prompt_id"],
                    "sample_index": j,
                    "domain": p["domain"],
                    "reference": p["reference"],
                    "completion": c.text,
                    "finish_reason": c.finish_reason,
                    "completion_tokens": c.completion_tokens,
                    "gen_seconds": seconds,
                }
            )
    for row, verdict in zip(rows, verify_batch(items, recipe.curate.verify), strict=True):
        row["verdict"] = verdict.verdict if verdict else "ungraded"
        row["grader"] = verdict.grader if verdict else None
        row["pred_answer"] = verdict.pred_answer if verdict else None
    return rows


def score(rows: list[dict], k: int) -> dict[str, Any]:
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    correct = [[r["verdict"] == "correct" for r in group] for group in by_prompt.values()]
    answers = [[normalize_answer(r["pred_answer"]) for r in group] for group in by_prompt.values()]
    pass1, se = pass1_mean_se(correct)
    verdicts = [r["verdict"] for r in rows]
    tokens = sum(r["completion_tokens"] for r in rows)
    return {
        "pass@1": pass1,
        "pass@1_se": se,
        "cons@k": cons_at_k(answers, correct),
        "k": k,
        "n": len(by_prompt),
        "verdicts": {v: verdicts.count(v) for v in sorted(set(verdicts))},
        "truncated": sum(r["finish_reason"] == "length" for r in rows) / max(len(rows), 1),
        "mean_tokens": tokens / max(len(rows), 1),
        "tokens_per_s": tokens / max(rows[0]["gen_seconds"], 1e-9) if rows else 0.0,
    }


def write_outputs(
    out: Path,
    manifest,
    recipe: Recipe,
    model: Path,
    results: dict,
    samples: list[dict],
    baseline: dict | None,
):
    for row in samples:
        row.pop("gen_seconds", None)
    entry = write_parquet(samples, out / "samples.parquet")
    payload = {
        "model": str(model),
        "student": recipe.student,
        "benchmarks": results,
        "sampling": {
            "temperature": recipe.eval.temperature,
            "top_p": recipe.eval.top_p,
            "max_tokens": recipe.eval.max_tokens,
        },
    }
    rows = [(recipe.name, results)]
    if baseline:
        payload["baseline"] = baseline
        rows.append(
            (
                f"{baseline['name']} ({Path(baseline['model']).name}, before distillation)",
                baseline["benchmarks"],
            )
        )
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2))
    atomic_write_text(out / "table.md", render_table(rows))
    manifest.outputs = [entry]
    manifest.rows_in = len(samples)
    manifest.rows_out = len(samples)
    manifest.metrics = {f"{b}/{m}": r[m] for b, r in results.items() for m in ("pass@1", "cons@k")}
    for b, r in (baseline or {}).get("benchmarks", {}).items():
        manifest.metrics.update({f"baseline/{b}/{m}": r[m] for m in ("pass@1", "cons@k")})
    _print_summary(recipe.name, rows)
    return finish_manifest(out, manifest)


def _print_summary(name: str, rows: list[tuple[str, dict]]) -> None:
    from distill.ui import print_table

    print_table(
        f"eval: {name}",
        [
            {
                "model": label,
                "benchmark": DISPLAY.get(b, b),
                "k": r["k"],
                "problems": r["n"],
                "pass@1": f"{100 * r['pass@1']:.1f}",
                "± SE": f"{100 * r['pass@1_se']:.1f}",
                f"cons@{r['k']}": f"{100 * r['cons@k']:.1f}",
                "tokens/s": f"{r['tokens_per_s']:.0f}",
            }
            for label, results in rows
            for b, r in results.items()
        ],
    )
