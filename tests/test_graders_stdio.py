"""stdin/stdout and functional code tests: each benchmark's output rule, programs in the sandbox, LiveCodeBench rows."""

from __future__ import annotations

import base64
import json
import pickle
import zlib

import pytest

from distill.config import VerifyConfig
from distill.data import load_prompts
from distill.errors import DistillError
from distill.graders import verify_batch
from distill.graders.stdio import (
    from_apps,
    from_codeforces,
    from_livecodebench,
    grade,
    grade_many,
    same_output,
)


def stdio(bench: str, cases: list[tuple[str, str]], limit: float = 2.0, **extra) -> dict:
    tests = [{"input": i, "output": o} for i, o in cases]
    return {"format": "stdio", "benchmark": bench, "time_limit_s": limit, "cases": tests, **extra}


COMPARE = [  # (benchmark, output, expected, passes?)
    ("livecodebench", "3\n", "3", True),  # trailing newline stripped
    ("livecodebench", "  1 2  \n3\n", "1 2\n3", True),  # each line stripped
    ("livecodebench", "1  2\n", "1 2", True),  # not equal as text, equal as Decimal tokens
    ("livecodebench", "1.50\n", "1.5", True),  # Decimal("1.50") == Decimal("1.5")
    ("livecodebench", "0.3333333\n", "0.3333334", False),  # Decimals compare exactly: no tolerance
    ("livecodebench", "1\n2\n", "1 2", False),  # line count differs
    ("livecodebench", "Yes", "yes", False),
    ("apps", "1\n2\n", "1 2", True),  # whitespace tokens
    ("apps", "0.333333\n", "0.3333333", True),  # rtol 1e-5
    ("apps", "0.3333\n", "0.3333333", False),
    ("codeforces", "1 2\n3", "1\n2 3\n", True),  # testlib wcmp: tokens
    ("codeforces", "0.333333", "0.3333333", False),  # no tolerance unless the problem states one
]


@pytest.mark.parametrize(("bench", "got", "want", "passes"), COMPARE)
def test_output_rules(bench, got, want, passes):
    assert same_output(stdio(bench, [("", want)]), got, want) is passes


def test_codeforces_float_tolerance_and_functional_rules():
    tol = stdio("codeforces", [("", "0.3333333")], float_tol=1e-6)
    assert same_output(tol, "0.333333", "0.3333333")  # within 1e-6
    assert not same_output(tol, "0.33", "0.3333333")
    lcb = {
        "format": "functional",
        "benchmark": "livecodebench",
        "func_name": "f",
        "time_limit_s": 1,
        "cases": [],
    }
    assert same_output(lcb, "[1, 2]", "[1, 2]")
    assert not same_output(lcb, "[[1, 2]]", "[1, 2]")
    assert not same_output(lcb, "not json", "1")
    apps = {**lcb, "benchmark": "apps"}
    assert same_output(apps, "5", "[5]")  # APPS wraps call-based outputs in a list


ADD = stdio("livecodebench", [("1 2\n", "3\n"), ("5 6\n", "11"), ("-4 4\n", "0")])
PROGRAMS = [  # (program, expected verdict)
    ("a, b = map(int, input().split())\nprint(a + b)", "correct"),
    ("import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)", "correct"),
    ("a, b = map(int, open(0).read().split())\nprint(a + b)", "correct"),  # a real stdin, not a mock
    (
        "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\nif __name__ == '__main__':\n    main()",
        "correct",
    ),
    ("a, b = map(int, input().split())\nprint(a + b)\nexit(0)", "correct"),
    ("a, b = map(int, input().split())\nprint(a - b)", "wrong"),
    ("a, b = map(int, input().split())\nprint(a + b if a > 0 else 1)", "wrong"),  # only the last case fails
    ("raise SystemError('boom')", "wrong"),  # a crash
    ("def broken(:", "wrong"),  # a syntax error
    ("while True:\n    pass", "timeout"),  # CPU limit
    ("import time\ntime.sleep(30)", "timeout"),  # the wall backstop
    ("x = ' ' * (1 << 34)", "wrong"),  # over the memory limit: MemoryError
    ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\nprint(3)", "wrong"),  # no network
    (
        "import os\nos.system('rm -rf /tmp/work/in*')\na, b = map(int, input().split())\nprint(a + b)",
        "correct",
    ),
]


