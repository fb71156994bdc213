"""Markdown tables the cards share: evaluation in the format of DeepSeek's R1 README (percentages, pass@1 over k
samples, cons@k) and curate's decontamination reports."""

from __future__ import annotations

from typing import Any

# Benchmark display names, as in DeepSeek's distilled-model table (the model card uses them too).
DISPLAY = {
    "aime24": "AIME 2024",
    "aime25": "AIME 2025",
    "math500": "MATH-500",
    "gpqa_diamond": "GPQA Diamond",
    "livecodebench": "LiveCodeBench",
    "amc23": "AMC 2023",
    "humaneval": "HumanEval",
    "mbpp": "MBPP",
    "gsm8k": "GSM8K",
}


def render_table(rows: list[tuple[str, dict[str, dict[str, Any]]]]) -> str:
    """| Model | AIME 2024 pass@1 | AIME 2024 cons@64 | MATH-500 pass@1 | ... | one row per (model, results), in %.

    The columns are the first row's benchmarks: pass@1 (± SE when the result has one) and cons@k when k > 1. A
    missing number is "-", and a row's cons@k fills a cons@k column only for the same k (DeepSeek reports cons@64).
    """
    first = rows[0][1]
    headers = ["Model"]
    for name, r in first.items():
        headers += [f"{_title(name)} pass@1"] + ([f"{_title(name)} cons@{r['k']}"] if _k(r) > 1 else [])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for model, results in rows:
        lines.append("| " + " | ".join([model, *_cells(first, results)]) + " |")
    ks = ", ".join(f"{_title(n)}: k={r.get('k', '?')}, n={r.get('n', '?')}" for n, r in first.items())
    return (
        "\n".join(lines)
        + "\n\npass@1 is averaged over k samples per problem (± standard error over problems); "
        f"cons@k is the majority vote over the k samples. {ks}.\n"
    )


def _title(name: str) -> str:
    return DISPLAY.get(name.split(":")[0], name)  # "gsm8k:test" -> "GSM8K"


def _k(result: dict[str, Any]) -> int:
    return result.get("k") or 1


def _cells(columns: dict[str, dict[str, Any]], results: dict[str, dict[str, Any]]) -> list[str]:
    cells = []
    for name, column in columns.items():
        got = results.get(name, {})
        se = got.get("pass@1_se")
        cells.append(_pct(got.get("pass@1")) + (f" ± {_pct(se)}" if se is not None else ""))
        if _k(column) > 1:
            cells.append(_pct(got.get("cons@k")) if _k(got) == column["k"] else "-")
    return cells


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}"


def decontamination_lines(metrics: dict[str, Any]) -> list[str]:
    """The decontamination reports of curate's metrics as a sentence and a table per report (also the model card's)."""
    out = []
    for key, what in (("decontamination", "prompts"), ("decontamination_traces", "traces")):
        rep = metrics.get(key)
        if rep is None:
            continue
        out += [
            f"{rep['ngram']}-gram overlap of {rep['checked']} {what}: {rep['contaminated']} contaminated; "
            f"{rep['boilerplate_ngrams_ignored']} benchmark n-grams ignored as corpus boilerplate, "
            f"{rep['template_ngrams_dropped']} as benchmark templates.",
            "",
        ]
        rows = []
        for bench, v in rep["benchmarks"].items():
            ex = "; ".join(f'{e["id"]} ~ {e["item"]}: "{e["ngram"]}"' for e in v["examples"])
            rows.append([bench, v["items"], v["sha256"], v["hits"], ex.replace("|", "\\|")])
        out += markdown_table(["benchmark", "items", "version", "hits", "examples"], rows) + [""]
    return out or ["Not run (no benchmarks configured).", ""]


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
