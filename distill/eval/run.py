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
from distill.engines.backends import ENGINE_LOG
from distill.errors import DistillError
from distill.eval.metrics import cons_at_k, normalize_answer, paired_gain, pass1_mean_se, verdicts_by_problem
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
    """eval.engine serving `model`, its backend kept (openai: a server that names the model by its path, as
    `vllm serve PATH` does); prompts are rendered here with the model's own tokenizer."""
    student = {"model": str(model), "thinking": thinking, "tokenizer": None, "chat_template": None}
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
    log = out.parent / ENGINE_LOG
    results, samples = run_benchmarks(recipe, model, backend, thinking=True, log=log)
    baseline = None
    if base is not None:
        base_results, base_samples = run_benchmarks(recipe, base, baseline_backend, thinking=False, log=log)
        baseline = {"model": str(base), "name": recipe.eval.baseline, "benchmarks": base_results}
        samples += base_samples
    return write_outputs(out, manifest, recipe, model, results, samples, baseline)


def run_benchmarks(
    recipe: Recipe, model: Path, backend: Any, thinking: bool, log: Path | None = None
) -> tuple[dict, list[dict]]:
    """Every benchmark on one engine (started here, its output to `log`, and closed after, unless given)."""
    from distill.engines.backends import make_backend
    from distill.models import load_tokenizer

    tokenizer = load_tokenizer(str(model))
    owned = backend is None
    backend = backend or make_backend(engine_config(recipe.eval, model, thinking), log)
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
    outs = generate_with_bar(
        backend, requests, sampling, f"eval {'student' if thinking else 'baseline'} {name}"
    )
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


def generate_with_bar(backend: Any, requests: list, sampling: Any, title: str) -> list:
    """backend.generate under one progress bar: problems done, tokens/s, ETA."""
    from distill.ui import progress

    with progress(refresh_per_second=2) as bar:
        task = bar.add_task(title, total=len(requests), info="")
        tokens = [0]
        started = time.perf_counter()

        def advance(done: int, new_tokens: int) -> None:
            tokens[0] += new_tokens
            rate = tokens[0] / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=done, info=f"{rate:.0f} tok/s")

        return backend.generate(requests, sampling, advance)


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
    verdict = held_out_verdict(samples, results, baseline["benchmarks"]) if baseline else None
    if verdict:
        payload["verdict"] = verdict
        plot_before_after(rows, out / "before_after.png")
    table = render_table(rows) + (f"\n{verdict['line']}\n" if verdict else "")
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2))
    atomic_write_text(out / "table.md", table)
    manifest.outputs = [entry]
    manifest.rows_in = len(samples)
    manifest.rows_out = len(samples)
    manifest.metrics = {f"{b}/{m}": r[m] for b, r in results.items() for m in ("pass@1", "cons@k")}
    for b, r in (baseline or {}).get("benchmarks", {}).items():
        manifest.metrics.update({f"baseline/{b}/{m}": r[m] for m in ("pass@1", "cons@k")})
    if verdict:
        manifest.metrics.update({f"held_out/{m}": verdict[m] for m in VERDICT_METRICS})
    _print_summary(
        recipe.name,
        [(recipe.name, results)] + ([(baseline["name"], baseline["benchmarks"])] if baseline else []),
    )
    if verdict:
        print(verdict["line"])
    return finish_manifest(out, manifest)


VERDICT_METRICS = ("before", "before_se", "after", "after_se", "gain", "gain_se", "problems", "k")


def held_out_verdict(samples: list[dict], results: dict, base_results: dict) -> dict[str, Any]:
    """Did distillation help? The first benchmark (the recipe's held-out split), student minus baseline,
    paired by problem: the SE of the gain leaves out the spread of problem difficulty both models share."""
    name = next(iter(results))
    correct = {
        m: verdicts_by_problem(r for r in samples if r["benchmark"] == name and r["model"] == m)
        for m in ("student", "baseline")
    }
    gain, gain_se, n = paired_gain(correct["student"], correct["baseline"])
    after, before = results[name], base_results[name]
    v = {
        "benchmark": name,
        "before": before["pass@1"],
        "before_se": before["pass@1_se"],
        "after": after["pass@1"],
        "after_se": after["pass@1_se"],
        "gain": gain,
        "gain_se": gain_se,
        "problems": n,
        "k": after["k"],
    }
    pct = {m: f"{100 * v[m]:.1f}" for m in VERDICT_METRICS[:6]}
    v["line"] = (
        f"held-out pass@1: before {pct['before']} ± {pct['before_se']}, after {pct['after']} ± "
        f"{pct['after_se']}, gain {pct['gain']} ± {pct['gain_se']} (paired, {n} problems × {v['k']})"
    )
    return v


def plot_before_after(rows: list[tuple[str, dict]], png: Path) -> None:
    """pass@1 ± SE per benchmark, the model before distillation beside the student (percent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from distill.artifacts import atomic_path

    (_, after), (_, before) = rows[0], rows[1]
    names = list(after)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 4))
    for shift, label, res in ((-0.2, "before distillation", before), (0.2, "after (student)", after)):
        xs = [i + shift for i in range(len(names))]
        ys = [100 * res[b]["pass@1"] if b in res else 0.0 for b in names]
        err = [100 * res[b]["pass@1_se"] if b in res else 0.0 for b in names]
        ax.bar(xs, ys, width=0.4, yerr=err, capsize=4, label=label)
    ax.set_xticks(range(len(names)), [DISPLAY.get(b.split(":")[0]) or b for b in names])
    ax.set_ylabel("pass@1 (%), ± SE over problems")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


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
