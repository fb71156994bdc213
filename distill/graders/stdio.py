"""stdin/stdout and call-based code tests (codeforces, APPS, TACO, LiveCodeBench), each graded by its harness's rule.

A reference, built from each set's own row by `from_codeforces`, `from_apps`, `from_livecodebench`:

    {"format": "stdio", "benchmark": "codeforces", "time_limit_s": 2.0, "memory_mb": 256.0, "input_mode": "stdio",
     "checker": null, "cases": [{"input": "3\\n1 2 3\\n", "output": "6\\n"}, ...]}
    {"format": "functional", "benchmark": "livecodebench", "func_name": "maxSum", "time_limit_s": 6.0,
     "cases": [{"input": "[1, 2]\\n3", "output": "5"}, ...]}   # input: one JSON argument per line; output: JSON

How one program is graded: one sandbox (`run_python`) runs a small driver that forks the program once per case
(`jobs` cases at a time), stdin from the case's input (codeforces `input_mode: file`: input.txt / output.txt),
stdout to a file, and prints each case's output back. Only the program and the inputs enter that sandbox: every
comparison happens here, outside, with the set's own rule (distill.graders.rules.RULES), and a codeforces checker
runs afterwards in a second sandbox of its own, so nothing about an expected output is reachable by the program.
Each program runs as its harness runs it (RULES: prelude, __name__, APPS's and
LiveCodeBench's wrapping into a function with a patched StringIO stdin, exit-code rule, codeforces' memory_limit
and unlimited stack). The first case that crashes, runs out of time or writes too much stops the rest. A case may write less than
OUTPUT_LIMIT bytes (16 MiB), all cases together TOTAL_OUTPUT_LIMIT (64 MiB); more is "output limit exceeded" (a
wrong verdict, never a crash).

Time: each set's harness limits wall time per case (RULES); distill limits CPU time by default (wall backstop 2x + 1
s) so a loaded machine does not time out correct programs. `clock="wall"` (recipe: verify.code_clock) gives the
reference clock.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from distill.errors import DistillError
from distill.graders.rules import (
    RULES,
    WRAPS,
    codeforces_expected,
    codeforces_input,
    decode_value,
)
from distill.graders.sandbox import run_python

BENCHMARKS = tuple(RULES)
JOBS = 2  # cases of one program run at once (the machine's cores)
STARTUP_S = 10.0  # sandbox + driver start, on top of the cases' own budget
OUTPUT_LIMIT = 16 << 20  # bytes one case may write (stdout or output.txt); this many or more: over the limit
TOTAL_OUTPUT_LIMIT = (
    64 << 20
)  # bytes all cases of one program may write together (what comes back to the grader)
CHECKER_LIMIT_S = 10.0  # wall seconds the problem's checker gets per case


@dataclass
class StdioResult:
    verdict: str  # correct | wrong | timeout | bad_reference
    passed: int  # cases passed before the first failure
    total: int
    detail: str  # why it failed: "case 3: expected '6', got '5'"; "" when correct


# ---------------------------------------------------------------- references from each set's rows


def check_tests(tests: dict) -> str | None:
    """What is wrong with a reference, or None: the message names the field and the case."""
    if tests.get("format") not in ("stdio", "functional"):
        return f"format {tests.get('format')!r} is not stdio or functional"
    if tests.get("benchmark") not in BENCHMARKS:
        return f"benchmark {tests.get('benchmark')!r} is not one of {', '.join(BENCHMARKS)}"
    limit = tests.get("time_limit_s")
    if not isinstance(limit, int | float) or limit <= 0:
        return f"time_limit_s must be > 0 seconds, got {limit!r}"
    memory = tests.get("memory_mb")
    if memory is not None and (not isinstance(memory, int | float) or memory <= 0):
        return f"memory_mb must be > 0 MB, got {memory!r}"
    if tests.get("input_mode", "stdio") not in ("stdio", "file"):
        return f"input_mode must be stdio or file, got {tests.get('input_mode')!r}"
    if tests["format"] == "functional" and not tests.get("func_name"):
        return "a functional test needs func_name"
    return _check_cases(tests.get("cases"))


def _check_cases(cases) -> str | None:
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
    """APPS stores some inputs and outputs as lists of lines; its harness joins them with "\\n"."""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value)
    return value if isinstance(value, str) else None


def _input_output(row: dict, where: str) -> dict:
    """The `input_output` column (JSON text, or a dict already read): {"inputs", "outputs", "fn_name"?}."""
    raw = row.get("input_output")
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise DistillError(f"{where}: field input_output is empty")
    try:
        io = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as err:
        raise DistillError(f"{where}: field input_output is not JSON ({err.msg} at char {err.pos})") from None
    if (
        not isinstance(io, dict)
        or not isinstance(io.get("inputs"), list)
        or not isinstance(io.get("outputs"), list)
    ):
        raise DistillError(f"{where}: field input_output has no inputs/outputs lists")
    return io


def from_apps(row: dict, where: str, benchmark: str = "apps") -> dict:
    """A codeparrot/apps or BAAI/TACO row -> a reference. Only `input_output` is read: both harnesses give every
    case 4 s (TACO's `time_limit` column is not read by its testing_util.py)."""
    io = _input_output(row, where)
    inputs, outputs = io["inputs"], io["outputs"]
    if len(outputs) < len(inputs):
        raise DistillError(f"{where}: field input_output: case {len(outputs) + 1}: no expected output")
    if io.get("fn_name"):
        cases = [
            {"input": "\n".join(json.dumps(a) for a in args), "output": json.dumps(out)}
            for args, out in zip(inputs, outputs, strict=False)
        ]
        ref = {"format": "functional", "func_name": io["fn_name"]}
    else:
        cases = [{"input": _text(i), "output": _text(o)} for i, o in zip(inputs, outputs, strict=False)]
        ref = {"format": "stdio"}
    limit = RULES[benchmark]["time_limit_s"]
    return checked({**ref, "benchmark": benchmark, "time_limit_s": limit, "cases": cases}, where)


def _positive(row: dict, field: str, where: str, unit: str) -> float:
    value = row.get(field)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise DistillError(f"{where}: field {field} must be > 0 {unit}, got {value!r}")
    return float(value)


def check_checker(source, where: str) -> str | None:
    """A row's generated_checker: None, or Python that compiles (compiled here, never run outside the sandbox)."""
    if source is None or source == "":
        return None
    if not isinstance(source, str):
        raise DistillError(f"{where}: field generated_checker is not text")
    try:
        compile(source, "checker.py", "exec")
    except (SyntaxError, ValueError) as err:
        raise DistillError(
            f"{where}: field generated_checker does not compile ({type(err).__name__}: {err})"
        ) from None
    return source


def from_codeforces(row: dict, where: str) -> dict:
    """An open-r1/codeforces row: official_tests (+ generated_tests where present), time_limit (s), memory_limit
    (MB), input_mode (stdio | file), generated_checker (Python, or null)."""
    generated = row.get(
        "generated_tests"
    )  # a count in the default config; the tests themselves where a row has them
    tests = list(row.get("official_tests") or []) + (generated if isinstance(generated, list) else [])
    cases = [{"input": t.get("input"), "output": t.get("output")} for t in tests]
    ref = {
        "format": "stdio",
        "benchmark": "codeforces",
        "time_limit_s": _positive(row, "time_limit", where, "seconds"),
        "memory_mb": _positive(row, "memory_limit", where, "MB"),
        "input_mode": row.get("input_mode") or "stdio",
        "checker": check_checker(row.get("generated_checker"), where),
        "cases": cases,
    }
    return checked(ref, where)


def decode_private(blob: str, where: str) -> list:
    """LiveCodeBench's private_test_cases as its loader reads them: JSON text first, then
    base64(zlib(pickle(JSON text))) (lcb_runner/benchmarks/code_generation.py)."""
    import pickle

    try:
        return json.loads(blob)
    except json.JSONDecodeError:
        pass
    try:
        return json.loads(pickle.loads(zlib.decompress(base64.b64decode(blob))))  # noqa: S301 (the set's own format)
    except Exception as err:
        raise DistillError(
            f"{where}: field private_test_cases cannot be decoded ({type(err).__name__})"
        ) from None


def _lcb_cases(row: dict, where: str) -> list:
    try:
        public = json.loads(row["public_test_cases"])
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise DistillError(f"{where}: field public_test_cases: malformed ({type(err).__name__})") from None
    private = row.get("private_test_cases") or []
    private = decode_private(private, where) if isinstance(private, str) else private
    if not isinstance(private, list) or (row.get("private_test_cases") and not private):
        raise DistillError(f"{where}: field private_test_cases decodes to no test cases")
    cases = public + private
    if not all(isinstance(c, dict) for c in cases):
        raise DistillError(f"{where}: field public_test_cases/private_test_cases: a case is not an object")
    return cases


def from_livecodebench(row: dict, where: str) -> dict:
    """A code_generation_lite row: public_test_cases (JSON), private_test_cases, metadata (JSON; func_name makes
    it call-based, as get_evaluation_sample's fn_name does)."""
    cases = _lcb_cases(row, where)
    try:
        meta = row.get("metadata") or "{}"
        meta = json.loads(meta) if isinstance(meta, str) else meta
    except json.JSONDecodeError as err:
        raise DistillError(f"{where}: field metadata is not JSON ({err.msg})") from None
    func = meta.get("func_name") if isinstance(meta, dict) else None
    ref = {"format": "functional", "func_name": func} if func else {"format": "stdio"}
    tests = [{"input": c.get("input"), "output": c.get("output")} for c in cases]
    return checked(
        {
            **ref,
            "benchmark": "livecodebench",
            "time_limit_s": RULES["livecodebench"]["time_limit_s"],
            "cases": tests,
        },
        where,
    )


# ---------------------------------------------------------------- the driver that runs inside the sandbox

DRIVER = r"""
import base64, io, json, os, resource, select, signal, sys, time, zlib
SPEC = json.loads(__SPEC__)
patched = SPEC["patched_stdin"] and not SPEC["func"]
cases, limit, jobs = SPEC["inputs"], SPEC["limit"], SPEC["jobs"]
__WRAPS__
text, entry = harness_program(None if SPEC["func"] else SPEC["wrap"], SPEC["prelude"], SPEC["code"])
source = compile(text, "solution.py", "exec")
exec(SPEC["prelude"], {})  # import the prelude's modules once: each forked case finds them loaded
if SPEC["patched_stdin"]:
    from unittest.mock import mock_open

def case_files(i):
    # unlinked at once: the program of one case cannot touch another case's input or output
    fin = os.open(f"in{i}", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fin, cases[i].encode())
    os.lseek(fin, 0, os.SEEK_SET)
    fout = os.open(f"out{i}", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.unlink(f"in{i}")
    os.unlink(f"out{i}")
    return fin, fout

def tag(v):  # a returned value as JSON, tuples, sets and dicts kept apart from lists
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, list):
        return [tag(x) for x in v]
    if isinstance(v, tuple):
        return {"t": [tag(x) for x in v]}
    if isinstance(v, (set, frozenset)):
        return {"s": [tag(x) for x in v]}
    if isinstance(v, dict):
        return {"d": [[tag(k), tag(x)] for k, x in v.items()]}
    return {"r": repr(v)[:200]}

def functional(i):
    args = [json.loads(line) for line in cases[i].split("\n")]
    if SPEC["int_keys"] and args and isinstance(args[0], dict):
        try:
            args = [{int(k): v for k, v in args[0].items()}]
        except ValueError:
            pass
    result_fd = os.dup(1)
    os.dup2(2, 1)  # the program's own prints must not mix with the returned value
    space = {"__name__": "tmp_sol"}
    exec(source, space)
    target = space["Solution"]() if "class Solution" in SPEC["code"] else None
    fn = getattr(target, SPEC["func"]) if target is not None else space[SPEC["func"]]
    os.write(result_fd, json.dumps(tag(fn(*args))).encode())

def patch_stdio(text):
    # APPS's and LiveCodeBench's call_method: sys.stdin a StringIO of the input (no .buffer), open() a mock that
    # reads the input, print() captured by a StringIO (Capturing); the captured text is written out afterwards
    import builtins
    sys.stdin = io.StringIO(text)
    builtins.open = mock_open(read_data=text)
    sys.stdout = io.StringIO()

def write_captured(fd):
    if not isinstance(sys.stdout, io.StringIO):  # the program died before its function was called
        return
    data, sys.stdout = sys.stdout.getvalue().encode(), sys.__stdout__
    while data:
        data = data[os.write(fd, data):]

def exit_code(err):
    if SPEC["catch_exit"] or err.code is None:
        return 0
    return err.code & 0xFF if isinstance(err.code, int) else 1

def run_program(i):
    # the module as the harness loads it, then (APPS, LiveCodeBench) its function called with stdin patched
    space = {"__name__": SPEC["main_name"]}
    exec(source, space)
    if entry:
        if patched:
            patch_stdio(cases[i])
        space[entry]()

def child(i, fin, fout):
    code = 1
    try:
        os.setpgid(0, 0)
        null = os.open("/dev/null", os.O_RDWR)
        if SPEC["file_mode"]:  # the program reads input.txt and writes output.txt in its own folder
            os.mkdir(f"case{i}")
            os.chdir(f"case{i}")
            with open("input.txt", "wb") as f:
                f.write(cases[i].encode())
            os.dup2(null, 0)
            os.dup2(null, 1)
        elif patched:  # the harness's own stdin and stdout are not the case's: it patches sys.stdin/sys.stdout
            os.dup2(null, 0)
            os.dup2(null, 1)
        else:
            os.dup2(fin, 0)
            os.dup2(fout, 1)
        os.dup2(null, 2)
        os.close(fin)
        cpu = int(limit) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (SPEC["output_limit"],) * 2)
        if SPEC["memory"]:
            resource.setrlimit(resource.RLIMIT_AS, (SPEC["memory"] << 20,) * 2)
        if SPEC["stack_unlimited"]:  # piston's run script: `ulimit -s unlimited` (deep recursion in C frames)
            hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
            resource.setrlimit(resource.RLIMIT_STACK, (hard, hard))
        if not SPEC["exit_builtin"]:
            import builtins
            builtins.exit = builtins.quit = None
        try:
            if SPEC["func"]:
                functional(i)
            else:
                run_program(i)
            code = 0
        except SystemExit as err:
            code = exit_code(err)
        if patched:
            write_captured(fout)
        sys.stdout.flush()
        if SPEC["file_mode"]:
            try:
                with open("output.txt", "rb") as f, os.fdopen(fout, "wb") as out:
                    out.write(f.read())
                os.remove("output.txt")  # the sandbox's tmpfs holds one case's files at a time
            except FileNotFoundError:
                pass
            os.remove("input.txt")
    finally:
        os._exit(code)  # never back into the driver's loop

def report(i, pid, fd, fout, start, killed):
    _, status, usage = os.wait4(pid, 0)
    os.close(fd)
    try:
        os.killpg(pid, signal.SIGKILL)  # whatever the program left running
    except ProcessLookupError:
        pass
    cpu_s, wall_s = usage.ru_utime + usage.ru_stime, time.monotonic() - start
    code = os.waitstatus_to_exitcode(status)
    over = cpu_s > limit if SPEC["clock"] == "cpu" else wall_s > limit
    size = os.fstat(fout).st_size
    if killed or over or code == -signal.SIGXCPU:
        state = "timeout"
    elif size >= SPEC["output_limit"] or written[0] + size > SPEC["total_limit"]:
        state = "output_limit"
    else:
        state = "ok" if code == 0 else "error"
    out = os.pread(fout, size, 0) if state == "ok" else b""
    written[0] += len(out)
    os.close(fout)
    row = {"i": i, "s": state, "code": code, "cpu": round(cpu_s, 3), "o": base64.b64encode(zlib.compress(out)).decode()}
    sys.stdout.write("CASE " + json.dumps(row) + "\n")
    sys.stdout.flush()
    return state

pending, running, failed, written = list(range(len(cases))), {}, False, [0]
backstop = 2 * limit + 1 if SPEC["clock"] == "cpu" else limit
while (pending and not failed) or running:
    while pending and not failed and len(running) < jobs:
        i = pending.pop(0)
        fin, fout = case_files(i)
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            child(i, fin, fout)
        os.close(fin)
        running[os.pidfd_open(pid)] = (i, pid, fout, start)
    wait = max(0.0, min(r[3] for r in running.values()) + backstop - time.monotonic())
    ready = select.select(list(running), [], [], wait)[0]
    for fd in list(running):
        i, pid, fout, start = running[fd]
        killed = fd not in ready and time.monotonic() >= start + backstop
        if fd not in ready and not killed:
            continue
        if killed:
            os.killpg(pid, signal.SIGKILL)
        del running[fd]
        failed = report(i, pid, fd, fout, start, killed) != "ok" or failed
"""

CHECKER_DRIVER = r"""
import json, os, subprocess, sys
SPEC = json.loads(__SPEC__)
with open("checker.py", "w") as f:
    f.write(SPEC["checker"])
for i, case in enumerate(SPEC["cases"]):
    os.mkdir(f"c{i}")
    for name in ("input.txt", "correct_output.txt", "solution_output.txt"):
        with open(f"c{i}/{name}", "w") as f:
            f.write(case[name])
    args = [sys.executable, "-I", "checker.py"] + [f"c{i}/{n}" for n in ("input.txt", "correct_output.txt", "solution_output.txt")]
    try:
        run = subprocess.run(args, capture_output=True, text=True, timeout=SPEC["limit"])
        verdict = run.returncode == 0 and run.stdout.strip() == "1"
        why = f"checker exit {run.returncode}, printed {run.stdout.strip()[:40]!r}"
    except subprocess.TimeoutExpired:
        verdict, why = False, "checker ran out of time"
    print("CHECK " + json.dumps({"i": i, "ok": verdict, "why": why}), flush=True)
"""


def driver_program(tests: dict, code: str, jobs: int = JOBS, clock: str = "cpu") -> str:
    """The sandbox program: the driver with the program and the inputs (nothing from the expected outputs)."""
    rule = RULES[tests["benchmark"]]
    inputs = [c["input"] for c in tests["cases"]]
    if tests["benchmark"] == "codeforces":
        inputs = [codeforces_input(text) for text in inputs]
    functional = tests["format"] == "functional"
    spec = {
        "inputs": inputs,
        "limit": float(tests["time_limit_s"]),
        "clock": clock,
        "jobs": jobs,
        "func": tests.get("func_name") if functional else None,
        "int_keys": tests["benchmark"] in ("apps", "taco"),
        "prelude": rule["prelude"],
        "code": code,
        "main_name": rule["main_name"],
        "catch_exit": rule["exit"] == "SystemExit passes",
        "exit_builtin": rule["exit_builtin"],
        "memory": int(tests["memory_mb"]) if tests.get("memory_mb") else None,
        "stack_unlimited": rule["stack"] == "unlimited",
        "patched_stdin": rule["stdin"] == "patched",
        "wrap": rule["wrap"],
        "file_mode": tests.get("input_mode") == "file",
        "output_limit": OUTPUT_LIMIT,
        "total_limit": TOTAL_OUTPUT_LIMIT,
    }
    return DRIVER.replace("__WRAPS__", WRAPS).replace("__SPEC__", repr(json.dumps(spec)))


def wall_budget(tests: dict, jobs: int = JOBS) -> float:
    """Seconds the whole grading may take: every case at its wall backstop, `jobs` at a time, plus start; the
    checker's own sandbox on top where the problem has one."""
    rounds = math.ceil(len(tests["cases"]) / jobs)
    budget = rounds * (2 * float(tests["time_limit_s"]) + 1) + STARTUP_S
    if tests.get("checker"):
        budget += len(tests["cases"]) * CHECKER_LIMIT_S + STARTUP_S
    return budget


def run_cases(
    tests: dict, code: str, memory_mb: int = 1024, jobs: int = JOBS, clock: str = "cpu"
) -> list[dict | None]:
    """Per case {"s": ok|error|timeout|output_limit, "o": stdout, "code": exit, "cpu": s}; None: not run."""
    inputs_mb = sum(len(c["input"]) for c in tests["cases"]) >> 20
    if tests.get("memory_mb"):  # the driver itself needs room above the problem's own limit
        memory_mb = max(memory_mb, int(tests["memory_mb"]) + 512)
    result = run_python(
        driver_program(tests, code, jobs, clock),
        timeout_s=wall_budget(tests, jobs),
        memory_mb=memory_mb,
        tmp_mb=64 + 2 * inputs_mb + jobs * (OUTPUT_LIMIT >> 20),  # inputs and outputs live on its tmpfs
        file_mb=16 + inputs_mb + 2 * (TOTAL_OUTPUT_LIMIT >> 20),
        stdout_bytes=2 * TOTAL_OUTPUT_LIMIT + (1 << 20),  # base64 of zlib: at most ~1.34x the outputs
    )
    runs: list[dict | None] = [None] * len(tests["cases"])
    for line in result.stdout.splitlines():
        if line.startswith("CASE "):
            row = json.loads(line[5:])
            out = zlib.decompress(base64.b64decode(row.pop("o"))).decode(errors="replace")
            runs[row.pop("i")] = {**row, "o": out}
    if all(r is None for r in runs):  # the driver died before any case: the program never ran as a program
        runs[0] = {
            "s": "timeout" if result.status == "timeout" else "error",
            "o": "",
            "code": None,
            "cpu": 0.0,
        }
    return runs


def run_checker(tests: dict, runs: list[dict | None]) -> dict[int, tuple[bool, str]]:
    """The problem's checker on every case that ran: {case: (passed, why)}, in a sandbox of its own."""
    cases = [
        {
            "input.txt": codeforces_input(case["input"]),
            "correct_output.txt": codeforces_expected(case["output"]),
            "solution_output.txt": run["o"],
        }
        for case, run in zip(tests["cases"], runs, strict=True)
        if run is not None and run["s"] == "ok"
    ]
    spec = {"checker": tests["checker"], "cases": cases, "limit": CHECKER_LIMIT_S}
    program = CHECKER_DRIVER.replace("__SPEC__", repr(json.dumps(spec)))
    size_mb = sum(len(v) for c in cases for v in c.values()) >> 20
    result = run_python(
        program,
        timeout_s=len(cases) * CHECKER_LIMIT_S + STARTUP_S,
        tmp_mb=64 + 2 * size_mb,
        file_mb=16 + size_mb,
    )
    checks = [json.loads(line[6:]) for line in result.stdout.splitlines() if line.startswith("CHECK ")]
    ran = [i for i, run in enumerate(runs) if run is not None and run["s"] == "ok"]
    return {ran[c["i"]]: (c["ok"], c["why"]) for c in checks}


# ---------------------------------------------------------------- comparing outputs, per set


def same_output(tests: dict, got: str, want: str) -> bool:
    """Does `got` pass as `want` under the set's rule? Functional: `got` is the driver's tagged JSON."""
    rule = RULES[tests["benchmark"]]
    if tests["format"] == "functional":
        try:
            value = decode_value(json.loads(got))
        except (json.JSONDecodeError, ValueError):
            return False
        return bool(rule["call"](value, json.loads(want)))
    return bool(rule["stdio"](got, want))


# ---------------------------------------------------------------- verdicts


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _case_failure(tests: dict, i: int, run: dict) -> tuple[str, str] | None:
    """(verdict, detail) when case i did not run to a normal end, else None."""
    if run["s"] == "timeout":
        return "timeout", f"case {i + 1}: over {tests['time_limit_s']} s"
    if run["s"] == "output_limit":
        limits = f"{OUTPUT_LIMIT >> 20} MiB a case, {TOTAL_OUTPUT_LIMIT >> 20} MiB in all"
        return "wrong", f"case {i + 1}: output limit exceeded ({limits})"
    if run["s"] == "error":
        return "wrong", f"case {i + 1}: the program crashed (exit {run.get('code')})"
    return None


def verdict_of(tests: dict, runs: list[dict | None], checks: dict | None = None) -> StdioResult:
    """The verdict from the cases' runs: the first case that fails decides."""
    total = len(tests["cases"])
    for i, (case, run) in enumerate(zip(tests["cases"], runs, strict=False)):
        if run is None:
            break
        failure = _case_failure(tests, i, run)
        if failure:
            return StdioResult(failure[0], i, total, failure[1])
        if checks is not None:
            ok, why = checks.get(i, (False, "checker gave no verdict"))
            if not ok:
                return StdioResult("wrong", i, total, f"case {i + 1}: {why}")
        elif not same_output(tests, run["o"], case["output"]):
            got, want = _short(run["o"]), _short(case["output"])
            return StdioResult("wrong", i, total, f"case {i + 1}: expected {want}, got {got}")
    return StdioResult("correct", total, total, "")


def grade(tests: dict, code: str, memory_mb: int = 1024, jobs: int = JOBS, clock: str = "cpu") -> StdioResult:
    """Run `code` on every case of a reference in the sandbox and judge the outputs here by the set's rule."""
    problem = check_tests(tests)
    if problem:
        return StdioResult("bad_reference", 0, 0, problem)
    runs = run_cases(tests, code, memory_mb, jobs, clock)
    ran = any(run is not None and run["s"] == "ok" for run in runs)
    checks = (run_checker(tests, runs) if ran else {}) if tests.get("checker") else None
    return verdict_of(tests, runs, checks)


def grade_many(
    items: list[tuple[dict, str]], workers: int = 2, memory_mb: int = 1024, clock: str = "cpu"
) -> list[StdioResult]:
    """Grade many (reference, code) pairs: `workers` sandboxes at once (threads wait on subprocesses)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda item: grade(item[0], item[1], memory_mb, clock=clock), items))
