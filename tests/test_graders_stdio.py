"""stdin/stdout and functional code tests: each benchmark's output rule, programs in the sandbox, LiveCodeBench rows."""

from __future__ import annotations

import json
import random

import pytest

from distill.config import VerifyConfig
from distill.data import load_prompts
from distill.errors import DistillError
from distill.graders import verify_batch
from distill.graders.code_cases import CF_4A, CF_120A, LCB_ADD, LCB_ROW, lcb_blob
from distill.graders.stdio import (
    OUTPUT_LIMIT,
    TOTAL_OUTPUT_LIMIT,
    driver_program,
    from_apps,
    from_codeforces,
    from_livecodebench,
    grade,
    grade_many,
    run_cases,
    same_output,
    verdict_of,
)


def stdio(bench: str, cases: list[tuple[str, str]], limit: float = 2.0, **extra) -> dict:
    tests = [{"input": i, "output": o} for i, o in cases]
    return {"format": "stdio", "benchmark": bench, "time_limit_s": limit, "cases": tests, **extra}


COMPARE = [  # (set, output, expected, passes?) by each harness's compare (distill.graders.rules names the source)
    ("livecodebench", "3\n", "3", True),  # trailing newline stripped
    ("livecodebench", "  1 2  \n3\n", "1 2\n3", True),  # each line stripped
    ("livecodebench", "1  2\n", "1 2", True),  # not equal as text, equal as Decimal tokens
    ("livecodebench", "1.50\n", "1.5", True),  # Decimal("1.50") == Decimal("1.5")
    ("livecodebench", "0.3333333\n", "0.3333334", False),  # Decimals compare exactly: no tolerance
    ("livecodebench", "1\n2\n", "1 2", False),  # line count differs
    ("livecodebench", "Yes", "yes", False),
    ("apps", "1\n2\n", "1 2", False),  # a differently split line fails
    ("apps", "2 1\n", "1 2", True),  # check5: a line is a set of tokens
    ("apps", "3\n1 2\n", "1 2\n3", True),  # check5: the lines are a set
    ("apps", "0.3334\n", "0.3333333", True),  # check6: rounded to 3 decimals
    ("apps", "0.335\n", "0.3333333", False),
    ("apps", "3.0\n", "3", True),  # floats with allclose
    ("apps", "YES", "yes", False),
    ("taco", "  1 2\n3\n\n", "1 2\n3", True),  # the whole output stripped
    ("taco", "1 2  \n3", "1 2\n3", False),  # ... not each line
    ("taco", "1 2\r\n3\r\n", "1 2\n3", True),  # universal newlines
    ("taco", "2 1\n", "1 2", False),  # token order counts
    ("taco", "3.0\n", "3", False),  # no float check on whole lines
    ("taco", "2 1", "1\n2", True),  # its set check over one-character tokens: a quirk of the source, kept
    ("codeforces", "1 2\n3", "1\n2 3\n", True),  # whitespace runs are one space
    ("codeforces", "yes\r\nNo\n", "YES\nNO\n", True),  # whole-word yes/no in any case
    ("codeforces", "yesno", "YESNO", False),  # ... whole words only
    ("codeforces", "0.333333", "0.3333333", False),  # no tolerance without the problem's checker
]


@pytest.mark.parametrize(("bench", "got", "want", "passes"), COMPARE)
def test_output_rules(bench, got, want, passes):
    assert same_output(stdio(bench, [("", want)]), got, want) is passes


CALLS = [  # (set, returned value as the driver tags it, expected JSON, passes?)
    ("livecodebench", {"t": [1, 2]}, "[1, 2]", True),  # a returned tuple is read as a list
    ("livecodebench", [{"t": [1, 2]}], "[[1, 2]]", False),  # ... only at the top: lcb_runner fails this
    ("livecodebench", [[1, 2]], "[1, 2]", False),
    ("apps", 5, "[5]", True),  # APPS wraps call-based outputs in a list: output[0]
    ("apps", [{"t": [1, 2]}], "[[[1, 2]]]", True),  # a list of tuples against outputs[0]
    ("apps", {"d": [[1, "a"]]}, '{"1": "a"}', True),  # JSON's string keys read back as ints
    ("taco", {"s": [1]}, "[[1]]", False),  # a set is no list
    ("livecodebench", {"r": "<object>"}, "1", False),  # no JSON form: equal to nothing
]


