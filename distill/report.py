"""The evaluation table in the format of DeepSeek's R1 README (percentages, pass@1 over k samples, cons@k)."""

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
    """| Model | AIME 2024 pass@1 | AIME 2024 cons@64 | MATH-500 pass@1 | ... | one row per (model, results),
    ± SE under pass@1; the columns are the first row's benchmarks."""
    first = rows[0][1]
    headers = ["Model"]
    for name, r in first.items():
        title = DISPLAY.get(name.split(":")[0], name)
        headers += [f"{title} pass@1"] + ([f"{title} cons@{r['k']}"] if r["k"] > 1 else [])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for model, results in rows:
        cells = [model]
        for name, r in first.items():
            got = results.get(name)
            cells.append(f"{100 * got['pass@1']:.1f} ± {100 * got['pass@1_se']:.1f}" if got else "-")
            if r["k"] > 1:
                cells.append(f"{100 * got['cons@k']:.1f}" if got else "-")
        lines.append("| " + " | ".join(cells) + " |")
    ks = ", ".join(f"{DISPLAY.get(n.split(':')[0], n)}: k={r['k']}, n={r['n']}" for n, r in first.items())
    return (
        "\n".join(lines)
        + f"\n\npass@1 is averaged over k samples per problem (± standard error over problems); {ks}.\n"
    )
