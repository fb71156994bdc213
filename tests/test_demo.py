"""The CPU demo's pieces that must hold for its verdict to mean anything: arith splits from one distribution with
disjoint problems and no shared 8-gram, the paired gain and its verdict line, the before/after chart, and engine
output kept off the terminal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from distill.curate.decontam import build_index, find_contamination
from distill.data import ARITH_A, ARITH_B, ARITH_SPLITS, ARITH_TEMPLATES, load_prompts
from distill.engines.backends import engine_output
from distill.eval.metrics import paired_gain
from distill.eval.run import held_out_verdict, plot_before_after


def _problem_key(problem: str) -> tuple[int, int, int]:
    """(template, a, b) back from the text: the template whose fixed words match, then the two numbers."""
    for t, (template, _) in enumerate(ARITH_TEMPLATES):
        pattern = re.escape(template).replace(r"\{name\}", r"\w+").replace(r"\{a\}", r"(\d+)")
        if m := re.fullmatch(pattern.replace(r"\{b\}", r"(\d+)"), problem):
            first = template.index("{a}") < template.index("{b}")
            x, y = (int(g) for g in m.groups())
            return (t, x, y) if first else (t, y, x)
    raise AssertionError(f"no template matches {problem!r}")


def test_arith_splits_share_one_distribution_and_no_problem():
    keys = {}
    for split, (count, names) in ARITH_SPLITS.items():
        rows = load_prompts("arith", split)
        assert len(rows) == count == len({r["problem"] for r in rows})
        keys[split] = set()
        for row in rows:
            t, first, b = _problem_key(row["problem"])
            op = ARITH_TEMPLATES[t][1]
            # sub and div state a+b and a*b; their answer is a (whole, non-negative)
            a = {"sub": first - b, "div": first // b}.get(op, first)
            assert {"add": a + b, "sub": a, "mul": a * b, "div": a}[op] == int(row["reference"])
            assert a in ARITH_A and b in ARITH_B
            assert any(name in row["problem"] for name in names)
            keys[split].add((t, a, b))
    assert (
        not keys["train"] & keys["test"]
        and not keys["train"] & keys["dev"]
        and not keys["dev"] & keys["test"]
    )
    # same distribution: every template and most first numbers occur in each split
    for split in keys:
        assert {t for t, _, _ in keys[split]} == set(range(len(ARITH_TEMPLATES)))
        assert len({a for _, a, _ in keys[split]}) >= len(ARITH_A) - 2


def test_arith_train_shares_no_8gram_with_dev_or_test():
    """What the demo's curate does (arith:test among its decontamination benchmarks): nothing is dropped, from
    any slice of train: corpus boilerplate (an n-gram in 5+ checked prompts) must not be what hides an overlap."""
    index = build_index({s: load_prompts("arith", s) for s in ("test", "dev")}, 8)
    train = [r["problem"] for r in load_prompts("arith", "train")]
    for start in range(0, len(train), 4):
        found, boilerplate = find_contamination(train[start : start + 4], index, 0.001)
        assert ([f for f in found if f], boilerplate) == ([], 0), start


def test_paired_gain_removes_shared_problem_difficulty():
    before = {"p1": [False, False], "p2": [True, False], "p3": [True, True]}
    after = {"p1": [True, False], "p2": [True, True], "p3": [True, True], "extra": [True]}
    gain, se, n = paired_gain(after, before)
    # differences 0.5, 0.5, 0.0 on the 3 shared problems: mean 1/3, sd 0.2887, SE 0.2887 / sqrt(3)
    assert (gain, n) == (pytest.approx(1 / 3), 3)
    assert se == pytest.approx((1 / 12) ** 0.5 / 3**0.5)
    assert paired_gain({"p": [True]}, {"q": [True]}) == (0.0, 0.0, 0)


def _samples(model: str, correct: dict[str, list[bool]]) -> list[dict]:
    return [
        {"benchmark": "arith:test", "model": model, "prompt_id": p, "verdict": "correct" if ok else "wrong"}
        for p, oks in correct.items()
        for ok in oks
    ]


def test_verdict_line_and_chart(tmp_path):
    before = {"a": [False, False], "b": [True, False]}
    after = {"a": [True, True], "b": [True, False]}
    results = {"arith:test": {"pass@1": 0.75, "pass@1_se": 0.25, "k": 2, "n": 2}}
    base = {"arith:test": {"pass@1": 0.25, "pass@1_se": 0.25, "k": 2, "n": 2}}
    v = held_out_verdict(_samples("student", after) + _samples("baseline", before), results, base)
    assert v["line"] == (
        "held-out pass@1: before 25.0 ± 25.0, after 75.0 ± 25.0, gain 50.0 ± 50.0 (paired, 2 problems × 2)"
    )
    assert json.loads(json.dumps(v))["gain"] == pytest.approx(0.5)
    png = tmp_path / "before_after.png"
    plot_before_after([("student", results), ("base", base)], png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_engine_output_goes_to_the_log_also_from_child_processes(tmp_path, capfd):
    log = tmp_path / "run" / "engine.log"
    with engine_output(log):
        os.write(1, b"parent INFO line\n")  # what sys.stdout does outside pytest
        subprocess.run(
            [sys.executable, "-c", "import sys; print('child out'); print('child warn', file=sys.stderr)"]
        )
    print("after")
    out, err = capfd.readouterr()
    assert "INFO" not in out + err and "child" not in out + err and out == "after\n"
    assert log.read_text().split() == ["parent", "INFO", "line", "child", "out", "child", "warn"]


def test_engine_failure_names_the_log(tmp_path, capfd):
    log = tmp_path / "engine.log"
    with pytest.raises(RuntimeError), engine_output(log):
        os.write(2, b"Traceback of the engine\n")
        raise RuntimeError("engine died")
    out, err = capfd.readouterr()
    assert err == f"vLLM engine failed; its log: {log}\n" and "Traceback" in log.read_text()
