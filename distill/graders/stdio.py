"""stdin/stdout and functional code tests (codeforces, APPS, TACO, LiveCodeBench), run in the sandbox, cases in parallel.

A reference, built from each benchmark's own format by `from_apps`, `from_codeforces`, `from_livecodebench`:

    {"format": "stdio", "benchmark": "codeforces", "time_limit_s": 2.0, "float_tol": null,
     "cases": [{"input": "3\\n1 2 3\\n", "output": "6\\n"}, ...]}
    {"format": "functional", "benchmark": "livecodebench", "func_name": "maxSum", "time_limit_s": 6.0,
     "cases": [{"input": "[1, 2]\\n3", "output": "5"}, ...]}   # input: one JSON argument per line; output: JSON

How one program is graded: one sandbox (`run_python`) runs a small driver that forks the program once per case
(`jobs` cases at a time), stdin from the case's input, stdout to a file, CPU time from wait4 against the case's
limit (a wall backstop of 2x + 1 s catches sleepers). Only the inputs enter the sandbox; the expected outputs stay
here and the comparison happens here, so a program cannot read the answers. The first case that crashes or runs
out of time stops the rest. Output rules, as each benchmark's harness defines them (RULES):

    livecodebench  lines stripped, same count; a line equal, or its tokens equal as Decimals ("1.50" == "1.5")
    apps, taco     whitespace tokens equal, or all numbers within numpy.allclose (rtol 1e-5, atol 1e-8)
    codeforces     whitespace tokens equal (testlib's wcmp); `float_tol` (abs or rel) where a problem states one
    functional     the returned value (a tuple read as a list) == the JSON output; APPS also accepts output[0]

Programs see LiveCodeBench's prelude of standard-library imports (`from typing import *`, `import math`, ...),
as in its harness; LeetCode-style programs define `class Solution` with the starter function.
"""

from __future__ import annotations

import base64
import json
import math
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from distill.errors import DistillError
from distill.graders.sandbox import run_python

BENCHMARKS = ("livecodebench", "apps", "taco", "codeforces")
DEFAULT_LIMIT_S = {"livecodebench": 6.0, "apps": 4.0, "taco": 4.0, "codeforces": 2.0}  # s per test case
JOBS = 2  # cases of one program run at once (the machine's cores)
STARTUP_S = 10.0  # sandbox + driver start, on top of the cases' own budget
# LiveCodeBench's harness runs every program after these imports (lcb_runner/evaluation/testing_util.py)
PRELUDE = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\n"
    "from statistics import *\nfrom itertools import *\nfrom functools import *\nfrom operator import *\n"
    "from io import *\nfrom sys import *\nfrom json import *\nfrom builtins import *\nfrom typing import *\n"
    "import string, re, datetime, collections, heapq, bisect, copy, math, random, statistics, itertools\n"
    "import functools, operator, io, sys, json\nsys.setrecursionlimit(50000)\n"
)


@dataclass
class StdioResult:
    verdict: str  # correct | wrong | timeout | bad_reference
    passed: int  # cases passed before the first failure
    total: int
    detail: str  # why it failed: "case 3: expected '6', got '5'"; "" when correct


# ---------------------------------------------------------------- references from each benchmark's format


def check_tests(tests: dict) -> str | None:
    """What is wrong with a reference, or None: the message names the field and the case."""
    if tests.get("format") not in ("stdio", "functional"):
        return f"format {tests.get('format')!r} is not stdio or functional"
    if tests.get("benchmark") not in BENCHMARKS:
        return f"benchmark {tests.get('benchmark')!r} is not one of {', '.join(BENCHMARKS)}"
    limit = tests.get("time_limit_s")
    if not isinstance(limit, int | float) or limit <= 0:
        return f"time_limit_s must be > 0 seconds, got {limit!r}"
    if tests["format"] == "functional" and not tests.get("func_name"):
        return "a functional test needs func_name"
    cases = tests.get("cases")
    if not isinstance(cases, list) or not cases:
        return "no test cases"
    for i, case in enumerate(cases, 1):
        if not isinstance(case, dict) or not isinstance(case.get("input"), str):
            return f"case {i}: no input"
        if not isinstance(case.get("output"), str):
            return f"case {i}: no expected output"
    return None


def checked(tests: dict, where: str) -> dict:
    """The reference itself, or DistillError naming `where` and what is wrong."""
    problem = check_tests(tests)
    if problem:
        raise DistillError(f"{where}: {problem}")
    return tests


