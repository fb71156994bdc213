"""Math answers: the completion's \\boxed{} answers against the gold answer, with math-verify (gold first).

Which boxes are graded:
    one gold value                -> the last box (a self-correction "first \\boxed{3}, finally \\boxed{7}" is 7)
    gold with several values      -> the last box, else all boxes as one set, as math-verify does:
                                     gold "1, 2"  vs "x=\\boxed{2} or x=\\boxed{1}"  -> correct
    gold an ordered tuple (a, b)  -> the last box, else all boxes in order: "x=\\boxed{2}, y=\\boxed{1}" is (2, 1)
    gold a letter "C" / \\text{(C)} / \\mathrm{C} / "C. x = 42" -> the letter the last box chooses

Tuples and intervals compare in order ("(2,1)" vs "(1,2)" is wrong, "[2,5)" vs "(2,5)" is wrong); sets and
lists of values compare as sets (MATH writes "Enter all such integers, separated by commas" golds as "1,-2"),
in order with MathOptions(ordered_lists=True) (hendrycks' rule: "10, 4, -2" vs "4, 10, -2" is wrong).
Gold answers and boxes are read after removing what math-verify chokes on: thousands separators "29,\\!322",
stray trailing backslashes "5\\" and "\\boxed{185\\}", a trailing period or comma "30^\\circ.". A gold of
several boxes ("$\\boxed{1}\\boxed{2}$") or one distill cannot read is read by math-verify as a whole.

Published suites (math_suites: Math-Verify's, hendrycks MATH's and NeMo-Skills' own tests): distill is right on
every case where math-verify called as the test calls it is (tests/test_verify_math.py; `distill verify --report`).

math-verify's own timeouts use signal.alarm, valid only in a main thread; here they are off and the caller
times out at the process level (`verify_batch` kills a hung worker and records `timeout`).

    gold "025" (AIME)  vs \\boxed{25}              -> correct
    gold "[2,5)"       vs \\boxed{(2,5)}           -> wrong
    gold "\\frac{1}{2}" vs "the answer is 1/2"     -> unparseable (no \\boxed{}); with phrase_fallback: correct
    gold "$9$"         vs "Answer $ 9 $"          -> unparseable; with extract_unboxed (math-verify's reading): correct
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

from distill.data import gsm8k_answer, last_boxed
from distill.graders.mcq import extract_letter, letter_of

GRADER = "math-verify"
# "... the final answer is $1,072.50." -> "1072.50"; "Answer: -3/4" -> "-3/4"
_ANSWER_PHRASE = re.compile(
    r"answer\s*(?:is|:|=)\s*[^\d\n-]{0,12}(-?\d[\d,]*(?:\.\d+)?(?:/\d+)?)", re.IGNORECASE
)
_GOLD_LETTER = re.compile(r"\(?(?:\\(?:text|textbf|textrm|mathrm|mathbf)\{)?\s*\(?([A-J])\)?\s*\}?\)?")
# "C. x = 42", "(C) 42": a letter and its choice's text
_GOLD_CHOICE = re.compile(r"\(?([A-J])(?:\)|[.:])\s+\S")
# Minerva's closing line "Final Answer: The final answer is $10,455$. I hope it is correct." after the boxes
_FINAL_ANSWER = re.compile(r"final answer is", re.IGNORECASE)
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


def after_last_box(text: str) -> str:
    """The text after the last closed box: "\\boxed{255} So ... the final answer is $10,455$." -> " So ..."."""
    for match in reversed(list(_BOX.finditer(text))):
        inner = all_boxed(text[match.start() :])
        if inner:
            return text[match.end() + len(inner[0]) + 1 :]
    return text


def clean_answer(text: str) -> str:
    """Remove what makes math-verify drop a good answer: "29,\\!322" -> "29322", "5\\" -> "5", "30^\\circ." -> "30^\\circ"."""
    text = re.sub(r"(\d),\\!\s*(?=\d{3})", r"\1", text)  # thousands separator with a negative thin space
    text = text.replace("\\!", "")
    text = re.sub(r"(?<![\\])(\d)\.(?=/)", r"\1", text)  # Minerva's "-1./3"
    return re.sub(r"(?:\\+|[\s.,;])+$", "", text)  # stray trailing backslashes (a "\}" ends no box), periods


class MathOptions(NamedTuple):
    """math-verify's settings (its defaults here); the grader report passes the ones each published test uses."""

    extraction: tuple = ()  # extraction configs for text outside a box; () -> math-verify's default (LaTeX, expr)
    float_rounding: int = 6
    strict: bool = True
    allow_set_relation_comp: bool = False
    # a gold list "10, 4, -2" in order (hendrycks' is_equiv compares strings). Off: a list is a set, as MATH
    # writes it ("Enter all such integers, separated by commas": "1,-2") and math-verify reads it; MATH writes
    # an ordered answer as a tuple "(10, 4, -2)", which always compares in order.
    ordered_lists: bool = False


