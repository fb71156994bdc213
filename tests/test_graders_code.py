"""MBPP in its harness's own order: code, then test_setup_code, then the asserts, then challenge asserts when asked."""

from __future__ import annotations

import json

import pytest

from distill.data import load_prompts, raw_records
from distill.graders.code import build_program, parse_tests, verify_code
from distill.graders.sandbox import run_python


def fenced(code: str) -> str:
    return f"```python\n{code}\n```"


def test_mbpp_program_order():
    tests = {
        "format": "mbpp",
        "setup": "root = Node(1)",
        "tests": ["assert f(root) == 1"],
        "challenge": ["assert f(None) == 0"],
    }
    program = build_program(tests, "class Node: ...")
    assert program.index("class Node") < program.index("root = Node(1)") < program.index("assert f(root)")
    assert "assert f(None)" not in program  # challenge tests only when asked
    assert build_program(tests, "class Node: ...", challenge=True).rstrip().endswith("assert f(None) == 0")


@pytest.mark.sandbox
def test_mbpp_setup_code_uses_the_candidates_classes(data_dir):
    """Tasks 367 and 927: test_setup_code builds trees with the solution's own Node class (failed before)."""
    recs = {r["task_id"]: r for r in raw_records("mbpp", "train") if r["test_setup_code"]}
    rows = {row["prompt_id"]: row for row in load_prompts("mbpp", "train")}
    assert sorted(recs) == [367, 927]
    for task_id, rec in recs.items():
        reference = rows[f"mbpp/{task_id}"]["reference"]
        assert verify_code(reference, fenced(rec["code"]))[0] == "correct", task_id  # code, then setup
        setup_first = json.loads(reference)
        old = f"{setup_first['setup']}\n{rec['code']}\n\n" + "\n".join(setup_first["tests"])
        assert run_python(old).status == "error"  # the order distill used before: NameError 'Node'


@pytest.mark.sandbox
def test_mbpp_challenge_tests_when_asked(data_dir):
    recs = [r for r in raw_records("mbpp", "train") if r["challenge_test_list"]]
    rows = {row["prompt_id"]: row for row in load_prompts("mbpp", "train")}
    assert len(recs) == 11
    for rec in recs[:4]:
        reference = rows[f"mbpp/{rec['task_id']}"]["reference"]
        assert parse_tests(reference)["challenge"] == rec["challenge_test_list"]
        assert verify_code(reference, fenced(rec["code"]), challenge=True)[0] == "correct", rec["task_id"]
        wrong = "def nothing():\n    return None"
        assert verify_code(reference, fenced(wrong), challenge=True)[0] == "wrong"
