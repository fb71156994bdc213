"""Data card of a curated dataset (markdown) and its token-length histogram (PNG).

Written twice: `<run>/curate/card.md` + `lengths.png` on every run, and `<dataset>.md` + `<dataset>-lengths.png`
in the repository's data_cards/ (the checkout this package is imported from, whatever the working directory),
or in $DISTILL_CARDS_DIR when set, when the card's content changed (write_cards). An installed wheel has no
repository: then only the run's copy is written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from distill.artifacts import Manifest, atomic_path, atomic_write_text
from distill.config import Recipe
from distill.curate.difficulty import card_section
from distill.report import decontamination_lines, markdown_table
from distill.sources import card_section as mix_section

REPO = Path(__file__).resolve().parents[2]  # distill/curate/card.py -> the checkout holding distill/
VERDICT_COLUMNS = ("correct", "wrong", "unparseable", "timeout", "bad_reference")


def cards_dir() -> Path | None:
    """The repository copy's folder: $DISTILL_CARDS_DIR, else data_cards/ of the source checkout; None when
    the package is installed (no pyproject.toml beside it)."""
    if os.environ.get("DISTILL_CARDS_DIR"):
        return Path(os.environ["DISTILL_CARDS_DIR"])
    return REPO / "data_cards" if (REPO / "pyproject.toml").is_file() else None


def write_cards(
    recipe: Recipe,
    out: Path,
    manifest: Manifest,
    lengths_in: list[int],
    lengths_kept: list[int],
    force: bool = False,
) -> Path:
    """Write the run's card and histogram, always; the repository copy only when its content changed (the
    stamp line, a new time and manifest hash on every run, does not count) or when `force` (curate --force):
    a rerun leaves the checkout clean. Returns the repository copy's path (else the run's)."""
    name = recipe.curate.dataset_name or recipe.name
    plot_lengths(lengths_in, lengths_kept, out / "lengths.png")
    atomic_write_text(out / "card.md", render_card(name, recipe, manifest, lengths_kept, "lengths.png"))
    cards = cards_dir()
    if cards is None:
        return out / "card.md"
    png, path = f"{name}-lengths.png", cards / f"{name}.md"
    text = render_card(name, recipe, manifest, lengths_kept, png)
    old = path.read_text() if path.is_file() else None
    if force or old is None or unstamped(old) != unstamped(text) or not (cards / png).is_file():
        plot_lengths(lengths_in, lengths_kept, cards / png)
        atomic_write_text(path, text)
    return path


STAMP = "Reasoning traces curated by `distill curate`"  # the card's line with the run's time and hashes


def unstamped(card: str) -> str:
    """The card without its stamp line: what a rerun of the same data reproduces byte for byte."""
    return "\n".join(line for line in card.splitlines() if not line.startswith(STAMP))


def plot_lengths(lengths_in: list[int], lengths_kept: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    top = max([*lengths_in, 1])
    bins = [top * i / 40 for i in range(41)]
    ax.hist(lengths_in, bins=bins, alpha=0.45, label=f"generated ({len(lengths_in)})")
    ax.hist(lengths_kept, bins=bins, alpha=0.8, label=f"kept ({len(lengths_kept)})")
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _quantile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0


def render_card(name: str, recipe: Recipe, m: Manifest, lengths_kept: list[int], png: str) -> str:
    metrics = m.metrics
    out = [
        f"# {name}",
        "",
        f"{STAMP} for recipe `{recipe.name}` ({m.started_at}); "
        f"curate config `{m.config_hash}`, generate manifest `{m.inputs.get('generate')}`.",
        "",
    ]
    out += (
        _sources(metrics)
        + _counts(m)
        + _verification(metrics)
        + ["## Decontamination", ""]
        + decontamination_lines(metrics)
    )
    out += mix_section(metrics) + card_section(metrics)  # imported sets' mix; curate.difficulty's yields
    out += _dedup(metrics) + _lengths(lengths_kept, png)
    out += [
        "## Selection",
        "",
        f"Policy `{recipe.curate.select.policy}`"
        + (f" (k = {recipe.curate.select.k})" if recipe.curate.select.policy == "max_k" else "")
        + f"; unverified domains {'kept' if recipe.curate.select.keep_unverified_domains else 'dropped'}.",
        "",
    ]
    return "\n".join(out)


def _sources(metrics: dict[str, Any]) -> list[str]:
    rows = [[s, v["license"], v["rows_in"], v["rows_out"]] for s, v in metrics.get("sources", {}).items()]
    out = ["## Sources and licenses", ""] + markdown_table(
        ["source", "license", "rows in", "rows kept"], rows
    )
    out += ["", "## Teacher and sampling", ""]
    out += [f"- teacher `{t}`: {n} samples" for t, n in metrics.get("teachers", {}).items()]
    out += [f"- sampling `{json.dumps(s, sort_keys=True)}`" for s in metrics.get("sampling", [])]
    gen = metrics.get("generate", {})
    if "n" in gen:
        out.append(
            f"- generate stage: {gen.get('prompts')} prompts x {gen['n']} samples; truncated "
            f"{gen.get('truncated_rate', 0):.1%}, malformed {gen.get('malformed_rate', 0):.1%}"
        )
    if gen.get("template_default_system"):
        out.append(
            f"- the chat template injected a default system prompt: `{gen['template_default_system']}`"
        )
    return out + [""]


def _counts(m: Manifest) -> list[str]:
    out = [
        "## Counts",
        "",
        f"{m.rows_in} samples in, {m.rows_out} kept ({_pct(m.rows_out, m.rows_in)}), "
        f"{m.rows_in - m.rows_out} dropped.",
        "",
        "Yields per filter, in chain order:",
        "",
    ]
    left, rows = m.rows_in, []
    for reason, n in m.dropped.items():
        left -= n
        rows.append([reason, n, _pct(n, m.rows_in), left])
    return out + markdown_table(["dropped as", "rows", "of input", "rows left"], rows) + [""]


def _verification(metrics: dict[str, Any]) -> list[str]:
    rows = [[d, *(c.get(k, 0) for k in VERDICT_COLUMNS)] for d, c in metrics.get("verification", {}).items()]
    out = ["## Verification", "", "Unparseable answers are counted apart from wrong ones.", ""]
    out += markdown_table(["domain", *VERDICT_COLUMNS], rows) + [""]
    out += ["Graders: " + ", ".join(f"`{g}` {n}" for g, n in metrics.get("graders", {}).items()), ""]
    judge = metrics.get("judge")
    if judge is None:
        return out + [
            "Disagreements: only the rule graders ran (no LLM judge), so there were none to count.",
            "",
        ]
    out += [
        f"LLM judge: asked about {judge['asked']} rows, decided {judge['decided']} the rules could not "
        f"grade. Where a rule grader and the judge both graded a row ({judge['both_graded']}), they "
        f"disagreed on {judge['disagreements']}."
    ]
    out += [
        f"- `{e['prompt_id']}` sample {e['sample_index']}: {e['rule']}, judge: {e['judge']}"
        for e in judge["examples"]
    ]
    return out + [""]


def _dedup(metrics: dict[str, Any]) -> list[str]:
    d = metrics.get("dedup", {})
    return [
        "## Deduplication",
        "",
        f"{d.get('prompts', 0)} unique prompt ids: {d.get('exact_duplicates', 0)} exact duplicates, "
        f"{d.get('near_duplicates', 0)} near duplicates (MinHash Jaccard >= {d.get('minhash_threshold')}).",
        "",
    ]


def _lengths(lengths: list[int], png: str) -> list[str]:
    mean = sum(lengths) / len(lengths) if lengths else 0
    return [
        "## Token lengths",
        "",
        f"![completion tokens]({png})",
        "",
        f"Kept samples: mean {mean:.0f}, median {_quantile(lengths, 0.5)}, p90 {_quantile(lengths, 0.9)}, "
        f"max {max(lengths, default=0)} completion tokens.",
        "",
    ]
