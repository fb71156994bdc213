"""Math answers: the last \\boxed{} of the completion against the gold answer, with math-verify (gold first).

math-verify's own timeouts use signal.alarm, valid only in a main thread; here they are off and the caller
times out at the process level (`verify_batch` kills a hung worker and records `timeout`).

    gold "025" (AIME)  vs \\boxed{25}              -> correct
    gold "18" (GSM8K "#### 18") vs \\boxed{18.0}   -> correct
    gold "90^\\circ"    vs \\boxed{90}              -> correct
    gold "[2,5)"       vs \\boxed{(2,5)}           -> wrong
    gold "\\frac{1}{2}" vs "the answer is 1/2"     -> unparseable (no \\boxed{}); with phrase_fallback: correct
"""

from __future__ import annotations

import logging
import re
from typing import Any

from distill.data import gsm8k_answer, last_boxed

GRADER = "math-verify"
# "... the final answer is $1,072.50." -> "1072.50"; "Answer: -3/4" -> "-3/4"
_ANSWER_PHRASE = re.compile(
    r"answer\s*(?:is|:|=)\s*[^\d\n-]{0,12}(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)", re.IGNORECASE
)


def answer_phrase(text: str) -> str | None:
    """The number after the last "answer is"/"answer:" of a text without \\boxed{}, commas removed."""
    found = _ANSWER_PHRASE.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def gold_text(reference: str) -> str:
    """The gold answer inside a reference: after GSM8K's "####", the last \\boxed{} of a solution, no $...$."""
    ref = reference.strip()
    if "####" in ref:
        return gsm8k_answer(ref)
    boxed = last_boxed(ref)
    if boxed is not None:
        return boxed.strip()
    if len(ref) > 1 and ref.startswith("$") and ref.endswith("$"):
        return ref.strip("$").strip()
    return ref


def _parse_boxed(text: str) -> list[Any]:
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" on every call
    return parse(f"\\boxed{{{text}}}", parsing_timeout=None)


def parse_gold(reference: str) -> list[Any] | None:
    """math-verify's parse of the gold answer, or None when it yields no expression (a bad reference)."""
    parsed = _parse_boxed(gold_text(reference))
    # parse returns [sympy expression, source string]; a lone string means nothing was understood
    return parsed if len(parsed) >= 2 else None


def verify_math(reference: str, answer: str, phrase_fallback: bool = False) -> tuple[str, str | None]:
    """(verdict, predicted answer): correct | wrong | unparseable | bad_reference."""
    from math_verify import verify

    gold = parse_gold(reference)
    if gold is None:
        return "bad_reference", None
    pred_text = last_boxed(answer or "")
    if pred_text is None and phrase_fallback:
        pred_text = answer_phrase(answer or "")
    if pred_text is None or not pred_text.strip():
        return "unparseable", pred_text
    pred = _parse_boxed(pred_text)
    if not pred:
        return "unparseable", pred_text
    return ("correct" if verify(gold, pred, timeout_seconds=None) else "wrong"), pred_text
