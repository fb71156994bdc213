"""Stage 5: sample k answers per benchmark problem from the patched student and grade them with curate's verifiers.

    distill eval pipelines/demo-cpu.yaml        # reads runs/demo-cpu/patch/release, writes runs/demo-cpu/eval/
    distill eval deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --benchmarks aime24:k=64,math500:k=4 --out runs/x

Prompts follow the R1 evaluation setup: one user turn with the domain directive, no system prompt, the release
template's generation prompt ending in "<think>\\n", temperature 0.6 / top-p 0.95, k samples per problem.
With `eval.baseline` another model (e.g. "base": the model before distillation) is scored the same way on its own
chat template, without the <think> prefill, and gets its own row in table.md and the model card.
A DeepSeek release (or a model patched to one) gets DeepSeek's published numbers beside its own (reference.py).
With eval.engine.data_parallel_size = N, each benchmark's problems are split over N engine replicas; a problem's
seeds do not depend on which replica samples it.
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
    model_identity,
    prepare_stage,
    read_manifest,
    write_parquet,
)
from distill.config import EvalConfig, Recipe, TeacherConfig, config_hash
from distill.engines.backends import ENGINE_LOG
from distill.errors import DistillError
from distill.eval.metrics import cons_at_k, normalize_answer, paired_gain, pass1_mean_se, verdicts_by_problem
from distill.models import display_name
from distill.release import THINK_OPEN
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
    release: str | None = None,
):
    """Stage function. `backend` / `baseline_backend` let a caller share engines that already serve the
    student / the baseline (tests; a list: data-parallel replicas). `release`: the DeepSeek release whose published
    numbers go beside ours (default: detected from the model's name or the patch manifest)."""
    from distill.eval.reference import detect_release, release_id

    src, out = Path(src), Path(out)
    model = student_model(src)
    release = release_id(release) if release else detect_release(str(src), model)
    # a bare model folder is keyed by its files too: retrained weights at the same path are scored anew
    inputs = (
        {"patch": manifest_hash(src)}
        if (src / "manifest.json").exists()
        else {"model": str(model), "files": model_identity(model)}
    )
    cfg = {
        "eval": recipe.eval.model_dump(mode="json"),
        "directives": recipe.generate.model_dump(
            include={"math_directive", "code_directive", "mcq_directive"}
        ),
    }
    cfg_hash = config_hash({**cfg, "release": release} if release else cfg)
    dp = (recipe.eval.engine or TeacherConfig()).data_parallel_size
    if dp < 1:  # before prepare_stage: nothing is written for a run that cannot start
        raise DistillError(f"eval.engine.data_parallel_size must be >= 1 (got {dp})")
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
    reference = reference_for(release, recipe.eval, model, results)
    return write_outputs(out, manifest, recipe, model, results, samples, baseline, reference)


def reference_for(release: str | None, cfg: EvalConfig, model: Path, results: dict) -> dict | None:
    """DeepSeek's published numbers beside ours, with this run's protocol (k, max tokens, template, TP, dtype)."""
    if release is None:
        return None
    from distill.eval.reference import compare
    from distill.models import load_tokenizer

    engine = cfg.engine or TeacherConfig()
    protocol = {
        "max_tokens": cfg.max_tokens,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "template_prefills": template_prefills(load_tokenizer(str(model))),
        "tp": engine.tensor_parallel_size,
        "dtype": engine.dtype,
    }
    return compare(release, results, protocol)


def template_prefills(tokenizer: Any) -> bool:
    """Does the model's own chat template end its generation prompt with "<think>\\n" (the revised R1 template)?"""
    messages = [{"role": "user", "content": "1+1?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text.endswith(THINK_OPEN)


def run_benchmarks(
    recipe: Recipe, model: Path, backend: Any, thinking: bool, log: Path | None = None
) -> tuple[dict, list[dict]]:
    """Every benchmark on one engine, or eval.engine.data_parallel_size replicas (started here, their output to
    `log`, and closed after, unless given: one backend or a list of replicas)."""
    from distill.models import load_tokenizer

    tokenizer = load_tokenizer(str(model))
    owned = backend is None
    if owned:
        backends = start_replicas(engine_config(recipe.eval, model, thinking), log)
    else:
        backends = backend if isinstance(backend, list) else [backend]
    results, samples = {}, []
    try:
        for name, spec in recipe.eval.benchmarks.items():
            rows = sample_benchmark(recipe, name, spec, tokenizer, backends, thinking)
            results[name] = score(rows, spec.k)
            samples.extend({**row, "model": "student" if thinking else "baseline"} for row in rows)
    finally:
        if owned:
            for b in backends:
                b.close()
    return results, samples


def start_replicas(teacher: TeacherConfig, log: Path | None) -> list:
    """data_parallel_size engines, replica r on its own slice of tp*pp GPUs of CUDA_VISIBLE_DEVICES (as generate's
    replicas; vLLM's workers read it when they start). One engine when data_parallel_size is 1."""
    import os

    from distill.engines.backends import make_backend, replica_devices

    one = teacher.model_copy(update={"data_parallel_size": 1})
    if teacher.data_parallel_size == 1:
        return [make_backend(one, log)]
    backends, saved = [], os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for devices in replica_devices(teacher):
            if devices is not None:
                os.environ["CUDA_VISIBLE_DEVICES"] = devices
            backends.append(make_backend(one, log))
    except BaseException:
        for b in backends:
            b.close()
        raise
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
    return backends


def benchmark_prompts(name: str, limit: int | None) -> list[dict]:
    from distill.data import load_prompts, split_spec

    base, split = split_spec(name)
    return load_prompts(base, split or "test", limit)


def sample_benchmark(recipe: Recipe, name: str, spec, tokenizer: Any, backends: list, thinking: bool = True):
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
        backends, requests, sampling, f"eval {'student' if thinking else 'baseline'} {name}"
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


def generate_with_bar(backends: list, requests: list, sampling: Any, title: str) -> list:
    """The replicas' generate under one progress bar: problems done, tokens/s, ETA."""
    from distill.ui import progress

    with progress(refresh_per_second=2) as bar:
        task = bar.add_task(title, total=len(requests), info="")
        tokens = [0]
        started = time.perf_counter()

        def advance(done: int, new_tokens: int) -> None:
            tokens[0] += new_tokens
            rate = tokens[0] / max(time.perf_counter() - started, 1e-9)
            bar.update(task, advance=done, info=f"{rate:.0f} tok/s")

        return generate_split(backends, requests, sampling, advance)


def generate_split(backends: list, requests: list, sampling: Any, on_done: Any = None) -> list:
    """Contiguous slices of the requests, one per replica, generated concurrently (threads: each engine does its
    work outside the GIL), results back in request order. Seeds travel with the requests, so the split does not
    change what a problem samples."""
    if len(backends) == 1:
        return backends[0].generate(requests, sampling, on_done)
    from concurrent.futures import ThreadPoolExecutor

    size = -(-len(requests) // len(backends))  # ceil: every replica but the last gets `size` problems
    slices = [requests[i : i + size] for i in range(0, len(requests), size)]
    with ThreadPoolExecutor(len(slices)) as pool:
        parts = list(pool.map(lambda b, part: b.generate(part, sampling, on_done), backends, slices))
    return [outs for part in parts for outs in part]


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
    reference: dict | None = None,
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
                f"{baseline['name']} ({display_name(baseline['model'])}, before distillation)",
                baseline["benchmarks"],
            )
        )
    verdict = held_out_verdict(samples, results, baseline["benchmarks"]) if baseline else None
    if verdict:
        payload["verdict"] = verdict
        plot_before_after(rows, out / "before_after.png")
    table = render_table(rows) + (f"\n{verdict['line']}\n" if verdict else "")
    if reference:
        from distill.eval.reference import reference_lines

        payload["reference"] = reference
        table += "\n" + "\n".join(reference_lines(reference)) + "\n"
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
    if reference:
        _print_reference(reference)
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


def _print_reference(ref: dict) -> None:
    """DeepSeek's published numbers beside ours, then the notes and the protocol differences."""
    from distill.ui import print_table

    print_table(
        f"{ref['release']}: ours vs DeepSeek's published ({ref['source']})",
        [
            {
                "benchmark": DISPLAY.get(r["benchmark"], r["benchmark"]),
                "metric": r["metric"],
                "k": r["k"],
                "problems": r["n"],
                "distill": f"{r['ours']:.1f}" + (f" ± {r['se']:.1f}" if r["se"] is not None else ""),
                "DeepSeek": f"{r['deepseek']:.1f}",
                "diff": f"{r['diff']:+.1f}",
                "diff / SE": f"{r['diff_se']:+.1f}" if r["diff_se"] is not None else "-",
            }
            for r in ref["rows"]
        ],
    )
    for note in ref["notes"]:
        print(f"note: {note}")
    print("protocol differences that can explain a gap:")
    for gap in ref["protocol"]:
        print(f"  - {gap}")


# ---------------------------------------------------------------- `distill eval MODEL`: any model, no recipe


def parse_benchmarks(text: str) -> dict[str, dict[str, int]]:
    """`aime24:k=64,math500:k=4:limit=50` -> {"aime24": {"k": 64}, "math500": {"k": 4, "limit": 50}}; a name
    may carry its split (`gsm8k:test:k=2`). Unknown data sets, splits, options and k <= 0 fail here."""
    from distill.data import get_source, split_spec

    out: dict[str, dict[str, int]] = {}
    for item in (t.strip() for t in text.split(",")):
        parts = item.split(":")
        name = ":".join(p for p in parts if "=" not in p)
        options = dict(p.split("=", 1) for p in parts if "=" in p)
        base, split = split_spec(name)
        try:
            source = get_source(base)
        except DistillError as err:
            raise DistillError(f"--benchmarks {item}: {err}") from None
        if split and split not in source.files:
            raise DistillError(
                f"--benchmarks {item}: '{base}' has no split '{split}' (has: {', '.join(source.files)})"
            )
        if set(options) - {"k", "limit"}:
            raise DistillError(
                f"--benchmarks {item}: unknown option(s) {sorted(set(options) - {'k', 'limit'})}"
            )
        try:
            spec = {key: int(value) for key, value in options.items()}
        except ValueError:
            raise DistillError(f"--benchmarks {item}: k and limit are whole numbers") from None
        for key, value in spec.items():
            if value <= 0:
                raise DistillError(f"--benchmarks {item}: {key} must be >= 1 (got {value})")
        out[name] = spec
    return out


def model_folder(model: str) -> Path:
    """A local folder, a registry name, or a hub id (downloaded, or found in the HF cache offline); it must hold
    a tokenizer: eval renders the prompts with the model's own chat template."""
    from distill.models import resolve_model

    path = Path(resolve_model(model))
    path = student_model(path if path.exists() else hub_snapshot(model))  # a patch stage dir: its release/
    if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise DistillError(
            f"{model}: no tokenizer in the model folder (tokenizer.json, tokenizer.model or vocab.json)"
        )
    return path


def hub_snapshot(repo: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo))
    except Exception as err:  # offline, no such repo, gated: one line, not a traceback
        raise DistillError(f"{repo}: cannot fetch it from the Hub ({type(err).__name__})") from None


def evaluate_model(
    model: str,
    out: Path,
    benchmarks: str | None = None,
    sets: list[str] | None = None,
    release: str | None = None,
    force: bool = False,
    backend: Any = None,
    **sampling: Any,
):
    """`distill eval MODEL`: the eval stage on any model without a recipe. `sampling`: max_tokens, seed,
    temperature, top_p (None: the R1 defaults of EvalConfig); `sets`: eval.* overrides (eval.engine.dtype=float32).
    Everything is checked before anything is written."""
    from distill.config import apply_overrides, recipe_from_dict
    from distill.eval.reference import detect_release, release_id

    spec = parse_benchmarks(benchmarks) if benchmarks else None
    release = release_id(release) if release else None
    folder = model_folder(model)
    release = release or detect_release(model, folder)
    cfg: dict[str, Any] = {key: value for key, value in sampling.items() if value is not None}
    if spec is not None:
        cfg["benchmarks"] = spec
    data = apply_overrides({"name": f"eval-{folder.name}", "eval": cfg}, sets or [])
    if set(data) - {"name", "eval"}:
        raise DistillError(
            f"--set: only eval.* fields apply to `distill eval MODEL` (got {sorted(set(data) - {'name', 'eval'})})"
        )
    recipe = recipe_from_dict(data, "distill eval")
    src = Path(model) if Path(model).exists() else folder  # a patch stage dir keeps its manifest in view
    return evaluate(recipe, src, Path(out), force=force, backend=backend, release=release)
