"""Code answers: the last ```python block of the completion, run against the reference tests in the sandbox.

References (distill.data): {"format": "humaneval", "prompt", "test", "entry_point"} runs
prompt + code + test + check(entry_point) (the prompt gives imports and, for a body-only answer, the def);
{"format": "mbpp", "setup", "tests": [asserts], "challenge": [asserts]} runs in MBPP's own order: code, then
setup (`test_setup_code` uses the candidate's classes, e.g. `root = Node(1)`), then the asserts, then the
challenge asserts when asked. {"format": "stdio" | "functional", ...}: see distill.graders.stdio.
Exit 0 is correct, a failed assert or crash is wrong, the wall or CPU limit is timeout, no code block is
unparseable.
"""

from __future__ import annotations

import json
import re

from distill.graders.sandbox import run_python

GRADER = "sandbox"
FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(answer: str) -> str | None:
    """The last fenced code block (```python, ```py or bare ```), or None."""
    blocks = FENCE_RE.findall(answer or "")
    return blocks[-1] if blocks and blocks[-1].strip() else None


def parse_tests(reference: str) -> dict | None:
    """The tests JSON of a code reference, or None when it is not one we can run (a bad reference)."""
    try:
        tests = json.loads(reference)
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(tests, dict):
        return None
    if tests.get("format") == "humaneval" and all(
        isinstance(tests.get(k), str) for k in ("prompt", "test", "entry_point")
    ):
        return tests
    if tests.get("format") == "mbpp" and isinstance(tests.get("tests"), list) and tests["tests"]:
        return tests
    if tests.get("format") in ("stdio", "functional"):
        return tests
    return None


def build_program(tests: dict, code: str, challenge: bool = False) -> str:
    """The whole program the sandbox runs: candidate code followed by the benchmark's own checks."""
    if tests["format"] == "humaneval":
        entry = tests["entry_point"]
        # a full def after the prompt's stub redefines it; a bare body continues the stub
        glue = "\n\n" if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE) else ""
        return f"{tests['prompt']}{glue}{code}\n\n{tests['test']}\n\ncheck({entry})\n"
    asserts = tests["tests"] + (list(tests.get("challenge") or []) if challenge else [])
    return f"{code}\n\n{tests.get('setup') or ''}\n\n" + "\n".join(asserts) + "\n"


def verify_code(
    reference: str,
    answer: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    challenge: bool = False,
    clock: str = "cpu",
) -> tuple[str, str | None]:
    """(verdict, extracted code): correct | wrong | timeout | unparseable | bad_reference. `clock`: how
    stdin/stdout cases are timed ("cpu", or "wall" as the sets' harnesses do)."""
    tests = parse_tests(reference)
    if tests is None:
        return "bad_reference", None
    code = extract_code(answer)
    if code is None:
        return "unparseable", None
    if tests["format"] in ("stdio", "functional"):
        from distill.graders.stdio import grade

        return grade(tests, code, memory_mb=memory_mb, clock=clock).verdict, code
    result = run_python(build_program(tests, code, challenge), timeout_s=timeout_s, memory_mb=memory_mb)
    verdict = {"ok": "correct", "error": "wrong", "timeout": "timeout"}[result.status]
    return verdict, code
