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


def render_table(model: str, results: dict[str, dict[str, Any]]) -> str:
    """| Model | AIME 2024 pass@1 | AIME 2024 cons@64 | MATH-500 pass@1 | ... | with ± SE under pass@1."""
    headers, cells = ["Model"], [model]
    for name, r in results.items():
        title = DISPLAY.get(name.split(":")[0], name)
        headers.append(f"{title} pass@1")
        cells.append(f"{100 * r['pass@1']:.1f} ± {100 * r['pass@1_se']:.1f}")
        if r["k"] > 1:
            headers.append(f"{title} cons@{r['k']}")
            cells.append(f"{100 * r['cons@k']:.1f}")
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), "| " + " | ".join(cells) + " |"]
    ks = ", ".join(f"{DISPLAY.get(n.split(':')[0], n)}: k={r['k']}, n={r['n']}" for n, r in results.items())
    return (
        "\n".join(lines)
        + f"\n\npass@1 is averaged over k samples per problem (± standard error over problems); {ks}.\n"
    )