@pytest.mark.parametrize(("bench", "value", "want", "passes"), CALLS)
def test_call_based_rules(bench, value, want, passes):
    tests = {"format": "functional", "benchmark": bench, "func_name": "f", "time_limit_s": 1, "cases": []}
    assert same_output(tests, json.dumps(value), want) is passes


ADD = stdio("livecodebench", [("1 2\n", "3\n"), ("5 6\n", "11"), ("-4 4\n", "0")])
PROGRAMS = [  # (program, expected verdict)
    ("a, b = map(int, input().split())\nprint(a + b)", "correct"),
    ("import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)", "correct"),
    # LiveCodeBench: its module binds the real open() at load; fd 0 is not the case's input in its harness
    ("a, b = map(int, open(0).read().split())\nprint(a + b)", "wrong"),
    (
        "def main():\n    a, b = map(int, input().split())\n    print(a + b)\n\nif __name__ == '__main__':\n    main()",
        "correct",
    ),
    ("import sys\na, b = map(int, input().split())\nprint(a + b)\nsys.exit(0)", "correct"),
    (
        "a, b = map(int, input().split())\nprint(a + b)\nexit(0)",
        "wrong",
    ),  # LiveCodeBench: builtins.exit is None
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
    assert grade(limit, PROGRAMS[7][0]).detail == "case 3: expected '0', got '1\\n'"


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
    io = {"inputs": [[2, 3], [4, 5]], "outputs": [[5], [9]], "fn_name": "add"}
    apps = from_apps({"input_output": json.dumps(io)}, "apps row 1")
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
    blob = lcb_blob(private)
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


CF = {"official_tests": [{"input": "1", "output": "1"}], "time_limit": 2.0, "memory_limit": 256.0}
BAD = [  # (reference builder, the one line it must give: set, row, field)
    (lambda: from_apps({"input_output": ""}, "apps row 7"), "apps row 7: field input_output is empty"),
    (
        lambda: from_apps({"input_output": "{'inputs'"}, "apps row 8"),
        "apps row 8: field input_output is not JSON",
    ),
    (
        lambda: from_apps(
            {"input_output": json.dumps({"inputs": ["1", "2"], "outputs": ["1"]})}, "apps row 9"
        ),
        "apps row 9: field input_output: case 2: no expected output",
    ),
    (
        lambda: from_apps(
            {"input_output": json.dumps({"inputs": ["1"], "outputs": [None]})}, "taco row 3", "taco"
        ),
        "taco row 3: case 1: no expected output",
    ),
    (
        lambda: from_codeforces({**CF, "official_tests": [{"input": "1"}]}, "cf 1A"),
        "cf 1A: case 1: no expected output",
    ),
    (
        lambda: from_codeforces({**CF, "time_limit": -1}, "cf 1B"),
        "cf 1B: field time_limit must be > 0 seconds, got -1",
    ),
    (
        lambda: from_codeforces({**CF, "memory_limit": 0}, "cf 1C"),
        "cf 1C: field memory_limit must be > 0 MB, got 0",
    ),
    (
        lambda: from_codeforces({**CF, "generated_checker": "def check(:\n"}, "cf 1D"),
        "cf 1D: field generated_checker does not compile (SyntaxError",
    ),
    (
        lambda: from_codeforces({**CF, "input_mode": "pipe"}, "cf 1E"),
        "cf 1E: input_mode must be stdio or file",
    ),
    (
        lambda: from_livecodebench({"question_id": "x"}, "livecodebench row 'x'"),
        "livecodebench row 'x': field public_test_cases: malformed",
    ),
    (
        lambda: from_livecodebench(
            {**lcb_row("y", "2024-09"), "private_test_cases": "@@not-base64"}, "livecodebench row 'y'"
        ),
        "livecodebench row 'y': field private_test_cases cannot be decoded",
    ),
    (
        lambda: from_livecodebench(
            {**lcb_row("z", "2024-09"), "private_test_cases": lcb_blob([])}, "lcb row 'z'"
        ),
        "lcb row 'z': field private_test_cases decodes to no test cases",
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
    with pytest.raises(DistillError, match="livecodebench row 'abc1_a': field public_test_cases: malformed"):
        load_prompts("livecodebench", "2024-08..2025-01")


def test_readers_take_each_sets_real_columns():
    """Rows in the published layouts (distill.graders.code_cases names each source)."""
    cf = from_codeforces({**CF_4A, "float_tol": 1e-6}, "codeforces row 4A")  # a column the set does not have
    assert {k: v for k, v in cf.items() if k != "cases"} == {
        "format": "stdio",
        "benchmark": "codeforces",
        "time_limit_s": 1.0,
        "memory_mb": 64.0,
        "input_mode": "stdio",
        "checker": None,
    }
    assert cf["cases"][0] == {"input": "8\r\n", "output": "YES\r\n"} and len(cf["cases"]) == 5
    assert from_codeforces(CF_120A, "codeforces row 120A")["input_mode"] == "file"
    taco = from_apps(
        {"input_output": json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]}), "time_limit": "1 second"},
        "t",
        "taco",
    )
    assert taco["time_limit_s"] == 4.0  # TACO's harness gives every case 4 s, whatever the row says
    plain = from_livecodebench(LCB_ADD, "livecodebench row 'add'")  # private cases as plain JSON
    assert plain["format"] == "stdio" and [c["output"] for c in plain["cases"]] == ["3\n", "3.75\n"]
    packed = from_livecodebench(LCB_ROW, "livecodebench row '1'")  # private cases compressed
    assert packed["func_name"] == "twoSum" and [c["output"] for c in packed["cases"]] == ["[0, 1]", "[1, 2]"]