def _text(value) -> str | None:
    """APPS stores some inputs and outputs as lists of lines."""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return value if isinstance(value, str) else None


def parse_limit(value, where: str, default: float) -> float:
    """TACO's "2 seconds", "1.5 s", codeforces' 2.0 -> seconds; `default` when absent."""
    if value is None or value == "":
        return default
    found = re.match(r"\s*(-?\d+(?:\.\d+)?)", str(value))
    if found is None:
        raise DistillError(f"{where}: time limit {value!r} is not a number of seconds")
    return float(found.group(1))


def from_apps(input_output, where: str, benchmark: str = "apps", time_limit=None) -> dict:
    """APPS / TACO `input_output` ({"inputs", "outputs", "fn_name"?}, JSON text or dict) -> a reference."""
    io = json.loads(input_output) if isinstance(input_output, str) else input_output
    inputs, outputs = io.get("inputs") or [], io.get("outputs") or []
    if len(outputs) < len(inputs):
        raise DistillError(f"{where}: case {len(outputs) + 1}: no expected output")
    limit = parse_limit(time_limit, where, DEFAULT_LIMIT_S[benchmark])
    if io.get("fn_name"):
        cases = [
            {"input": "\n".join(json.dumps(a) for a in args), "output": json.dumps(out)}
            for args, out in zip(inputs, outputs, strict=False)
        ]
        ref = {"format": "functional", "func_name": io["fn_name"]}
    else:
        cases = [{"input": _text(i), "output": _text(o)} for i, o in zip(inputs, outputs, strict=False)]
        ref = {"format": "stdio"}
    return checked({**ref, "benchmark": benchmark, "time_limit_s": limit, "cases": cases}, where)


def from_codeforces(row: dict, where: str) -> dict:
    """open-r1/codeforces: official_tests [{input, output}], time_limit (s)."""
    cases = [{"input": t.get("input"), "output": t.get("output")} for t in row.get("official_tests") or []]
    limit = parse_limit(row.get("time_limit"), where, DEFAULT_LIMIT_S["codeforces"])
    ref = {"format": "stdio", "benchmark": "codeforces", "time_limit_s": limit, "cases": cases}
    return checked({**ref, "float_tol": row.get("float_tol")}, where)


def decode_private(blob: str, where: str) -> list[dict]:
    """LiveCodeBench's private_test_cases: base64(zlib(pickle(JSON text))) -> list of cases."""
    import pickle

    try:
        text = pickle.loads(zlib.decompress(base64.b64decode(blob)))  # noqa: S301 (the benchmark's own format)
        return json.loads(text)
    except Exception as err:
        raise DistillError(f"{where}: private_test_cases cannot be decoded ({type(err).__name__})") from None


def from_livecodebench(row: dict, where: str) -> dict:
    """A code_generation_lite row (public_test_cases JSON, private_test_cases encoded, metadata.func_name)."""
    try:
        public = json.loads(row["public_test_cases"])
        private = row.get("private_test_cases") or []
        private = decode_private(private, where) if isinstance(private, str) else private
        meta = row.get("metadata") or "{}"
        meta = json.loads(meta) if isinstance(meta, str) else meta
    except (KeyError, json.JSONDecodeError, TypeError) as err:
        raise DistillError(f"{where}: malformed LiveCodeBench row ({type(err).__name__}: {err})") from None
    cases = public + private
    functional = any(c.get("testtype") == "functional" for c in cases)
    ref = {"format": "functional", "func_name": meta.get("func_name")} if functional else {"format": "stdio"}
    tests = [{"input": c.get("input"), "output": c.get("output")} for c in cases]
    return checked({**ref, "benchmark": "livecodebench", "time_limit_s": 6.0, "cases": tests}, where)


# ---------------------------------------------------------------- the driver that runs inside the sandbox

