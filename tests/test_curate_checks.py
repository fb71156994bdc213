"""R1 row checks, table-driven: each inline row with the drop reason it must get (None = passes)."""

from __future__ import annotations

import pytest

from distill.config import FilterConfig
from distill.curate import checks

PROBLEM = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in total?"
GOOD = "Natalia sold 48 clips in April.\nIn May she sold 48 / 2 = 24 clips.\nSo the total is 48 + 24 = 72."


def row(**kw) -> dict:
    base = {
        "prompt_id": "p",
        "domain": "math",
        "problem": PROBLEM,
        "reference": "72",
        "reasoning": GOOD,
        "answer": "The answer is \\boxed{72}.",
        "finish_reason": "stop",
        "flags": [],
        "completion_tokens": 60,
    }
    return {**base, **kw}


LOOP = "so we add the two numbers again and check the sum once more " * 40
LONG_LINE = " ".join(f"w{i}" for i in range(700))  # 3,800 characters, no line break, no repeats
CASES = [
    (row(), None),
    (row(reference=None), "no_reference"),
    (row(reference="  "), "no_reference"),
    (row(domain="general", reference=None), None),  # nothing to verify against: selection decides
    (row(flags=["truncated"]), "truncated"),
    (row(finish_reason="length"), "truncated"),
    (row(flags=["truncated", "malformed"]), "truncated"),  # the first check that fires names the row
    (row(flags=["malformed"]), "malformed"),
    (row(completion_tokens=0), "too_short"),
    (row(completion_tokens=40_000), "too_long"),
    (
        row(reasoning=GOOD + "\n所以答案是七十二，我们再检查一遍：四十八加二十四等于七十二。"),
        "mixed_language",
    ),
    (
        row(
            reasoning=GOOD
            + "\nИтак, ответ семьдесят два, проверим ещё раз: сорок восемь плюс двадцать четыре."
        ),
        "mixed_language",
    ),
    (
        row(reasoning=GOOD + "\nA short aside follows, which we keep 好 as written here."),
        None,
    ),  # 1 in 30: < 5%
    (row(reasoning=GOOD + "\nUsing $\\alpha + \\beta = \\pi$ and $\\theta$."), None),  # Greek/LaTeX are math
    (
        row(
            problem="小明有48个夹子，五月卖出一半。一共卖了多少个？",
            reasoning="四十八加二十四等于七十二。",
            answer="答案是 $\\boxed{72}$。",
        ),
        None,
    ),
    (
        row(
            problem="小明有48个夹子，五月卖出一半。一共卖了多少个？",
            reasoning="We add forty eight and twenty four to get seventy two clips in total here.",
        ),
        "mixed_language",
    ),
    (row(reasoning=LONG_LINE), "long_paragraph"),
    (row(reasoning=LONG_LINE.replace("0 ", "0\n")), None),
    (row(reasoning=GOOD + "\n```python\nprint(48 + 24)\n```"), "code_in_reasoning"),
    (row(domain="code", reference="{}", reasoning="Plan:\n```python\nx = 1\n```"), None),
    (row(reasoning=LOOP.replace(" once more ", "\n")), "repetition"),
    (row(reasoning="\n".join(f"step {i} adds {i} more" for i in range(200))), None),
]


@pytest.mark.parametrize(("r", "reason"), CASES)
def test_first_failure(r, reason):
    assert checks.first_failure(r, FilterConfig()) == reason


@pytest.mark.parametrize(
    ("r", "off"),
    [
        (row(flags=["truncated"]), {"drop_truncated": False}),
        (row(flags=["malformed"]), {"drop_malformed": False}),
        (row(reasoning=GOOD + "\n所以答案是七十二，我们再检查一遍。"), {"max_foreign_script_ratio": None}),
        (row(reasoning=LONG_LINE), {"max_paragraph_chars": None}),
        (row(reasoning=GOOD + "\n```\nx\n```"), {"drop_code_in_noncode": False}),
        (row(reasoning=LOOP), {"max_repeat_ngram_ratio": None, "max_paragraph_chars": None}),
        (row(completion_tokens=40_000), {"max_tokens": None}),
    ],
)
def test_checks_switch_off(r, off):
    assert checks.first_failure(r, FilterConfig()) is not None
    assert checks.first_failure(r, FilterConfig(**off)) is None


def test_ratios():
    assert checks.repeat_ratio("a b c " * 100, 3) == 1 - 3 / 298  # 298 3-word windows, 3 distinct
    assert checks.repeat_ratio("only a few words", 10) == 0.0
    assert checks.foreign_ratio("English problem", "plain ascii text") == 0.0
    assert checks.dominant_script("Сколько будет два плюс два?") == "cyrillic"
    assert checks.dominant_script("$x^2 = 4$") == "latin"  # no words at all: default