DEFAULT = MathOptions()


def distinct_boxes(text: str) -> list[str]:
    """Each box's cleaned content once, in order: "\\boxed{1}, \\boxed{1}, \\boxed{2}" -> ["1", "2"]."""
    return list(dict.fromkeys(c for c in (clean_answer(b.strip()) for b in all_boxed(text)) if c))


def gold_text(reference: str) -> str:
    """The gold answer inside a reference: after GSM8K's "####", the last \\boxed{} of a solution, no $...$."""
    ref = reference.strip()
    if "####" in ref:
        return gsm8k_answer(ref)
    boxes = distinct_boxes(ref)
    if len(boxes) > 1:  # every box of a gold, as math-verify reads them: "$\\boxed{1}\\boxed{2}$" is "1, 2"
        return ", ".join(boxes)
    boxed = last_boxed(ref)
    if boxed is not None:
        return clean_answer(boxed.strip())
    if len(ref) > 1 and ref.startswith("$") and ref.endswith("$"):
        ref = ref.strip("$").strip()
    return clean_answer(ref)


def gold_letter(gold: str) -> str | None:
    """ "C", "(C)", "\\text{(C)}", "\\mathrm{E}", "C. x = 42" -> the letter: a multiple-choice gold answer; None otherwise."""
    found = _GOLD_LETTER.fullmatch(gold.strip()) or _GOLD_CHOICE.match(gold.strip())
    return found.group(1) if found else None


def _parse_boxed(text: str) -> list[Any]:
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout is disabled" on every call
    return parse(f"\\boxed{{{text}}}", parsing_timeout=None)


def parse_text(text: str, opts: MathOptions = DEFAULT, gold: bool = False) -> list[Any]:
    """math-verify's own reading of a whole text (its last LaTeX expression or number); a bare gold as $...$."""
    from math_verify import parse

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    text = f"${text}$" if gold and "$" not in text and "\\" not in text else text
    return parse(text, *([list(opts.extraction)] if opts.extraction else []), parsing_timeout=None)


def parse_gold(reference: str, opts: MathOptions = DEFAULT) -> list[Any] | None:
    """math-verify's parse of the gold answer, or None when it yields no expression (a bad reference).

    One box: distill's reading of it (cleaned). Several boxes, or a box that yields nothing: math-verify's reading
    of the whole reference, which joins boxes written as one answer ("\\boxed{1} and \\boxed{2}" is {1, 2}) and
    reads "$1 - \\frac{1}{\\mathrm{e}}$" or a sentence with the answer in it."""
    readings = [
        lambda: _parse_boxed(gold_text(reference)),
        lambda: parse_text(reference.strip(), opts, gold=True),
    ]
    boxes = len(distinct_boxes(reference))
    if boxes > 1 or (
        boxes == 0 and ("\\boxed" in reference or opts.extraction)
    ):  # unclosed box; own settings
        readings.reverse()
    for read in readings:
        parsed = read()
        if len(parsed) >= 2:  # [sympy expression, source string]; a lone string means nothing was understood
            return parsed
    return None


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


def split_top(text: str) -> list[str]:
    """ "10, f(1,2), \\{3,4\\}" -> ["10", "f(1,2)", "\\{3,4\\}"]: commas outside brackets and braces."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    return [*parts, text[start:].strip()]


def ordered_list(reference: str, opts: MathOptions) -> list[list[Any]] | None:
    """With opts.ordered_lists, a gold list of numbers "10, 4, -2" (one answer, not several boxes): its values."""
    parts = split_top(gold_text(reference))
    if not opts.ordered_lists or len(parts) < 2 or not all(parts) or len(distinct_boxes(reference)) > 1:
        return None
    values = [_parse_boxed(p) for p in parts]
    numbers = all(len(v) >= 2 and getattr(v[0], "is_number", False) for v in values)
    return values if numbers else None


def verify_in_order(gold: list[list[Any]], boxes: list[str], opts: MathOptions) -> tuple[str, str]:
    """An ordered gold list against the last box's list, or the boxes one value each, value by value in order."""
    distinct = list(dict.fromkeys(clean_answer(b.strip()) for b in boxes if b.strip()))
    last = split_top(clean_answer(boxes[-1].strip()))
    parts = last if len(last) > 1 or len(distinct) < 2 else distinct
    same = len(parts) == len(gold) and all(
        _matches(g, _parse_boxed(p), opts) for g, p in zip(gold, parts, strict=True)
    )
    return ("correct" if same else "wrong"), ", ".join(parts)