@pytest.mark.sandbox
def test_programs_in_the_sandbox():
    limit = {**ADD, "time_limit_s": 1.0}
    got = [r.verdict for r in grade_many([(limit, code) for code, _ in PROGRAMS], workers=2)]
    assert got == [want for _, want in PROGRAMS]
    assert grade(limit, PROGRAMS[6][0]).detail == "case 3: expected '0', got '1\\n'"


FUNCTIONAL = {
    "format": "functional",
    "benchmark": "livecodebench",
    "func_name": "twoSum",
    "time_limit_s": 2.0,
    "cases": [
        {"input": "[2, 7, 11, 15]\n9", "output": "[0, 1]"},
        {"input": "[3, 2, 4]\n6", "output": "[1, 2]"},
    ],
}
TWO_SUM = """
class Solution:
    def twoSum(self, nums: List[int], target: int) -> List[int]:
        print("debug output does not count")
        seen = {}
        for i, x in enumerate(nums):
            if target - x in seen:
                return (seen[target - x], i)  # a tuple reads as a list
            seen[x] = i
"""


@pytest.mark.sandbox
def test_functional_leetcode_style():
    """LiveCodeBench's LeetCode problems: `class Solution` + the starter function, `List` from the prelude."""
    assert grade(FUNCTIONAL, TWO_SUM).verdict == "correct"
    assert grade(FUNCTIONAL, TWO_SUM.replace("seen[target - x], i", "i, seen[target - x]")).verdict == "wrong"
    assert grade(FUNCTIONAL, "class Solution:\n    pass").verdict == "wrong"  # no such method
    apps = from_apps({"inputs": [[2, 3], [4, 5]], "outputs": [[5], [9]], "fn_name": "add"}, "apps row 1")
    assert (
        grade(apps, "def add(a, b):\n    return a + b").verdict == "correct"
    )  # APPS: a function, output [5]


def lcb_row(qid: str, date: str, functional: bool = False) -> dict:
    """A code_generation_lite row as published: public tests JSON, private tests base64(zlib(pickle(JSON)))."""
    kind = "functional" if functional else "stdin"
    public = [{"input": "1 2\n", "output": "3\n", "testtype": kind}]
    private = [{"input": "10 20\n", "output": "30\n", "testtype": kind}]
    if functional:
        public = [{"input": "1\n2", "output": "3", "testtype": kind}]
        private = [{"input": "10\n20", "output": "30", "testtype": kind}]
    blob = base64.b64encode(zlib.compress(pickle.dumps(json.dumps(private)))).decode()
    return {
        "question_title": f"Add {qid}",
        "question_content": "Print the sum of two integers.",
        "platform": "leetcode" if functional else "atcoder",
        "question_id": qid,
        "contest_id": "abc999",
        "contest_date": f"{date}-15T00:00:00",
        "starter_code": "class Solution:\n    def add(self, a: int, b: int) -> int:\n        "
        if functional
        else "",
        "difficulty": "easy",
        "public_test_cases": json.dumps(public),
        "private_test_cases": blob,
        "metadata": json.dumps({"func_name": "add"} if functional else {}),
    }


