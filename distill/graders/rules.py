"""Each code set's verdict rule as its reference harness defines it: a table (RULES) and the harnesses' compare code.

The compare functions are ported line by line from the published harnesses (source named on each), quirks kept,
and run here, outside the sandbox, on the program's captured output: the program never sees an expected output.

    RULES["apps"]["compare"](got_stdout, expected)  -> bool
"""

from __future__ import annotations

import contextlib
import re
from decimal import Decimal, InvalidOperation

# Standard-library imports each harness runs a program after (numpy, in APPS's and TACO's, is not in the
# sandbox's interpreter: a program that uses `np` without importing it fails here and passes there).
APPS_PRELUDE = (
    "import sys\nimport time\nimport itertools\nfrom itertools import accumulate, product, permutations, "
    "combinations\nimport collections\nfrom collections import Counter, OrderedDict, deque, defaultdict, "
    "ChainMap\nfrom functools import lru_cache\nimport math\nfrom math import sqrt, sin, cos, tan, ceil, fabs, "
    "floor, gcd, exp, log, log2\nimport fractions\nfrom typing import List, Tuple\nimport random\nimport heapq\n"
    "from heapq import *\n"
)
LCB_PRELUDE = (  # lcb_runner/evaluation/testing_util.py import_string
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
    "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\n"
    "from statistics import *\nfrom itertools import *\nfrom functools import *\nfrom operator import *\n"
    "from io import *\nfrom sys import *\nfrom json import *\nfrom builtins import *\nfrom typing import *\n"
    "import string, re, datetime, collections, heapq, bisect, copy, math, random, statistics, itertools\n"
    "import functools, operator, io, sys, json\nsys.setrecursionlimit(50000)\n"
)


# How two harnesses turn a stdin program into a function before calling it, as Python source that runs inside the
# sandbox's driver (and in the report's plain harness): ported line by line, quirks kept. APPS indents every line
# that does not start with "from "/"import " into `def code():`; LiveCodeBench moves the body of a last
# `if __name__ == '__main__':` up (clean_if_name) and wraps every statement but the imports in
# `def wrapped_function():` (make_function). Either way the program's top-level names become the function's
# locals: a `global x` in one of its functions then finds no x, and both harnesses fail such a program.
WRAPS = r"""
import ast


def apps_wrap(prelude, test):  # hendrycks/apps eval/testing_util.py run_test, standard_input branch
    tmp_test = test.split("\n")
    new_test = []
    for x in tmp_test:
        if (not x.startswith("from ")) and (not x.startswith("import ")):
            new_test.append("\t" + x + "\n")
        else:
            new_test.append(x + "\n")
    tmp_test = new_test
    new_test = ""
    started = False
    for i in tmp_test:
        if i.startswith("\t") and not started:
            new_test += "stdin = sys.stdin\nstdout = sys.stdout\n"
            new_test += "def code():\n"
            new_test += i
            started = True
        elif started and ((i.startswith("from ")) or (i.startswith("import "))):
            new_test += "\t" + i
        else:
            new_test += i
    return prelude + new_test


def clean_if_name(code):  # lcb_runner/evaluation/testing_util.py
    try:
        astree = ast.parse(code)
        last_block = astree.body[-1]
        if isinstance(last_block, ast.If):
            condition = last_block.test
            if ast.unparse(condition).strip() == "__name__ == '__main__'":
                code = ast.unparse(astree.body[:-1]) + "\n" + ast.unparse(last_block.body)
    except Exception:
        pass
    return code


def make_function(import_string, code):  # lcb_runner/evaluation/testing_util.py
    try:
        import_stmts = []
        all_other_stmts = []
        astree = ast.parse(code)
        for stmt in astree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                import_stmts.append(stmt)
            else:
                all_other_stmts.append(stmt)
        function_ast = ast.FunctionDef(
            name="wrapped_function",
            args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[]),
            body=all_other_stmts,
            decorator_list=[],
            lineno=-1,
        )
        return import_string + "\n" + ast.unparse(import_stmts) + "\n" + ast.unparse(function_ast)
    except Exception:
        return code


def taco_script(prelude, raw_code):  # FlagOpen/TACO metrics/testing_util.py synthesize_std_code: sol2
    sol2 = ""
    started = False
    for i in raw_code.split("\n"):
        code_type = 2 if "import *" in i else 1 if i.startswith("from ") or i.startswith("import ") else 0
        if code_type == 0 and not started:
            sol2 += prelude
            sol2 += "\nstdin = sys.stdin\nstdout = sys.stdout\n"
            sol2 += f"{i}\n"
            started = True
        else:
            sol2 += f"{i}\n"
    return sol2


def harness_program(wrap, prelude, code):
    # (module source, the function to call after loading it; None: the module is the program)
    if wrap == "apps":
        return apps_wrap(prelude, code), "code"
    if wrap == "taco":
        return taco_script(prelude, code), None
    if wrap == "lcb":
        return make_function(prelude, clean_if_name(code)), "wrapped_function"
    return prelude + code, None
"""


