"""Math verification: answer formats from the real MATH-500, GSM8K and AIME files, gold parsed first."""

from __future__ import annotations

import pytest

from distill.config import VerifyConfig
from distill.data import load_prompts, raw_records
from distill.graders import Verdict, verify_batch, verify_row
from distill.graders.math import MathOptions, gold_letter, gold_text, verify_math
from distill.graders.report import math_suite_parts, print_report

CASES = [  # (gold reference, completion answer, expected verdict)
    ("025", "So the answer is \\boxed{25}.", "correct"),  # zero-padded AIME
    ("25", "\\boxed{025}", "correct"),
    ("73", "\\boxed{037}", "wrong"),
    ("She earns $18 a day.\n#### 18", "\\boxed{18}", "correct"),  # a raw GSM8K solution
    ("70000", "\\boxed{70,000}", "correct"),
    ("18", "\\boxed{18.0}", "correct"),
    ("90^\\circ", "\\boxed{90}", "correct"),  # degrees
    ("336^\\circ", "\\boxed{336^{\\circ}}", "correct"),
    ("\\frac{270}7\\text{ degrees}", "\\boxed{\\frac{270}{7}}", "correct"),
    ("\\frac{1}{2}", "\\boxed{0.5}", "correct"),  # fractions
    ("\\dfrac{17}{50}", "\\boxed{\\frac{17}{50}}", "correct"),
    ("\\frac{3}{56}", "\\boxed{\\frac{3}{55}}", "wrong"),
    ("(3,4]", "\\boxed{(3, 4]}", "correct"),  # intervals: open and closed ends matter
    ("(3,4]", "\\boxed{[3,4]}", "wrong"),
    ("(2,\\infty)", "\\boxed{(2, \\infty)}", "correct"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3,\\frac{\\pi}{2})}", "correct"),
    ("\\text{Evelyn}", "\\boxed{\\text{Evelyn}}", "correct"),
    ("\\frac{\\sqrt{3}}{3}", "\\boxed{\\frac{1}{\\sqrt{3}}}", "correct"),
    ("$n^{2}-n-1$", "\\boxed{n^2-n-1}", "correct"),  # OlympiadBench wraps answers in $...$
    ("7", "the answer is 7", "unparseable"),  # no \boxed{}: never silently wrong
    ("7", "\\boxed{}", "unparseable"),
    ("7", "first \\boxed{3}, finally \\boxed{7}", "correct"),  # the last box counts
    ("", "\\boxed{7}", "bad_reference"),
    ("\\frac{", "\\boxed{7}", "bad_reference"),
]

# issue 15: several boxes, ordered tuples, gold answers math-verify misreads, letters
MULTI_CASES = [  # (gold reference, completion answer, expected verdict)
    ("1, 2", "x = \\boxed{2} or x = \\boxed{1}", "correct"),  # a solution set spread over boxes
    ("-3, 3", "the roots are $\\boxed{-3}$ and $\\boxed{3}$.", "correct"),
    ("1, 2", "x = \\boxed{2} or x = \\boxed{3}", "wrong"),
    ("1, 2, 3", "\\boxed{1}, \\boxed{2}", "wrong"),  # a value missing
    ("1, 2", "\\boxed{1}, \\boxed{2}, \\boxed{5}", "wrong"),  # an extra value
    ("1, 2", "\\boxed{1}\n\nso both: \\boxed{1, 2}", "correct"),  # the last box already holds the set
    ("(1,2),(3,4)", "\\boxed{(3,4)} and \\boxed{(1,2)}", "correct"),  # pairs: a set of ordered pairs
    ("(1,2),(3,4)", "\\boxed{(2,1)} and \\boxed{(4,3)}", "wrong"),  # each pair is ordered
    ("\\{1, 2\\}", "\\boxed{2, 1}", "correct"),
    ("x=1 \\text{ or } x=2", "\\boxed{x=2}, \\boxed{x=1}", "correct"),
    ("(2,1)", "\\boxed{(2, 1)}", "correct"),  # ordered tuples compare in order
    ("(2,1)", "\\boxed{(1, 2)}", "wrong"),
    ("(3,1,2)", "\\boxed{(1,2,3)}", "wrong"),
    ("(2,1)", "x = \\boxed{2}, y = \\boxed{1}", "correct"),  # boxes of an ordered answer, in order
    ("(2,1)", "x = \\boxed{1}, y = \\boxed{2}", "wrong"),
    ("[2,5)", "\\boxed{(2,5]}", "wrong"),  # intervals: ends in order, open/closed kept
    ("(-\\infty, 2]", "\\boxed{(-\\infty,2]}", "correct"),
    ("7", "\\boxed{3} then \\boxed{7}", "correct"),  # one gold value: the last box
    ("7", "\\boxed{7} then \\boxed{3}", "wrong"),
    ("5\\", "\\boxed{5}", "correct"),  # stray trailing backslash in the gold
    ("12\\\\", "\\boxed{12}", "correct"),
    ("\\dfrac{1}{29,\\!322,\\!216}", "\\boxed{\\frac{1}{29322216}}", "correct"),  # \\! thousands separators
    ("10,\\!080", "\\boxed{10080}", "correct"),
    ("\\!\\sqrt{33}", "\\boxed{\\sqrt{33}}", "correct"),
    ("30^\\circ.", "\\boxed{30^\\circ}", "correct"),  # a trailing period (MATH train)
    ("-1./3", "\\boxed{-\\frac{1}{3}}", "correct"),  # Minerva's "-1./3"
    ("C", "\\boxed{C. x = 42}", "correct"),  # multiple choice inside a math set
    ("C", "\\boxed{(C) 42}", "correct"),
    ("\\text{(C)}", "\\boxed{\\text{(C)}}", "correct"),
    ("\\text{(E)},", "\\boxed{E}", "correct"),
    ("C", "\\boxed{B. x = 41}", "wrong"),
    ("C", "\\boxed{42}", "wrong"),  # a value, not a choice
    ("C", "the answer is C", "unparseable"),  # no box (phrase_fallback off)
]

