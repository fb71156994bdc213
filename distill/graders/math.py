"""Math answers: the completion's \\boxed{} answers against the gold answer, with math-verify (gold first).

Which boxes are graded:
    one gold value                -> the last box (a self-correction "first \\boxed{3}, finally \\boxed{7}" is 7)
    gold with several values      -> the last box, else all boxes as one set, as math-verify does:
                                     gold "1, 2"  vs "x=\\boxed{2} or x=\\boxed{1}"  -> correct
    gold an ordered tuple (a, b)  -> the last box, else all boxes in order: "x=\\boxed{2}, y=\\boxed{1}" is (2, 1)
    gold a letter "C" / \\text{(C)} -> the letter the last box chooses: \\boxed{C. x = 42} is C

Tuples and intervals compare in order ("(2,1)" vs "(1,2)" is wrong, "[2,5)" vs "(2,5)" is wrong); sets and
lists of values compare as sets. Gold answers are read after removing what math-verify chokes on:
thousands separators "29,\\!322", stray trailing backslashes "5\\", a trailing period or comma "30^\\circ.".

math-verify's own timeouts use signal.alarm, valid only in a main thread; here they are off and the caller
times out at the process level (`verify_batch` kills a hung worker and records `timeout`).

    gold "025" (AIME)  vs \\boxed{25}              -> correct
    gold "[2,5)"       vs \\boxed{(2,5)}           -> wrong
    gold "\\frac{1}{2}" vs "the answer is 1/2"     -> unparseable (no \\boxed{}); with phrase_fallback: correct
"""

from __future__ import annotations

import logging
import re
from typing import Any

from distill.data import gsm8k_answer, last_boxed
from distill.graders.mcq import extract_letter, letter_of

GRADER = "math-verify"
# "... the final answer is $1,072.50." -> "1072.50"; "Answer: -3/4" -> "-3/4"
_ANSWER_PHRASE = re.compile(
    r"answer\s*(?:is|:|=)\s*[^\d\n-]{0,12}(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)", re.IGNORECASE
)
_GOLD_LETTER = re.compile(r"\(?(?:\\text(?:bf)?\{)?\s*\(?([A-J])\)?\s*\}?\)?")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def answer_phrase(text: str) -> str | None:
    """The number after the last "answer is"/"answer:" of a text without \\boxed{}, commas removed."""
    found = _ANSWER_PHRASE.findall(text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def all_boxed(text: str) -> list[str]:
    """Contents of every \\boxed{...} / \\fbox{...} in order, braces balanced (an unclosed one is skipped)."""
    out = []
    for match in _BOX.finditer(text):
        depth = 0
        for i in range(match.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                out.append(text[match.end() : i])
                break
    return out


def clean_gold(text: str) -> str:
    """Remove what makes math-verify drop a good gold answer: "29,\\!322" -> "29322", "5\\" -> "5", "30^\\circ." -> "30^\\circ"."""
    text = re.sub(r"(\d),\\!\s*(?=\d{3})", r"\1", text)  # thousands separator with a negative thin space
    text = text.replace("\\!", "")
    text = re.sub(r"(?<![\\])(\d)\.(?=/)", r"\1", text)  # Minerva's "-1./3"
    return re.sub(r"(?:\\+|[\s.,;])+$", "", text)  # stray trailing backslashes (a "\}" ends no box), periods


def gold_text(reference: str) -> str:
    """The gold answer inside a reference: after GSM8K's "####", the last \\boxed{} of a solution, no $...$."""
    ref = reference.strip()
    if "####" in ref:
        return gsm8k_answer(ref)
    boxed = last_boxed(ref)
    if boxed is not None:
        return clean_gold(boxed.strip())
    if len(ref) > 1 and ref.startswith("$") and ref.endswith("$"):
        ref = ref.strip("$").strip()
    return clean_gold(ref)


def gold_letter(gold: str) -> str | None:
    """ "C", "(C)", "\\text{(C)}", "\\textbf{C}" -> "C": a multiple-choice gold answer; None otherwise."""
    found = _GOLD_LETTER.fullmatch(gold.strip())
    return found.group(1) if found else None


def _parse_boxed(text: str) -> list[Any]:
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" on every call
    return parse(f"\\boxed{{{text}}}", parsing_timeout=None)


def parse_gold(reference: str) -> list[Any] | None:
    """math-verify's parse of the gold answer, or None when it yields no expression (a bad reference)."""
    parsed = _parse_boxed(gold_text(reference))
    # parse returns [sympy expression, source string]; a lone string means nothing was understood
    return parsed if len(parsed) >= 2 else None


def gold_shape(gold: list[Any]) -> tuple[str, int]:
    """("set" | "ordered" | "one", number of values) of a parsed gold answer."""
    from sympy import FiniteSet, Interval, Tuple

    expr = gold[0]
    if isinstance(expr, FiniteSet) and len(expr) > 1:
        return "set", len(expr)
    if isinstance(expr, Tuple):
        return "ordered", len(expr)
    if isinstance(expr, Interval) and not (expr.left_open ^ expr.right_open):  # "(1,2)" may be a point
        return "ordered", 2
    return "one", 1


def combined_boxes(boxes: list[str], gold: list[Any]) -> str | None:
    """Several boxes read together: a set for a several-valued gold, a tuple in order for an ordered one."""
    distinct = list(dict.fromkeys(b.strip() for b in boxes if b.strip()))
    shape, size = gold_shape(gold)
    if len(distinct) < 2 or shape == "one":
        return None
    if shape == "set":
        return ", ".join(distinct)
    if len(distinct) == size and not any("," in b for b in distinct):
        return "(" + ", ".join(distinct) + ")"
    return None


def _matches(gold: list[Any], pred: list[Any]) -> bool:
    from math_verify import verify

    return bool(pred) and verify(gold, pred, timeout_seconds=None)


def _verify_letter(letter: str, boxes: list[str], answer: str, phrase: bool) -> tuple[str, str | None]:
    """A boxed value instead of a letter ("\\boxed{42}" for gold "C") cannot be mapped to a choice: wrong."""
    if not boxes:
        pred = extract_letter(answer) if phrase else None
        return ("unparseable", None) if pred is None else (("correct" if pred == letter else "wrong"), pred)
    pred = letter_of(boxes[-1])
    return ("correct" if pred == letter else "wrong"), (pred or boxes[-1])


def verify_math(reference: str, answer: str, phrase_fallback: bool = False) -> tuple[str, str | None]:
    """(verdict, predicted answer): correct | wrong | unparseable | bad_reference."""
    answer = answer or ""
    boxes = all_boxed(answer)
    letter = gold_letter(gold_text(reference))
    if letter is not None:
        return _verify_letter(letter, boxes, answer, phrase_fallback)
    gold = parse_gold(reference)
    if gold is None:
        return "bad_reference", None
    pred_text = boxes[-1] if boxes else (answer_phrase(answer) if phrase_fallback else None)
    if pred_text is None or not pred_text.strip():
        return "unparseable", pred_text
    pred = _parse_boxed(pred_text)
    if not pred:
        return "unparseable", pred_text
    if _matches(gold, pred):
        return "correct", pred_text
    joined = combined_boxes(boxes, gold)
    if joined is not None and _matches(gold, _parse_boxed(joined)):
        return "correct", joined
    return "wrong", pred_text
