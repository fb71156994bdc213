"""DeepSeek's published scores for the six R1-Distill releases, and a run's scores set beside them.

Source: the "Distilled Model Evaluation" table of the DeepSeek-R1 README, repeated in every model card
deepseek-ai/DeepSeek-R1-Distill-* and in the R1 paper (arXiv 2501.12948, Table 5), copied number by number from
github.com/deepseek-ai/DeepSeek-R1 README.md at commit 00f3296a14392e787d4138b5a0d8ce0e55a25b23. Their protocol
(same README, "Evaluation Results"): at most 32,768 generated tokens, temperature 0.6, top-p 0.95, 64 responses
per query to estimate pass@1; cons@64 is the majority vote of those 64.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.release import PUBLISHED_SCORES, PUBLISHED_SOURCE, THINK_OPEN

PROTOCOL = {"k": 64, "max_tokens": 32768, "temperature": 0.6, "top_p": 0.95}


def named_release(name: str) -> str | None:
    """The release whose hub id or last part (DeepSeek-R1-Distill-Qwen-7B) is `name`."""
    return next((r for r in PUBLISHED_SCORES if name in (r, r.split("/")[1])), None)


def release_id(name: str) -> str:
    """A release by hub id, its last part (DeepSeek-R1-Distill-Qwen-7B) or its student name (qwen-7b)."""
    from distill.students import STUDENTS

    if name in STUDENTS:
        name = STUDENTS[name].release
    if release := named_release(name):
        return release
    known = ", ".join(r.split("/")[1] for r in PUBLISHED_SCORES)
    raise DistillError(f"unknown release '{name}' (known: {known}, or a student name such as qwen-7b)")


def detect_release(model: str, folder: Path) -> str | None:
    """The release a model is, or was patched to: its hub id or folder name is a release's, or the patch
    stage's manifest beside it (…/patch/release -> …/patch/manifest.json) names a release student."""
    from distill.students import STUDENTS

    release = named_release(model.rstrip("/")) or named_release(Path(model.rstrip("/")).name)
    if release:
        return release
    for manifest in (folder / "manifest.json", folder.parent / "manifest.json"):
        if manifest.exists():
            metrics = json.loads(manifest.read_text()).get("metrics") or {}
            student = STUDENTS.get(metrics.get("student", ""))
            if student is not None and student.release in PUBLISHED_SCORES:
                return student.release
    return None


def compare(release: str, results: dict[str, dict], protocol: dict[str, Any]) -> dict[str, Any]:
    """Rows of (benchmark, metric, ours ± SE, DeepSeek's, difference in SEs) for every benchmark run that the card
    reports, notes for benchmarks without a published number, and the protocol differences that can explain a gap.

    The difference is (ours - theirs) / our SE: DeepSeek publish no SE, so only the run's own sampling error is
    counted (cons@k has no SE: its difference is in points only)."""
    published = PUBLISHED_SCORES[release]
    rows, notes = [], []
    for bench, r in results.items():
        base = bench.split(":")[0]
        metrics = [m for (b, m) in published if b == base]
        if not metrics:
            notes.append(f"{bench}: no published DeepSeek number for {release.split('/')[1]}")
        for metric in metrics:
            rows.append(_row(bench, metric, r, published[(base, metric)]))
    return {
        "release": release,
        "source": PUBLISHED_SOURCE,
        "rows": rows,
        "notes": notes,
        "protocol": protocol_gaps(results, protocol),
    }


def _row(bench: str, metric: str, r: dict, theirs: float) -> dict[str, Any]:
    ours = 100 * r[metric]
    se = 100 * r["pass@1_se"] if metric == "pass@1" else None
    if metric == "cons@k" and r["k"] != PROTOCOL["k"]:
        metric_name = f"cons@{r['k']} (card: cons@64)"
    else:
        metric_name = "cons@64" if metric == "cons@k" else metric
    return {
        "benchmark": bench,
        "metric": metric_name,
        "ours": ours,
        "se": se,
        "deepseek": theirs,
        "diff": ours - theirs,
        "diff_se": (ours - theirs) / se if se else None,
        "n": r["n"],
        "k": r["k"],
    }


def protocol_gaps(results: dict[str, dict], protocol: dict[str, Any]) -> list[str]:
    """Where this run's protocol is not DeepSeek's; each can move the score by more than the SE."""
    gaps = []
    ks = sorted({r["k"] for r in results.values()})
    if ks != [PROTOCOL["k"]]:
        gaps.append(
            f"k: {', '.join(map(str, ks))} samples per problem (DeepSeek: 64); pass@1 is unbiased at any k, "
            "but its SE grows as k falls and cons@k is not cons@64"
        )
    if protocol["max_tokens"] < PROTOCOL["max_tokens"]:
        gaps.append(
            f"max tokens: {protocol['max_tokens']} (DeepSeek: 32,768); cut-off answers are graded wrong"
        )
    for key in ("temperature", "top_p"):
        if protocol[key] != PROTOCOL[key]:
            gaps.append(f"{key}: {protocol[key]} (DeepSeek: {PROTOCOL[key]})")
    gaps.append(
        f"template: distill prefills {THINK_OPEN!r} after the generation prompt (DeepSeek's recommendation); "
        f"the model's own template {'ends' if protocol.get('template_prefills') else 'does not end'} with it. "
        "DeepSeek later revised the release template to add the prefill and do not say which template produced the "
        "card's numbers; without it the model can skip its thinking"
    )
    gaps.append(
        f"engine: tensor_parallel_size {protocol.get('tp', 1)}, dtype {protocol.get('dtype', 'auto')} "
        "(DeepSeek: TP and dtype not published; the release is bf16). TP and dtype change the logits' rounding, "
        "so the same seed samples different text (open-r1 #674)"
    )
    return gaps


def reference_lines(ref: dict[str, Any]) -> list[str]:
    """The comparison as markdown: a table, then the notes and the protocol differences."""
    lines = [
        f"### Against DeepSeek's published numbers: {ref['release']}",
        "",
        "| Benchmark | metric | distill (k, n) | DeepSeek | difference | in SEs |",
        "|---|---|---|---|---|---|",
    ]
    for r in ref["rows"]:
        ours = f"{r['ours']:.1f}" + (f" ± {r['se']:.1f}" if r["se"] is not None else "")
        in_se = f"{r['diff_se']:+.1f}" if r["diff_se"] is not None else "-"
        lines.append(
            f"| {r['benchmark']} | {r['metric']} | {ours} (k={r['k']}, n={r['n']}) | {r['deepseek']:.1f} | "
            f"{r['diff']:+.1f} | {in_se} |"
        )
    lines += ["", f"Source: {ref['source']}."]
    lines += [f"Note: {n}." for n in ref["notes"]]
    lines += ["", "Protocol differences that can explain a gap:", *[f"- {g}" for g in ref["protocol"]]]
    return lines