DRIVER = r"""
import json, os, resource, select, signal, sys, time
SPEC = json.loads(__SPEC__)
cases, limit, jobs, caps = SPEC["inputs"], SPEC["limit"], SPEC["jobs"], SPEC["caps"]
source = compile(SPEC["prelude"] + SPEC["code"], "solution.py", "exec")
exec(SPEC["prelude"], {})  # import the prelude's modules once: each forked case finds them loaded

def case_files(i):
    # unlinked at once: the program of one case cannot touch another case's input or output
    name_in, name_out = f"in{i}", f"out{i}"
    fin = os.open(name_in, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fin, cases[i].encode())
    os.lseek(fin, 0, os.SEEK_SET)
    fout = os.open(name_out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.unlink(name_in)
    os.unlink(name_out)
    return fin, fout

def functional(i):
    args = [json.loads(line) for line in cases[i].split("\n") if line.strip()]
    result_fd = os.dup(1)
    os.dup2(2, 1)  # the program's own prints must not mix with the returned value
    space = {"__name__": "solution"}
    exec(source, space)
    target = space["Solution"]() if "Solution" in space else None
    fn = getattr(target, SPEC["func"]) if target is not None else space[SPEC["func"]]
    result = fn(*args)
    result = list(result) if isinstance(result, tuple) else result
    os.write(result_fd, json.dumps(result).encode())

def child(i, fin, fout):
    code = 1
    try:
        os.setpgid(0, 0)
        os.dup2(fin, 0)
        os.dup2(fout, 1)
        os.dup2(os.open("/dev/null", os.O_WRONLY), 2)
        os.close(fin)
        os.close(fout)
        cpu = int(limit) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        try:
            if SPEC["func"]:
                functional(i)
            else:
                exec(source, {"__name__": "__main__"})
        except SystemExit:
            pass  # LiveCodeBench's harness counts exit() as a normal end
        sys.stdout.flush()
        code = 0
    finally:
        os._exit(code)  # never back into the driver's loop

results, pending, running = [None] * len(cases), list(range(len(cases))), {}
failed = False
while (pending and not failed) or running:
    while pending and not failed and len(running) < jobs:
        i = pending.pop(0)
        fin, fout = case_files(i)
        pid = os.fork()
        if pid == 0:
            child(i, fin, fout)
        os.close(fin)
        running[os.pidfd_open(pid)] = (i, pid, fout, time.monotonic() + 2 * limit + 1)
    wait = max(0.0, min(r[3] for r in running.values()) - time.monotonic())
    ready = select.select(list(running), [], [], wait)[0]
    for fd in list(running):
        i, pid, fout, deadline = running[fd]
        if fd not in ready and time.monotonic() < deadline:
            continue
        if fd not in ready:
            os.killpg(pid, signal.SIGKILL)
        _, status, usage = os.wait4(pid, 0)
        os.close(fd)
        del running[fd]
        try:
            os.killpg(pid, signal.SIGKILL)  # whatever the program left running
        except ProcessLookupError:
            pass
        cpu_s = usage.ru_utime + usage.ru_stime
        code = os.waitstatus_to_exitcode(status)
        slow = fd not in ready or cpu_s > limit or code == -signal.SIGXCPU
        state = "timeout" if slow else ("ok" if code == 0 else "error")
        out = os.pread(fout, caps[i] + 1, 0).decode(errors="replace")
        os.close(fout)
        results[i] = {"s": state, "o": out, "cpu": round(cpu_s, 3)}
        failed = failed or state != "ok"
import base64, zlib
print("RESULTS " + base64.b64encode(zlib.compress(json.dumps(results).encode())).decode())
"""


def driver_program(tests: dict, code: str, jobs: int = JOBS) -> str:
    """The sandbox program: the driver with the program and the inputs (never the expected outputs)."""
    spec = {
        "inputs": [c["input"] for c in tests["cases"]],
        "caps": [4 * len(c["output"]) + 1024 for c in tests["cases"]],  # longer output cannot match
        "limit": float(tests["time_limit_s"]),
        "jobs": jobs,
        "func": tests.get("func_name") if tests["format"] == "functional" else None,
        "prelude": PRELUDE,
        "code": code,
    }
    return DRIVER.replace("__SPEC__", repr(json.dumps(spec)))


def wall_budget(tests: dict, jobs: int = JOBS) -> float:
    """Seconds the whole sandbox run may take: every case at its wall backstop, `jobs` at a time, plus start."""
    rounds = math.ceil(len(tests["cases"]) / jobs)
    return rounds * (2 * float(tests["time_limit_s"]) + 1) + STARTUP_S