MB = 1 << 20


@pytest.mark.sandbox
def test_any_allowed_output_size_is_graded(monkeypatch):
    """A 1 MB correct output passes (it once ended as "crashed" past the sandbox's 64 KiB stdout tail); 17 MiB is
    over OUTPUT_LIMIT (16 MiB): "output limit exceeded", never a crash."""
    assert (OUTPUT_LIMIT, TOTAL_OUTPUT_LIMIT) == (16 * MB, 64 * MB)
    noise = (
        "import random\nprint('%x' % random.Random(7).getrandbits(4 << 20))"  # 1 MiB of hex, ~500 KB zipped
    )
    big = stdio("codeforces", [("", f"{random.Random(7).getrandbits(4 << 20):x}\n")])
    got = grade_many([(big, noise), (big, "print('7' * (17 << 20))")], workers=2)
    assert [(r.verdict, r.detail) for r in got] == [
        ("correct", ""),
        ("wrong", "case 1: output limit exceeded (16 MiB a case, 64 MiB in all)"),
    ]
    monkeypatch.setattr("distill.graders.stdio.TOTAL_OUTPUT_LIMIT", 2 * MB)  # all cases together: 2 MiB here
    three = stdio("codeforces", [("", "7" * MB + "\n")] * 3)
    assert (
        grade(three, "print('7' * (1 << 20))").detail
        == "case 2: output limit exceeded (16 MiB a case, 2 MiB in all)"
    )