@pytest.fixture
def lcb_dir(tmp_path, monkeypatch):
    rows = [lcb_row("abc999_a", "2024-07"), lcb_row("abc999_b", "2024-08"), lcb_row("3001", "2025-01", True)]
    rows.append(lcb_row("abc999_c", "2025-02"))
    (tmp_path / "livecodebench").mkdir()
    (tmp_path / "livecodebench" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("DISTILL_DATA_DIR", str(tmp_path))
    return tmp_path


def test_livecodebench_windows(lcb_dir):
    assert [r["prompt_id"] for r in load_prompts("livecodebench", "test")] == [
        "livecodebench/abc999_a",
        "livecodebench/abc999_b",
        "livecodebench/3001",
        "livecodebench/abc999_c",
    ]
    window = load_prompts("livecodebench:2024-08..2025-01")  # DeepSeek's R1 window
    assert [r["prompt_id"] for r in window] == ["livecodebench/abc999_b", "livecodebench/3001"]
    assert [r["prompt_id"] for r in load_prompts("livecodebench", "deepseek-r1")] == [
        r["prompt_id"] for r in window
    ]
    ref = json.loads(window[1]["reference"])
    assert (
        ref["format"] == "functional" and ref["func_name"] == "add" and len(ref["cases"]) == 2
    )  # public + private
    assert "class Solution" in window[1]["problem"] and "stdin" in window[0]["problem"]
    for bad in ["2024-13..2025-01", "2025-01..2024-08", "v5", "2024-08"]:
        with pytest.raises(DistillError, match=f"unknown window '{bad}'"):
            load_prompts("livecodebench", bad)


@pytest.mark.sandbox
def test_livecodebench_rows_graded_end_to_end(lcb_dir):
    rows = load_prompts("livecodebench", "test")
    stdin_ok = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    func_ok = (
        "```python\nclass Solution:\n    def add(self, a: int, b: int) -> int:\n        return a + b\n```"
    )
    items = [("code", rows[0]["reference"], stdin_ok), ("code", rows[2]["reference"], func_ok)]
    items += [
        ("code", rows[0]["reference"], stdin_ok.replace("a + b", "a * b")),
        ("code", rows[2]["reference"], "no code"),
    ]
    got = [v.verdict for v in verify_batch(items, VerifyConfig(workers=2))]
    assert got == ["correct", "correct", "wrong", "unparseable"]


BAD = [  # (reference builder, message it must name)
    (
        lambda: from_apps({"inputs": ["1", "2"], "outputs": ["1"]}, "apps row 7"),
        "apps row 7: case 2: no expected output",
    ),
    (
        lambda: from_apps({"inputs": ["1"], "outputs": [None]}, "taco row 3", "taco"),
        "taco row 3: case 1: no expected output",
    ),
    (
        lambda: from_apps({"inputs": ["1"], "outputs": ["1"]}, "taco row 4", "taco", "0 seconds"),
        "time_limit_s must be > 0",
    ),
    (
        lambda: from_codeforces({"official_tests": [{"input": "1"}], "time_limit": 2}, "cf 1A"),
        "cf 1A: case 1: no expected output",
    ),
    (
        lambda: from_codeforces(
            {"official_tests": [{"input": "1", "output": "1"}], "time_limit": -1}, "cf 1B"
        ),
        "cf 1B: time_limit_s must be > 0",
    ),
    (
        lambda: from_livecodebench({"question_id": "x"}, "livecodebench row 'x'"),
        "livecodebench row 'x': malformed LiveCodeBench row",
    ),
    (
        lambda: from_livecodebench(
            {**lcb_row("y", "2024-09"), "private_test_cases": "@@not-base64"}, "livecodebench row 'y'"
        ),
        "private_test_cases cannot be decoded",
    ),
]


@pytest.mark.parametrize(("build", "message"), BAD)
def test_bad_references_name_what_and_where(build, message):
    with pytest.raises(DistillError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_bad_reference_is_no_verdict_on_the_program():
    no_output = {**ADD, "cases": [{"input": "1 2\n"}]}
    assert grade(no_output, "print(3)").verdict == "bad_reference"
    assert grade({**ADD, "time_limit_s": 0}, "print(3)").detail == "time_limit_s must be > 0 seconds, got 0"


def test_malformed_livecodebench_file_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "livecodebench").mkdir()
    row = {**lcb_row("abc1_a", "2024-09"), "public_test_cases": "[{not json"}
    (tmp_path / "livecodebench" / "test.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setenv("DISTILL_DATA_DIR", str(tmp_path))
    with pytest.raises(DistillError, match="livecodebench row 'abc1_a': malformed LiveCodeBench row"):
        load_prompts("livecodebench", "2024-08..2025-01")