# issue 22: the cases where distill was behind math-verify called directly on the published suites
ISSUE22_CASES = [  # (gold reference, completion answer, expected verdict)
    ("$\\boxed{1}\\boxed{2}$", "$\\boxed{1,2}$", "correct"),  # Math-Verify tests/test_all.py: a gold of boxes
    ("\\(\\boxed{1}\\) and \\(\\boxed{-2}\\).", "$\\boxed{-2,1}$.", "correct"),  # tests/test_numina_cases.py
    (
        "\\boxed{1} no no no no no \\boxed{2}",
        "$\\boxed{1,2}$",
        "wrong",
    ),  # tests/test_open_thoughts.py: not one answer
    ("E", "\\boxed{\\mathrm{E}}", "correct"),  # NeMo-Skills tests/test_math_equal.py, both orders
    ("\\mathrm{E}", "\\boxed{E}", "correct"),
    ("E", "\\boxed{\\mathrm{E}*2}", "wrong"),
    ("A", "\\boxed{\\textbf{A}}", "correct"),
    ("185", "\\boxed{185\\}", "correct"),  # a stray \\} before the box closes
    ("185\\", "\\boxed{185\\}", "correct"),
    ("C. x = 42", "\\boxed{C}", "correct"),  # a multiple-choice gold written with its choice's text
    ("(C) 42", "\\boxed{\\text{(C)}}", "correct"),
    ("C. x = 42", "\\boxed{B}", "wrong"),
    ("C. x = 42", "\\boxed{42}", "wrong"),  # a value, not a choice
    ("1,-2", "\\boxed{-2, 1}", "correct"),  # MATH-500 "Enter all such integers, separated by commas": a set
    ("10, 4, -2", "\\boxed{4, 10, -2}", "correct"),  # a list is a set unless ordered_lists (below)
    ("(10, 4, -2)", "\\boxed{(4, 10, -2)}", "wrong"),  # a tuple always compares in order
]


@pytest.mark.parametrize(("reference", "answer", "expected"), CASES + MULTI_CASES + ISSUE22_CASES)
def test_math_cases(reference, answer, expected):
    assert verify_math(reference, answer)[0] == expected