# Searches everything the program can reach for the expected output: its own objects (globals, sys.modules, every
# object the garbage collector tracks), its environment and arguments, its open file descriptors, every file under
# /tmp and /proc/*/{environ,cmdline}, and the readable memory of every process it can see (itself, the driver that
# forked it, the launcher) through /proc/PID/maps + /proc/PID/mem. Prints what it searched and what it found.
SNOOP = r"""
import gc, os, re, sys
pattern = re.compile(rb"CANARY-[0-9a-f]{32}")
found, searched = [], []
def look(where, data):
    searched.append(where)
    if isinstance(data, str):
        data = data.encode(errors="replace")
    if pattern.search(data):
        found.append(where)
import __main__
for name, obj in list(vars(__main__).items()) + [("modules", " ".join(sys.modules))]:
    look("__main__." + name, repr(obj)[:10 ** 7])
for obj in gc.get_objects():  # every container: the strings and bytes it holds
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple, set)) else ()
    look("gc", b"\0".join(x.encode(errors="replace") if isinstance(x, str) else x
                          for x in list(items) if isinstance(x, (str, bytes))))
look("environ", repr(dict(os.environ)))
look("argv", repr(sys.argv))
for fd in os.listdir("/proc/self/fd"):
    try:
        look(f"fd {fd}", os.pread(int(fd), 1 << 26, 0))
    except OSError:
        pass
for root, _, files in os.walk("/tmp"):
    for f in files:
        try:
            look(f"file {root}/{f}", open(os.path.join(root, f), "rb").read())
        except OSError:
            pass
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for part in ("environ", "cmdline"):
        try:
            look(f"/proc/{pid}/{part}", open(f"/proc/{pid}/{part}", "rb").read())
        except OSError:
            pass
    try:
        mem = open(f"/proc/{pid}/mem", "rb")
        for line in open(f"/proc/{pid}/maps"):
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if perms[0] == "r" and end - start < 1 << 30:
                try:
                    mem.seek(start)
                    look(f"/proc/{pid}/mem", mem.read(end - start))
                except (OSError, ValueError, OverflowError):
                    pass
    except OSError:
        pass
print(f"spec {sorted(getattr(__main__, 'SPEC', {}))}; "
      f"pids {sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}; memory regions read "
      f"{sum(w.endswith('/mem') for w in searched)}; places {len(searched)}; found {found}")
"""


SPEC_KEYS = [  # what the driver is told: the inputs, the program, the set's run rules; nothing from an output
    *(
        "catch_exit",
        "clock",
        "code",
        "exit_builtin",
        "file_mode",
        "func",
        "inputs",
        "int_keys",
        "jobs",
        "limit",
    ),
    *(
        "main_name",
        "memory",
        "output_limit",
        "patched_stdin",
        "prelude",
        "stack_unlimited",
        "total_limit",
        "wrap",
    ),
]


@pytest.mark.sandbox
def test_program_searching_its_own_process_finds_no_expected_output():
    """No leak: the expected output (a random canary) is nowhere the sandboxed program can look."""
    import secrets

    canary = f"CANARY-{secrets.token_hex(16)}"
    tests = stdio("codeforces", [("1\n", canary + "\n")], limit=20.0)
    runs = run_cases(tests, SNOOP)
    assert runs[0]["s"] == "ok", runs[0]
    report = runs[0]["o"]
    assert report.strip().endswith("found []"), report
    pids = json.loads(report.split("pids ")[1].split(";")[0])
    regions = int(report.split("memory regions read ")[1].split(";")[0])
    assert len(pids) >= 3 and regions > 20  # launcher, driver, itself: its own memory at least was read
    keys = report.split("spec ")[1].split(";")[
        0
    ]  # the driver's spec, reachable as __main__.SPEC: no caps, no outputs
    assert keys == str(SPEC_KEYS)
    assert canary not in driver_program(
        tests, SNOOP
    )  # the sandbox program holds the inputs, never the outputs
    assert verdict_of(tests, runs).verdict == "wrong"


@pytest.mark.sandbox
def test_clock_cpu_by_default_wall_as_the_harnesses():
    """A case that sleeps 1.5 s of a 1 s limit: distill's CPU clock passes it (a loaded machine must not time out
    correct programs); verify.code_clock: wall times it as every set's harness does (signal.alarm, timeout)."""
    assert VerifyConfig().code_clock == "cpu"
    tests = stdio("codeforces", [("", "1\n")], limit=1.0)
    sleeper = "import time\ntime.sleep(1.5)\nprint(1)"
    cpu, wall = grade_many([(tests, sleeper)], clock="cpu") + grade_many([(tests, sleeper)], clock="wall")
    assert (cpu.verdict, wall.verdict, wall.detail) == ("correct", "timeout", "case 1: over 1.0 s")