# ---------------------------------------------------------------- APPS: hendrycks/apps eval/testing_util.py


def _allclose(a: list[float], b: list[float]) -> bool:
    """numpy.allclose(a, b) for equal-length lists: |a - b| <= 1e-8 + 1e-5 |b|, inf equal to itself, nan never."""
    return all(x == y or abs(x - y) <= 1e-8 + 1e-5 * abs(y) for x, y in zip(a, b, strict=True))


def _stripped_equal(s1: str, s2: str) -> bool:
    return s1.strip() == s2.strip()


def _float_sets(groups) -> set:
    return {frozenset(round(float(t), 3) for t in s) for s in groups}


def apps_stdio(got: str, want: str) -> bool:
    """run_test's standard_input branch after the call: `output` is the captured stdout's splitlines()."""
    output = got.splitlines()
    if _stripped_equal("\n".join(output), want) or _stripped_equal(
        "\n".join(o.strip() for o in output), want
    ):
        return True  # custom_compare_
    if output == [want]:  # check1
        return True
    expected = [x.strip() for x in want.split("\n") if x]  # "try one more time without \n"
    if output == [expected] or output == expected:  # check2
        return True
    output = [o for o in output if o]
    if output == [expected] or output == expected:  # check3
        return True
    try:
        out_f, gt_f = [float(e) for e in output], [float(e) for e in expected]
        if len(out_f) == len(gt_f) and _allclose(out_f, gt_f):
            return True
    except ValueError:
        pass
    expected_sets = [set(line.split()) for line in expected]
    if output == expected_sets:  # check4 (equal only when both are empty)
        return True
    output_sets = [set(tokens) for tokens in (line.split() for line in output) if tokens]
    result = {frozenset(s) for s in output_sets} == {frozenset(s) for s in expected_sets}  # check5
    with contextlib.suppress(
        ValueError
    ):  # check6: "if they are all numbers, round so that similar numbers ..."
        result = result or _float_sets(output_sets) == _float_sets(expected_sets)
    return result


def _int_keys(value):
    """JSON forces dictionaries to have string keys; this undoes this (assuming a singleton list)."""
    try:
        if isinstance(value, dict):
            return [{int(k): v for k, v in value.items()}]
    except ValueError:
        pass
    try:
        if isinstance(value[0], dict):
            return [{int(k): v for k, v in value[0].items()}]
    except (ValueError, TypeError, IndexError, KeyError):
        pass
    return value


def apps_call(got, want) -> bool:
    """run_test's call_based branch: tuple -> list, output == expected or expected[0], tuples inside too."""
    want = _int_keys(want)
    if isinstance(got, tuple):
        got = list(got)
    result = got == want
    if isinstance(want, list) and want:
        result = result or got == want[0]
    try:
        if isinstance(got[0], tuple):
            result = result or [list(x) for x in got] == want[0]
    except (TypeError, IndexError, KeyError):
        pass
    return result


# ---------------------------------------------------------------- TACO: FlagOpen/TACO metrics/testing_util.py


def taco_stdio(got: str, want: str) -> bool:
    """compare_std_results(result.stdout, outputs): `exec_outputs` is the whole stdout as one string (the program
    ran as `python file` in a subprocess, text mode), so the list branches never apply and the float and set
    checks iterate over its characters and tokens, as the source does."""
    exec_outputs = got.replace("\r\n", "\n").replace("\r", "\n")  # subprocess text=True: universal newlines
    if _stripped_equal(exec_outputs, want):
        return True
    outputs = [x.strip() for x in want.split("\n") if x]
    try:
        out_f, gt_f = [float(e) for e in exec_outputs], [float(e) for e in outputs]
        if len(out_f) == len(gt_f) and _allclose(out_f, gt_f):
            return True
    except ValueError:
        pass
    output_sets = [set(i.split()) for i in outputs]
    tokens = {t for t in exec_outputs.split() if t}
    result = {frozenset(s) for s in tokens} == {frozenset(s) for s in output_sets}
    with contextlib.suppress(ValueError):
        result = result or _float_sets(tokens) == _float_sets(output_sets)
    return result