def combined_boxes(boxes: list[str], gold: list[Any]) -> str | None:
    """Several boxes read together: a set for a several-valued gold, a tuple in order for an ordered one."""
    distinct = list(dict.fromkeys(clean_answer(b.strip()) for b in boxes if b.strip()))
    shape, size = gold_shape(gold)
    if len(distinct) < 2 or shape == "one":
        return None
    if shape == "set":
        return ", ".join(distinct)
    if len(distinct) == size and not any("," in b for b in distinct):
        return "(" + ", ".join(distinct) + ")"
    return None


def _matches(gold: list[Any], pred: list[Any], opts: MathOptions = DEFAULT) -> bool:
    from math_verify import verify

    return bool(pred) and verify(
        gold,
        pred,
        float_rounding=opts.float_rounding,
        strict=opts.strict,
        allow_set_relation_comp=opts.allow_set_relation_comp,
        timeout_seconds=None,
    )


def _verify_letter(letter: str, boxes: list[str], answer: str, phrase: bool) -> tuple[str, str | None]:
    """A boxed value instead of a letter ("\\boxed{42}" for gold "C") cannot be mapped to a choice: wrong."""
    if not boxes:
        pred = extract_letter(answer) if phrase else None
        return ("unparseable", None) if pred is None else (("correct" if pred == letter else "wrong"), pred)
    pred = letter_of(boxes[-1])
    return ("correct" if pred == letter else "wrong"), (pred or boxes[-1])


def _verify_unboxed(
    gold: list[Any], answer: str, phrase: bool, extract: bool, opts: MathOptions
) -> tuple[str, str | None]:
    """No box: the "answer is N" phrase, then math-verify's reading of the whole answer, each if switched on."""
    pred_text = answer_phrase(answer) if phrase else None
    pred = _parse_boxed(pred_text) if pred_text else []
    if pred_text is not None:  # a phrase that math-verify cannot read is unparseable, as before
        return (("correct" if _matches(gold, pred, opts) else "wrong") if pred else "unparseable"), pred_text
    pred = parse_text(answer, opts) if extract and answer.strip() else []
    if not pred:
        return "unparseable", None
    return ("correct" if _matches(gold, pred, opts) else "wrong"), str(pred[-1])


def verify_math(
    reference: str,
    answer: str,
    phrase_fallback: bool = False,
    extract_unboxed: bool = False,
    opts: MathOptions = DEFAULT,
) -> tuple[str, str | None]:
    """(verdict, predicted answer): correct | wrong | unparseable | bad_reference.

    Without a \\boxed{} the answer is unparseable unless phrase_fallback (the number after "answer is") or
    extract_unboxed (math-verify's reading of the whole answer: its last LaTeX expression or number) is on."""
    answer = answer or ""
    boxes = all_boxed(answer)
    letter = gold_letter(gold_text(reference))
    if letter is not None:
        return _verify_letter(letter, boxes, answer, phrase_fallback or extract_unboxed)
    gold = parse_gold(reference, opts)
    if gold is None:
        return "bad_reference", None
    after = after_last_box(answer)
    if not boxes or (extract_unboxed and _FINAL_ANSWER.search(after)):
        return _verify_unboxed(gold, after, phrase_fallback, extract_unboxed, opts)
    return _verify_boxed(gold, boxes, reference, opts)


def _verify_boxed(gold: list[Any], boxes: list[str], reference: str, opts: MathOptions) -> tuple[str, str]:
    """The last box (cleaned: "185\\" is 185), else the boxes together; an ordered gold list in order."""
    in_order = ordered_list(reference, opts)
    if in_order is not None:
        return verify_in_order(in_order, boxes, opts)
    cleaned = clean_answer(boxes[-1].strip())
    pred = _parse_boxed(cleaned) if cleaned else []
    if not pred:
        return "unparseable", boxes[-1]
    if _matches(gold, pred, opts):
        return "correct", boxes[-1]
    joined = combined_boxes(boxes, gold)
    if joined is not None and _matches(gold, _parse_boxed(joined), opts):
        return "correct", joined
    return "wrong", boxes[-1]
