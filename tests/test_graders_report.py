"""The grader report: distill against math-verify called directly and the benchmarks' own harnesses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from distill.graders.code_cases import OWN, REAL
from distill.graders.report import (
    CASES,
    code_rule_parts,
    code_sample,
    math500_sample,
    math_cases,
    math_verify_direct,
    rules_rows,
)

ROOT = Path(__file__).resolve().parent.parent

DIRECT = [  # (gold, completion, what math-verify called directly says): why distill grades these itself
    ("7", "\\boxed{3} then \\boxed{7}", "wrong"),  # all boxes as a set, also for a one-value gold
    ("\\dfrac{1}{29,\\!322,\\!216}", "\\boxed{\\frac{1}{29322216}}", "bad_reference"),  # \\! in a fraction
    ("C", "\\boxed{C. x = 42}", "wrong"),  # a letter with text is no letter to it
    ("1, 2", "x = \\boxed{2} or x = \\boxed{1}", "correct"),  # several boxes: a set, as distill now does
]


@pytest.mark.parametrize(("gold", "answer", "verdict"), DIRECT)
def test_math_verify_direct(gold, answer, verdict):
    assert math_verify_direct(gold, answer) == verdict


def test_math_cases_distill_right_on_every_case_and_differences_listed():
    part = math_cases()
    assert part.total == len(CASES)
    assert part.agree["distill"] == part.total
    assert part.agree["math-verify"] < part.total  # where math-verify differs, each one is listed
    assert len(part.disagreements) == part.total - part.agree["math-verify"]
    assert all(row["distill"] == row["expected"] for row in part.disagreements)


@pytest.mark.sandbox
def test_real_samples(data_dir):
    math500 = math500_sample(20)
    assert math500.total == 40 and math500.agree["distill"] == 40
    code = code_sample(4)
    both = {"distill": 8, "reference harness": 8}
    assert (
        code.total == 8 and code.agree == both
    )  # incl. the MBPP tasks whose setup uses the solution's classes


@pytest.mark.sandbox
def test_code_sets_agree_with_their_reference_harnesses():
    """Per set, on the graders' own cases and on rows in the set's layout: distill (sandboxed, compared outside)
    and the set's harness (plain interpreter, its compare ported from its source) give the labelled verdict."""
    parts = code_rule_parts()
    sets = ("codeforces", "apps", "taco", "livecodebench")
    assert [p.title for p in parts] == [f"{s}: graders' own cases" for s in sets] + [
        f"{s}: rows in the set's layout" for s in sets
    ]
    assert sum(p.total for p in parts) == len(OWN) + len(REAL)
    for part in parts:
        assert part.agree == {"distill": part.total, "reference harness": part.total}, part.disagreements


def test_report_prints_each_code_sets_rule():
    rows = {row["set"]: row for row in rules_rows()}
    assert list(rows) == ["codeforces", "apps", "taco", "livecodebench"]
    assert [rows[s]["time limit"] for s in rows] == ["the row's time_limit", 4.0, 4.0, 6.0]
    assert [rows[s]["exit"] for s in rows] == [
        "nonzero fails",
        "SystemExit passes",
        "nonzero fails",
        "SystemExit passes",
    ]
    assert rows["apps"]["source"].startswith("hendrycks/apps eval/testing_util.py")


def test_cli_bad_input_exits_2():
    for args in (["verify"], ["verify", "--report", "--sample", "0"]):
        run = subprocess.run(
            [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=ROOT
        )
        assert run.returncode == 2 and run.stderr.startswith("error: ") and len(run.stderr.splitlines()) == 1