# ---------------------------------------------------------------- LiveCodeBench: lcb_runner/evaluation/testing_util.py


def _decimals(line: str) -> tuple[bool, list[Decimal]]:
    try:
        return True, [Decimal(elem) for elem in line.split()]
    except InvalidOperation:
        return False, []


def _stripped_lines(val: str) -> list[str]:
    return [line.strip() for line in val.strip().split("\n")]


def lcb_stdio(got: str, want: str) -> bool:
    """grade_stdio: stripped lines, same count; each line equal, or equal as lists of Decimals."""
    got_lines, want_lines = _stripped_lines(got), _stripped_lines(want)
    if len(got_lines) != len(want_lines):
        return False
    for g, w in zip(got_lines, want_lines, strict=True):
        if g == w:
            continue
        ok_g, dec_g = _decimals(g)
        ok_w, dec_w = _decimals(w)
        if not (ok_g and ok_w) or dec_g != dec_w:
            return False
    return True


def lcb_call(got, want) -> bool:
    """grade_call_based: a tuple result is read as a list (only at the top), then prediction == json.loads(output)."""
    if isinstance(got, tuple):
        got = list(got)
    return got == want


# ---------------------------------------------------------------- codeforces: open-r1 + the piston `codeforces` package

_SPACE = re.compile(r"[ \t\n\v\f\r]+")  # tr's [:space:] in the C locale


def _normalize_cf(text: str) -> list[str]:
    """normalize_output: whole-word yes/no upper-cased (any case), every whitespace run one space, trimmed."""
    text = re.sub(r"\b(yes)\b", "YES", text, flags=re.IGNORECASE | re.ASCII)
    text = re.sub(r"\b(no)\b", "NO", text, flags=re.IGNORECASE | re.ASCII)
    return [t for t in _SPACE.split(text) if t]


def codeforces_stdio(got: str, want: str) -> bool:
    """No checker: `diff -bq <(normalize_output correct_output.txt) <(normalize_output solution_output)`."""
    return _normalize_cf(got) == _normalize_cf(codeforces_expected(want))


def codeforces_expected(want: str) -> str:
    """correct_output.txt as the run script rewrites it: `echo "$(cat f)"` (trailing newlines -> one), \\r$ dropped."""
    return re.sub(r"\r$", "", want.rstrip("\n") + "\n", flags=re.MULTILINE)


def codeforces_input(text: str) -> str:
    """`sed -i 's/\\r$//' input.txt`: CRLF inputs are normalised before the program reads them."""
    return re.sub(r"\r$", "", text, flags=re.MULTILINE)


def _unsupported(got, want) -> bool:
    return False


# ---------------------------------------------------------------- the table