def test_gold_text():
    assert gold_text("so #### 1,234") == "1234"
    assert gold_text("the area is $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert gold_text("$x+1$") == "x+1"


@pytest.mark.parametrize(
    ("name", "limit"),
    [("math500", None), ("aime24", None), ("aime25", None), ("amc23", None), ("gsm8k", 300)],
)
def test_real_gold_answers_verify_against_themselves(data_dir, name, limit):
    """Every gold answer parses, matches itself boxed, and does not match a different number."""
    rows = load_prompts(name, "test", limit)
    for row in rows:
        ref = row["reference"]
        expected = ("correct", gold_letter(ref) or ref)  # a choice "\\text{(C)}" is graded as its letter
        assert verify_math(ref, f"The final answer is $\\boxed{{{ref}}}$.") == expected, row["prompt_id"]
    numeric = [r for r in rows if r["reference"].lstrip("-").isdigit()]
    for row in numeric[:100]:
        wrong = str(int(row["reference"]) + 1)
        assert verify_math(row["reference"], f"\\boxed{{{wrong}}}")[0] == "wrong", row["prompt_id"]


def test_real_gsm8k_raw_solution_as_reference(data_dir):
    """The raw GSM8K solution (#### marker) works as a reference too."""
    for rec in raw_records("gsm8k", "test")[:50]:
        final = rec["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        assert verify_math(rec["answer"], f"\\boxed{{{final}}}")[0] == "correct"


def test_aime_zero_padding_from_the_real_file(data_dir):
    padded = [r for r in load_prompts("aime24", "test") if r["reference"].startswith("0")]
    assert padded, "aime24 has zero-padded answers such as 025"
    for row in padded:
        assert verify_math(row["reference"], f"\\boxed{{{int(row['reference'])}}}")[0] == "correct"


def test_verify_row_dispatch_and_switches():
    cfg = VerifyConfig()
    assert verify_row("math", "025", "\\boxed{25}", cfg) == Verdict("correct", "math-verify", "25")
    assert verify_row("math", None, "\\boxed{25}", cfg).verdict == "bad_reference"
    assert verify_row("general", "x", "x", cfg) is None  # no rule grader
    assert verify_row("math", "1", "\\boxed{1}", VerifyConfig(math=False)) is None
    ordered = VerifyConfig(math_ordered_lists=True)  # hendrycks' rule: a gold list in order
    assert verify_row("math", "10, 4, -2", "\\boxed{4, 10, -2}", ordered).verdict == "wrong"
    assert verify_row("math", "10, 4, -2", "\\boxed{4, 10, -2}", cfg).verdict == "correct"
    extract = VerifyConfig(math_extract_unboxed=True)
    assert verify_row("math", "$9$", "Answer $ 9 $", extract) == Verdict("correct", "math-verify", "9")
    assert verify_row("math", "$9$", "Answer $ 9 $", cfg).verdict == "unparseable"


def test_batch_times_out_a_hung_item_and_keeps_going():
    """sympy hangs on 9^(9^(9^9)): the worker is killed at the deadline, the item is `timeout`, the rest finish."""
    items = [
        ("math", "1", "\\boxed{9^{9^{9^{9}}}}"),
        ("math", "025", "\\boxed{25}"),
        ("mcq", "B", "Answer: B"),
        ("general", None, "hello"),
        ("math", "\\frac{1}{2}", "\\boxed{0.5}"),
    ]
    out = verify_batch(items, VerifyConfig(timeout_s=2.0, workers=2))
    assert [v.verdict if v else None for v in out] == ["timeout", "correct", "correct", None, "correct"]
    assert out[0].grader == "math-verify"
    # one worker, one chunk of 8: the items after the hung one are requeued to a fresh worker
    chunk = [("math", str(k), f"\\boxed{{{k}}}") for k in range(8)]
    chunk[3] = ("math", "1", "\\boxed{9^{9^{9^{9}}}}")
    out = verify_batch(chunk, VerifyConfig(timeout_s=2.0, workers=1))
    assert [v.verdict for v in out] == ["correct"] * 3 + ["timeout"] + ["correct"] * 4


# (reference, answer without \boxed{}, expected with verify.math_answer_phrase on)
PHRASE_CASES = [
    ("72", "In May she sold 24.\n\nSo, the answer is 72.", "correct"),
    ("1072", "The final answer is: $1,072.", "correct"),
    ("10", "Answer: 12\n\nI hope this helps.", "wrong"),
    ("10", "first the answer is 3, then we fix it: the answer is 10", "correct"),  # the last phrase counts
    ("-3/4", "so the answer is -3/4", "correct"),
    ("7", "There are 7 apples.", "unparseable"),  # no phrase, no box: still never silently wrong
    ("7", "\\boxed{7} although the answer is 9", "correct"),  # a box always wins
]


@pytest.mark.parametrize(("reference", "answer", "expected"), PHRASE_CASES)
def test_answer_phrase_fallback(reference, answer, expected):
    assert verify_math(reference, answer, phrase_fallback=True)[0] == expected
    if "boxed" not in answer:
        assert verify_math(reference, answer)[0] == "unparseable"  # off by default (R1 boxes its answers)


# verify_math(..., opts=MathOptions(ordered_lists=True)): hendrycks' rule, a gold list compares in order
ORDERED_CASES = [
    ("10, 4, -2", "\\boxed{10, 4, -2}", "correct"),
    ("10, 4, -2", "\\boxed{4, 10, -2}", "wrong"),  # hendrycks math_equivalence_test.py::test_order
    ("0.1, 4, 2", "\\boxed{4, .1, 2}", "wrong"),  # ::test_decimals
    ("0.1, 4, 2", "\\boxed{.1, 4, 2}", "correct"),
    ("10, 4, -2", "x = \\boxed{10}, y = \\boxed{4}, z = \\boxed{-2}", "correct"),  # one box a value, in order
    ("10, 4, -2", "\\boxed{-2}, \\boxed{4}, \\boxed{10}", "wrong"),
    ("10, 4, -2", "\\boxed{10, 4}", "wrong"),  # a value missing
    ("\\boxed{1} and \\boxed{-2}", "\\boxed{-2, 1}", "correct"),  # a gold of several boxes stays a set
]


@pytest.mark.parametrize(("reference", "answer", "expected"), ORDERED_CASES)
def test_ordered_lists_compare_in_order(reference, answer, expected):
    assert verify_math(reference, answer, opts=MathOptions(ordered_lists=True))[0] == expected


MINERVA = (  # Math-Verify tests/test_all.py::test_math_extraction_additional_cases, abridged: boxes, then the answer
    "so the interest earned is $0.04 \\cdot 10,000 \\cdot \\frac{1}{2} = \\boxed{200}$ ... "
    "$0.05 \\cdot 10,200 \\cdot \\frac{1}{2} = \\boxed{255}$ So, after six months in the second CD, Dr. Zaius has "
    "$10,200 + $255 = $10,455. Final Answer: The final answer is $10,455$. I hope it is correct."
)
# verify_math(..., extract_unboxed=True): no box, the answer read whole as math-verify reads it
EXTRACT_CASES = [  # (reference, answer, expected with extract_unboxed, expected by default)
    ("$9$", "Answer $ 9 $", "correct", "unparseable"),  # Math-Verify tests/test_all.py::test_latex_notation
    ("1000.99", "the number is not 10 which is 1,000.99€", "correct", "unparseable"),
    ("$[0,1)$", "Final Answer: The final answer is $(0, 1)$. I hope it is correct.", "wrong", "unparseable"),
    ("$10455$", MINERVA, "correct", "wrong"),  # the closing "final answer is" after the boxes counts
    ("7", "there is nothing to read here", "unparseable", "unparseable"),
]


@pytest.mark.parametrize(("reference", "answer", "extracted", "default"), EXTRACT_CASES)
def test_extract_unboxed(reference, answer, extracted, default):
    assert verify_math(reference, answer, extract_unboxed=True)[0] == extracted
    assert verify_math(reference, answer)[0] == default  # R1 boxes its answers: off by default


AHEAD = [  # (suite, test, gold): where math-verify called directly is wrong and distill right
    ("hendrycks", "test_order", "10, 4, -2"),  # lists in order (its is_equiv compares strings)
    ("hendrycks", "test_decimals", "0.1, 4, 2"),
    ("nemo-skills", "test_correct_examples", "185"),  # \\boxed{185\\}: math-verify reads no number
    ("nemo-skills", "test_correct_examples", "185\\"),
    ("nemo-skills", "test_correct_examples", "185\\"),
    ("nemo-skills", "test_correct_examples", "\\$10"),  # a gold "\\$10": math-verify reads nothing
]


def test_published_suites_distill_right_wherever_math_verify_is(capsys):
    """Math-Verify's, hendrycks' and NeMo-Skills' own tables, each case's expected verdict (math_suites):
    math-verify called as each test calls it, and distill; distill is never wrong where math-verify is right."""
    parts = {p.title.split()[1]: p for p in math_suite_parts()}
    counts = {k: (p.total, p.agree["distill"], p.agree["math-verify"]) for k, p in parts.items()}
    assert counts == {"math-verify": (269, 269, 269), "hendrycks": (16, 16, 14), "nemo-skills": (60, 60, 56)}
    rows = [(k, row) for k, p in parts.items() for row in p.disagreements]
    assert [(k, r["test"], r["gold"]) for k, r in rows] == AHEAD
    assert all((r["distill"] == "correct") == (r["expected"] == "correct") for _, r in rows)
    print_report(list(parts.values()))  # distill verify --report prints each suite and every disagreement
    out = capsys.readouterr().out
    assert "math: hendrycks tests' own cases" in out and "│ 16    │ 16/16         │ 14/16" in out
    assert "test_decimals" in out and "\\boxed{185\\}" in out