def run_cases(tests: dict, code: str, memory_mb: int = 1024, jobs: int = JOBS) -> list[dict | None]:
    """Per case {"s": ok|error|timeout, "o": stdout, "cpu": s}; None for cases not run after a failure."""
    size_mb = sum(len(c["input"]) + 4 * len(c["output"]) for c in tests["cases"]) >> 20
    result = run_python(
        driver_program(tests, code, jobs),
        timeout_s=wall_budget(tests, jobs),
        memory_mb=memory_mb,
        tmp_mb=64 + 2 * size_mb,  # the inputs and outputs live on the sandbox's tmpfs
        file_mb=16 + size_mb,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULTS ")]
    if result.status == "timeout" or not lines:
        return [{"s": "timeout" if result.status == "timeout" else "error", "o": "", "cpu": 0.0}]
    return json.loads(zlib.decompress(base64.b64decode(lines[-1].split(" ", 1)[1])))


# ---------------------------------------------------------------- comparing outputs, per benchmark


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(tok) for tok in line.split()]
    except InvalidOperation:
        return None


def same_livecodebench(got: str, want: str) -> bool:
    got_lines = [line.strip() for line in got.strip().split("\n")]
    want_lines = [line.strip() for line in want.strip().split("\n")]
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines, strict=True):
        if g != w and (_decimals(g) is None or _decimals(g) != _decimals(w)):
            return False
    return True


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def same_apps(got: str, want: str) -> bool:
    got_t, want_t = got.split(), want.split()
    if got_t == want_t:
        return True
    a, b = _floats(got_t), _floats(want_t)
    return (
        a is not None and b is not None and len(a) == len(b)
        and all(abs(x - y) <= 1e-8 + 1e-5 * abs(y) for x, y in zip(a, b, strict=True))
    )  # fmt: skip


def same_codeforces(got: str, want: str, tol: float | None = None) -> bool:
    got_t, want_t = got.split(), want.split()
    if got_t == want_t or tol is None or len(got_t) != len(want_t):
        return got_t == want_t
    for g, w in zip(got_t, want_t, strict=True):
        a, b = _floats([g]), _floats([w])
        if g != w and (a is None or b is None or abs(a[0] - b[0]) > tol * max(1.0, abs(b[0]))):
            return False
    return True


def same_functional(got: str, want: str, benchmark: str) -> bool:
    try:
        value, expected = json.loads(got), json.loads(want)
    except json.JSONDecodeError:
        return False
    if value == expected:
        return True
    # APPS stores most call-based outputs wrapped in a list: [answer]
    return benchmark in ("apps", "taco") and isinstance(expected, list) and expected and value == expected[0]


def same_output(tests: dict, got: str, want: str) -> bool:
    """Does `got` pass as `want` under the benchmark's rule?"""
    bench = tests["benchmark"]
    if tests["format"] == "functional":
        return same_functional(got, want, bench)
    if bench == "livecodebench":
        return same_livecodebench(got, want)
    if bench == "codeforces":
        return same_codeforces(got, want, tests.get("float_tol"))
    return same_apps(got, want)


# ---------------------------------------------------------------- verdicts


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def verdict_of(tests: dict, runs: list[dict | None]) -> StdioResult:
    """The verdict from the cases' runs: the first case that fails decides."""
    total = len(tests["cases"])
    for i, (case, run) in enumerate(zip(tests["cases"], runs, strict=False)):
        if run is None:
            break
        if run["s"] == "timeout":
            return StdioResult("timeout", i, total, f"case {i + 1}: over {tests['time_limit_s']} s")
        if run["s"] == "error":
            return StdioResult("wrong", i, total, f"case {i + 1}: the program crashed")
        if not same_output(tests, run["o"], case["output"]):
            got, want = _short(run["o"]), _short(case["output"])
            return StdioResult("wrong", i, total, f"case {i + 1}: expected {want}, got {got}")
    return StdioResult("correct", total, total, "")


def grade(tests: dict, code: str, memory_mb: int = 1024, jobs: int = JOBS) -> StdioResult:
    """Run `code` on every case of a stdio/functional reference in the sandbox and compare the outputs."""
    problem = check_tests(tests)
    if problem:
        return StdioResult("bad_reference", 0, 0, problem)
    return verdict_of(tests, run_cases(tests, code, memory_mb, jobs))


def grade_many(items: list[tuple[dict, str]], workers: int = 2, memory_mb: int = 1024) -> list[StdioResult]:
    """Grade many (reference, code) pairs: `workers` sandboxes at once (threads wait on subprocesses)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda item: grade(item[0], item[1], memory_mb), items))