# set -> its rule. time_limit_s: the harness's own per-case limit ("row" = the row's column); clock: what the
# harness times (distill times CPU by default, `verify.code_clock: wall` gives the reference clock); exit: what a
# non-zero exit or SystemExit means; main_name: __name__ the program runs under.
RULES: dict[str, dict] = {
    "codeforces": {
        "source": "huggingface/open-r1 src/open_r1/utils/competitive_programming/cf_scoring.py + the piston "
        "`codeforces` package's run script (packages/codeforces/1.0.0/run)",
        "stdio": codeforces_stdio,
        "call": _unsupported,
        "time_limit_s": "row",  # time_limit (s), `timeout --preserve-status TIME_LIMIT`
        "clock": "wall",
        "memory": "row",  # memory_limit (MB): ulimit -v on the program
        "stack": "unlimited",  # the run script's `ulimit -s unlimited`
        "stdin": "pipe",  # the program's real stdin
        "wrap": None,  # python3 main.py
        "exit": "nonzero fails",  # any non-zero exit is a runtime error, whatever it printed
        "main_name": "__main__",
        "prelude": "",
        "exit_builtin": True,
        "compare_text": "checker (`generated_checker`: python checker.py input correct output, passes on stdout "
        "'1' and exit 0) when the row has one; else whitespace tokens, yes/no any case",
        "crlf": "input \\r$ stripped before the run; expected \\r$ stripped; \\r in output is whitespace",
    },
    "apps": {
        "source": "hendrycks/apps eval/testing_util.py (run_test, custom_compare_)",
        "stdio": apps_stdio,
        "call": apps_call,
        "time_limit_s": 4.0,  # `timeout = 4`, signal.alarm per case
        "clock": "wall",
        "memory": None,  # reliability_guard is never called: no limit
        "stack": "default",
        "stdin": "patched",  # call_method: sys.stdin = StringIO(input), open() mocked, stdout captured
        "wrap": "apps",  # the program's lines indented into `def code():` (WRAPS)
        "exit": "SystemExit passes",  # call_method catches SystemExit; an exception fails the case
        "main_name": "tmp_sol",  # the code runs in RuntimeModule 'tmp_sol': `if __name__ == '__main__'` is skipped
        "prelude": APPS_PRELUDE,
        "exit_builtin": True,
        "compare_text": "stripped whole output, then lines (stripped, empty dropped), floats with allclose, "
        "then lines as sets of tokens (line and token order free, 3-decimal rounding)",
        "crlf": "stdout splitlines(); expected split on \\n and stripped",
    },
    "taco": {
        "source": "FlagOpen/TACO metrics/testing_util.py (execute_std_code, compare_std_results, execute_cb_code)",
        "stdio": taco_stdio,
        "call": apps_call,  # execute_cb_code: the same checks as APPS's call_based branch
        "time_limit_s": 4.0,  # TIMEOUT = 4 for every case; the row's time_limit is not read
        "clock": "wall",
        "memory": None,
        "stack": "default",
        "stdin": "pipe",  # subprocess.run(input=...)
        "wrap": "taco",  # `python file` of the program after its prelude and stdin/stdout aliases (WRAPS)
        "exit": "nonzero fails",  # returncode != 0 is "returncode:N"
        "main_name": "__main__",  # `python file` in a subprocess
        "prelude": APPS_PRELUDE,
        "exit_builtin": True,
        "compare_text": "stripped whole output; the source's later checks run on the output's characters "
        "and tokens and rarely apply",
        "crlf": "universal newlines on stdout (subprocess text mode)",
    },
    "livecodebench": {
        "source": "LiveCodeBench/LiveCodeBench lcb_runner/evaluation/testing_util.py (grade_stdio, "
        "grade_call_based) + lcb_runner/benchmarks/code_generation.py",
        "stdio": lcb_stdio,
        "call": lcb_call,
        "time_limit_s": 6.0,  # run_test(timeout=6), signal.alarm per case
        "clock": "wall",
        "memory": None,  # reliability_guard(None)
        "stack": "default",
        "stdin": "patched",  # call_method, as APPS's
        "wrap": "lcb",  # clean_if_name + make_function (WRAPS)
        "exit": "SystemExit passes",  # sys.exit() ends the call normally; builtins exit/quit are None
        "main_name": "tmp_sol",  # ModuleType("tmp_sol"); clean_if_name unwraps only a *last* `if __name__ ==`
        "prelude": LCB_PRELUDE,
        "exit_builtin": False,  # reliability_guard: builtins.exit = builtins.quit = None
        "compare_text": "stripped lines, same count; a line equal or equal as Decimals; call-based: "
        "tuple -> list at the top only, then ==",
        "crlf": "lines stripped (\\r is stripped whitespace at a line end)",
    },
}


# ---------------------------------------------------------------- return values of call-based programs


def decode_value(value):
    """A returned value as the sandbox driver tagged it (tuples, dicts, sets kept apart from lists) -> Python."""
    if isinstance(value, list):
        return [decode_value(v) for v in value]
    if not isinstance(value, dict):
        return value
    (tag, inner), *_ = value.items()
    if tag == "t":
        return tuple(decode_value(v) for v in inner)
    if tag == "s":
        return {decode_value(v) for v in inner}
    if tag == "d":
        return {_hashable(decode_value(k)): decode_value(v) for k, v in inner}
    return Unreadable(inner)  # "r": an object with no JSON form; equal to nothing


def _hashable(key):
    return tuple(key) if isinstance(key, list) else key


class Unreadable:
    """A returned object the driver could only describe (its repr): never equal to an expected output."""

    def __init__(self, text: str):
        self.text = text

    def __eq__(self, other) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return self.text
