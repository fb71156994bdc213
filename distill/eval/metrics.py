"""Evaluation metrics as DeepSeek reports them: pass@1 averaged over k samples (with its standard error),
cons@k by majority vote, and the unbiased pass@k estimator of Chen et al. (2021)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k draws without replacement from n samples, c of them correct, is correct).

    Worked example: n=4 samples, c=1 correct, k=1 -> 1/4; k=4 -> 1.0.
    """
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))


def pass1_mean_se(correct: Sequence[Sequence[bool]]) -> tuple[float, float]:
    """pass@1 = mean over problems of the fraction of correct samples; SE over problems (not samples)."""
    per_problem = [sum(c) / len(c) for c in correct if len(c)]
    if not per_problem:
        return 0.0, 0.0
    mean = sum(per_problem) / len(per_problem)
    if len(per_problem) < 2:
        return mean, 0.0
    var = sum((p - mean) ** 2 for p in per_problem) / (len(per_problem) - 1)
    return mean, math.sqrt(var / len(per_problem))


def majority(answers: Sequence[str | None]) -> str | None:
    """Most common non-empty answer; ties go to the answer seen first (stable, seed-independent)."""
    votes = Counter(a for a in answers if a)
    if not votes:
        return None
    best = max(votes.values())
    return next(a for a in answers if a and votes[a] == best)


def cons_at_k(answers: Sequence[Sequence[str | None]], correct: Sequence[Sequence[bool]]) -> float:
    """cons@k: a problem counts when its majority answer is one that was judged correct."""
    hits = 0
    for preds, oks in zip(answers, correct, strict=True):
        top = majority(preds)
        hits += top is not None and any(p == top and ok for p, ok in zip(preds, oks, strict=True))
    return hits / len(answers) if answers else 0.0


def normalize_answer(text: str | None) -> str | None:
    """Canonical form for voting: whitespace, `\\left/\\right`, `\\!` and trailing dots removed."""
    if text is None:
        return None
    out = text.strip().rstrip(".")
    for junk in ("\\left", "\\right", "\\!", "$", " "):
        out = out.replace(junk, "")
    return out or None


def verdicts_by_problem(rows: Iterable[dict]) -> dict[str, list[bool]]:
    """Each problem's sample verdicts (True: correct) from scored sample rows, keyed by prompt_id: paired_gain's input."""
    out: dict[str, list[bool]] = {}
    for row in rows:
        out.setdefault(row["prompt_id"], []).append(row["verdict"] == "correct")
    return out


def paired_gain(
    after: dict[str, Sequence[bool]], before: dict[str, Sequence[bool]]
) -> tuple[float, float, int]:
    """Mean over shared problems of (after's fraction correct - before's), its SE over problems, and the count.

    Pairing removes the between-problem variance both models share: with after = before + 0.1 on every problem
    the SE is 0, where two unpaired SEs would add up.
    """
    diffs = [sum(after[p]) / len(after[p]) - sum(before[p]) / len(before[p]) for p in after if p in before]
    if not diffs:
        return 0.0, 0.0, 0
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)
    return mean, math.sqrt(var / len(diffs)), len(diffs)
