"""Row checks (R1's filters): each takes a generated row and the filter config, and says whether to drop it.

DeepSeek "filtered out chain-of-thought with mixed languages, long paragraphs, and code blocks"; we add the
usual guards (no gold answer where the recipe grades, truncated or malformed traces, an empty answer after
</think>, degenerate repetition, length bounds).
CHECKS maps each drop reason to its check, in chain order; `first_failure` names the first that fires, so
each dropped row carries exactly one reason. A threshold set to None switches its check off.

    reasoning "x = 2 ... 所以答案是 2 ..." for an English problem   -> mixed_language (CJK words > 5%)
    a 4,000-character line                                        -> long_paragraph
    "```python" inside the reasoning of a math problem            -> code_in_reasoning
    the same 10 words over and over                               -> repetition
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from distill.config import FilterConfig, VerifyConfig

VERIFIABLE = ("math", "code", "mcq")  # domains a grader can check against a gold answer
# One alternative per script; a LaTeX command (\frac) is no language, a lone Latin letter is a variable.
# CJK counts per character (no spaces between words), the others per word. Greek is left out: math uses it.
SCRIPT_RE = re.compile(
    r"\\[A-Za-z]+"
    r"|(?P<latin>[A-Za-z\u00C0-\u024F]{2,})"
    r"|(?P<cjk>[\u3040-\u30FF\u3400-\u4DBF\u4E00-\u9FFF\uF900-\uFAFF\uAC00-\uD7AF])"
    r"|(?P<cyrillic>[\u0400-\u04FF]+)"
    r"|(?P<arabic>[\u0600-\u06FF]+)"
    r"|(?P<hebrew>[\u0590-\u05FF]+)"
    r"|(?P<devanagari>[\u0900-\u097F]+)"
    r"|(?P<thai>[\u0E00-\u0E7F]+)"
)


def trace_text(row: dict[str, Any]) -> str:
    return (row.get("reasoning") or "") + "\n" + (row.get("answer") or "")


def script_counts(text: str) -> Counter:
    """Words per script (CJK: characters); LaTeX commands and one-letter variables not counted."""
    return Counter(m.lastgroup for m in SCRIPT_RE.finditer(text) if m.lastgroup)


def dominant_script(text: str) -> str:
    counts = script_counts(text)
    return counts.most_common(1)[0][0] if counts else "latin"


def foreign_ratio(problem: str, text: str) -> float:
    """Share of the trace's words written in a script other than the problem's main one."""
    script = dominant_script(problem)
    if script == "latin" and text.isascii():  # the common case, at C speed
        return 0.0
    counts = script_counts(text)
    total = sum(counts.values())
    return (total - counts[script]) / total if total else 0.0


def repeat_ratio(text: str, n: int) -> float:
    """Share of n-word windows that repeat an earlier window (0 for text shorter than 2n words)."""
    ws = text.split()
    if len(ws) < 2 * n:
        return 0.0
    windows = list(zip(*(ws[i:] for i in range(n)), strict=False))
    return 1.0 - len(set(windows)) / len(windows)


def needs_reference(row: dict[str, Any], verify: VerifyConfig) -> bool:
    """A row needs a gold answer only where the recipe grades it: its domain's verification is on, and the
    recipe does not take the set's own verdict (trust_source_flags with a source_verified value) instead."""
    domain = row.get("domain")
    if domain not in VERIFIABLE or not getattr(verify, domain):
        return False
    return not (verify.trust_source_flags and row.get("source_verified") is not None)


def no_reference(row: dict[str, Any], verify: VerifyConfig) -> bool:
    ref = row.get("reference")
    return (ref is None or not str(ref).strip()) and needs_reference(row, verify)


def truncated(row: dict[str, Any], cfg: FilterConfig) -> bool:
    hit = "truncated" in (row.get("flags") or []) or row.get("finish_reason") == "length"
    return cfg.drop_truncated and hit


def malformed(row: dict[str, Any], cfg: FilterConfig) -> bool:
    return cfg.drop_malformed and "malformed" in (row.get("flags") or [])


def empty_answer(row: dict[str, Any], cfg: FilterConfig) -> bool:
    """A closed </think> with nothing after it: R1's format is reasoning, then a summary that states the
    answer; a target without one teaches the student to stop after thinking."""
    closed = "malformed" not in (row.get("flags") or [])
    return cfg.drop_empty_answer and closed and not (row.get("answer") or "").strip()


def too_short(row: dict[str, Any], cfg: FilterConfig) -> bool:
    return (row.get("completion_tokens") or 0) < cfg.min_tokens


def too_long(row: dict[str, Any], cfg: FilterConfig) -> bool:
    return cfg.max_tokens is not None and (row.get("completion_tokens") or 0) > cfg.max_tokens


def mixed_language(row: dict[str, Any], cfg: FilterConfig) -> bool:
    if cfg.max_foreign_script_ratio is None:
        return False
    return foreign_ratio(row.get("problem") or "", trace_text(row)) > cfg.max_foreign_script_ratio


def long_paragraph(row: dict[str, Any], cfg: FilterConfig) -> bool:
    if cfg.max_paragraph_chars is None:
        return False
    return max(map(len, trace_text(row).split("\n"))) > cfg.max_paragraph_chars


def code_in_reasoning(row: dict[str, Any], cfg: FilterConfig) -> bool:
    hit = row.get("domain") != "code" and "```" in (row.get("reasoning") or "")
    return cfg.drop_code_in_noncode and hit


def repetition(row: dict[str, Any], cfg: FilterConfig) -> bool:
    if cfg.max_repeat_ngram_ratio is None:
        return False
    return repeat_ratio(trace_text(row), cfg.repeat_ngram) > cfg.max_repeat_ngram_ratio


# drop reason -> its check, in chain order (curate.run splices these into its STEPS, after no_reference,
# which reads the verify settings rather than the filters)
CHECKS: dict[str, Callable[[dict[str, Any], FilterConfig], bool]] = {
    "truncated": truncated,
    "malformed": malformed,
    "empty_answer": empty_answer,
    "too_short": too_short,
    "too_long": too_long,
    "mixed_language": mixed_language,
    "long_paragraph": long_paragraph,
    "code_in_reasoning": code_in_reasoning,
    "repetition": repetition,
}


def first_failure(row: dict[str, Any], cfg: FilterConfig, verify: VerifyConfig | None = None) -> str | None:
    """The drop reason of the first check that fails, or None when the row passes them all."""
    if no_reference(row, verify or VerifyConfig()):
        return "no_reference"
    return next((reason for reason, check in CHECKS.items() if check(row, cfg)), None)
