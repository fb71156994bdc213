"""pass@1 and its SE, the paired gain and its SE, cons@k and pass@k on hand-worked cases; and one fixed samples
table whose numbers results.json, the verdict line, table.md, the manifest headline and the model card all quote
alike."""

from __future__ import annotations

import json
import math

import pytest

from distill.eval.metrics import (
    cons_at_k,
    majority,
    normalize_answer,
    paired_gain,
    pass1_mean_se,
    pass_at_k,
)


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(4, 1, 1, 0.25), (4, 1, 4, 1.0), (4, 0, 2, 0.0), (5, 2, 2, 1 - (3 / 5) * (2 / 4)), (10, 10, 1, 1.0)],
)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_equals_the_closed_form_of_chen_et_al():
    """pass@k = 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, eq. 1), for every n <= 8, c <= n, k <= n; the
    product form distill computes is that ratio without the big factorials. n=5, c=2, k=2: 1 - 3/10 = 0.7."""
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-12)
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                closed = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12), (n, c, k)


def test_pass1_is_mean_over_problems_with_standard_error():
    mean, se = pass1_mean_se([[True, False, False, False], [True, True, True, True]])
    assert mean == pytest.approx(0.625)
    assert se == pytest.approx(((0.25 - 0.625) ** 2 + (1 - 0.625) ** 2) ** 0.5 / 2**0.5)
    assert pass1_mean_se([]) == (0.0, 0.0)


def test_pass1_se_is_over_problems_by_hand():
    """Four problems, k=2; fractions correct 1, 1/2, 1, 0: mean 0.625. Deviations 0.375, -0.125, 0.375, -0.625;
    squares sum to 0.6875; sample variance 0.6875 / 3 = 0.22917; SE = sqrt(0.22917 / 4) = 0.23936.
    (Over the 8 samples instead: sqrt(0.625 * 0.375 / 8) = 0.1712; with variance / n^2: 0.1197.)"""
    mean, se = pass1_mean_se([[True, True], [False, True], [True, True], [False, False]])
    assert mean == 0.625
    assert se == pytest.approx(0.2393568, abs=1e-7)
    # one problem of 1 sample, one of 4: the mean is over problems (0.625), not over the 5 samples (0.4)
    assert pass1_mean_se([[True], [True, False, False, False]])[0] == 0.625
    assert pass1_mean_se([[True, False]]) == (0.5, 0.0)  # one problem: no spread to estimate


def test_paired_gain_by_hand():
    """after - before per problem (k=2): p1 1 - 1/2, p2 1/2 - 0, p3 1 - 1/2, p4 0 - 0 = 0.5, 0.5, 0.5, 0.
    Mean 0.375; deviations 0.125 (x3) and -0.375; squares sum to 3 * 0.015625 + 0.140625 = 0.1875; sample
    variance 0.1875 / 3 = 0.0625; SE = sqrt(0.0625 / 4) = 0.125. Unpaired, the two pass@1 SEs (0.23936 and
    0.14434) would give sqrt(0.23936^2 + 0.14434^2) = 0.2795; with the variance divided by n^2, 0.0625."""
    after = {"p1": [True, True], "p2": [False, True], "p3": [True, True], "p4": [False, False]}
    before = {"p1": [True, False], "p2": [False, False], "p3": [False, True], "p4": [False, False]}
    gain, se, n = paired_gain(after, before)
    assert (gain, se, n) == (0.375, pytest.approx(0.125, abs=1e-12), 4)


def test_paired_gain_of_a_constant_shift_has_zero_se():
    """after = before + 1/4 on every problem: every difference is 0.25, so the gain is 0.25 with SE 0, however
    much the problems differ from each other (an unpaired SE would be about 0.18 here)."""
    before = {"a": [False] * 4, "b": [True, False, False, False], "c": [True, True, False, False]}
    after = {
        "a": [True, False, False, False],
        "b": [True, True, False, False],
        "c": [True, True, True, False],
    }
    assert paired_gain(after, before) == (0.25, 0.0, 3)
    assert paired_gain({"p": [True]}, {"q": [True]}) == (0.0, 0.0, 0)  # nothing shared


def test_cons_at_k_majority_vote():
    answers = [["4", "4", "5"], ["7", "8", "8"], [None, None, "3"]]
    correct = [[True, True, False], [True, False, False], [False, False, True]]
    # problem 1: majority 4 (correct); problem 2: majority 8 (wrong); problem 3: only answer 3 (correct)
    assert cons_at_k(answers, correct) == pytest.approx(2 / 3)
    assert majority(["a", "b", "a", "b"]) == "a"  # tie -> first seen
    assert majority([None, ""]) is None


def test_cons_at_k_ties_go_to_the_answer_seen_first():
    """A 2-2 tie is decided by order, not by which answer is right: the same votes in the other order flip the
    problem. Empty answers never vote (a None majority is a miss, not a match with another None)."""
    right_first = [["3", "7", "3", "7"]]
    wrong_first = [["7", "3", "7", "3"]]
    assert cons_at_k(right_first, [[True, False, True, False]]) == 1.0
    assert cons_at_k(wrong_first, [[False, True, False, True]]) == 0.0
    # None x3 and "5" once: "5" is the majority; [None, None] has none
    assert (
        cons_at_k([[None, None, "5", None], [None, None]], [[False, False, True, False], [True, True]]) == 0.5
    )
    assert cons_at_k([], []) == 0.0


def test_normalize_answer_for_voting():
    assert normalize_answer(" \\left( 3, \\frac{\\pi}{2} \\right). ") == "(3,\\frac{\\pi}{2})"
    assert normalize_answer("$5$") == "5" and normalize_answer(None) is None


# ---------------------------------------------------------------- one samples table, every place that quotes it

# (prompt_id, [(pred_answer, verdict), ...]) for k=2 on gsm8k; the student first, then the baseline.
STUDENT = {
    "p1": [("18", "correct"), ("18", "correct")],  # 1: cons hit
    "p2": [("7", "wrong"), ("3", "correct")],  # 1/2: tie, 7 seen first -> cons miss
    "p3": [("70000", "correct"), ("70000", "correct")],  # 1: cons hit
    "p4": [("1", "wrong"), (None, "unparseable")],  # 0: cons miss
}
BASELINE = {
    "p1": [("18", "correct"), ("5", "wrong")],  # 1/2: tie, 18 seen first -> cons hit
    "p2": [("4", "wrong"), ("4", "wrong")],  # 0
    "p3": [("9", "wrong"), ("70000", "correct")],  # 1/2: tie, 9 seen first -> cons miss
    "p4": [("2", "wrong"), ("2", "wrong")],  # 0
}


def _rows(model: str, table: dict) -> list[dict]:
    return [
        {
            "benchmark": "gsm8k",
            "prompt_id": pid,
            "sample_index": j,
            "domain": "math",
            "reference": "0",
            "completion": f"answer {pred}",
            "finish_reason": "length" if verdict == "unparseable" else "stop",
            "completion_tokens": 10,
            "gen_seconds": 2.0,
            "verdict": verdict,
            "grader": "math",
            "pred_answer": pred,
            "model": model,
        }
        for pid, samples in table.items()
        for j, (pred, verdict) in enumerate(samples)
    ]


def test_results_json_verdict_line_table_and_card_quote_the_same_numbers(tmp_path, capsys):
    """Student per-problem fractions 1, 1/2, 1, 0 (pass@1 62.5 ± 23.9, worked out in test_pass1_se_is_over_problems_
    by_hand), cons@2 2/4; baseline 1/2, 0, 1/2, 0: mean 0.25, deviations ±0.25, variance 0.25 / 3, SE
    sqrt(0.0833 / 4) = 0.1443, cons@2 1/4; the paired gain 37.5 ± 12.5 (test_paired_gain_by_hand's problems)."""
    from distill.artifacts import prepare_stage
    from distill.config import recipe_from_dict
    from distill.eval.run import score, write_outputs
    from distill.pipeline import headline
    from distill.push import model_card, read_eval

    recipe = recipe_from_dict(
        {"name": "metrics", "student": "smollm2-135m", "eval": {"benchmarks": {"gsm8k": {"k": 2}}}}
    )
    student, baseline = _rows("student", STUDENT), _rows("baseline", BASELINE)
    results, base = {"gsm8k": score(student, 2)}, {"gsm8k": score(baseline, 2)}
    out = tmp_path / "run" / "eval"
    manifest = prepare_stage("eval", out, "cfg", {"model": "m"}, False)
    base_entry = {"model": "/models/smollm2-135m", "name": "base", "benchmarks": base}
    manifest = write_outputs(out, manifest, recipe, tmp_path / "m", results, student + baseline, base_entry)

    payload = json.loads((out / "results.json").read_text())
    got = payload["benchmarks"]["gsm8k"]
    assert (got["pass@1"], got["pass@1_se"], got["cons@k"]) == (
        0.625,
        pytest.approx(0.2393568, abs=1e-7),
        0.5,
    )
    assert (got["k"], got["n"], got["truncated"], got["mean_tokens"]) == (2, 4, 1 / 8, 10.0)
    assert got["verdicts"] == {"correct": 5, "unparseable": 1, "wrong": 2}
    was = payload["baseline"]["benchmarks"]["gsm8k"]
    assert (was["pass@1"], was["pass@1_se"], was["cons@k"]) == (
        0.25,
        pytest.approx(0.1443376, abs=1e-7),
        0.25,
    )
    verdict = payload["verdict"]
    assert (verdict["gain"], verdict["gain_se"], verdict["problems"], verdict["k"]) == (
        0.375,
        pytest.approx(0.125, abs=1e-12),
        4,
        2,
    )
    line = "held-out pass@1: before 25.0 ± 14.4, after 62.5 ± 23.9, gain 37.5 ± 12.5 (paired, 4 problems × 2)"
    assert verdict["line"] == line
    assert line in capsys.readouterr().out  # what `distill eval` prints

    # the stage's manifest: its metrics and `distill show`'s headline quote the same numbers
    metrics = manifest.metrics
    assert (metrics["gsm8k/pass@1"], metrics["baseline/gsm8k/cons@k"]) == (0.625, 0.25)
    assert (metrics["held_out/gain"], metrics["held_out/gain_se"]) == (0.375, verdict["gain_se"])
    assert headline("eval", metrics, 16, 16) == "gain 37.5 ± 12.5 (held out)"

    # table.md and the model card: the same rows and the same verdict line
    rows = [
        "| GSM8K pass@1 | GSM8K cons@2 |",
        "| metrics | 62.5 ± 23.9 | 50.0 |",
        "| base (smollm2-135m, before distillation) | 25.0 ± 14.4 | 25.0 |",
    ]
    table = (out / "table.md").read_text()
    assert all(r in table for r in rows) and table.endswith(f"\n{line}\n")
    card = model_card(recipe, "org/metrics-student", {}, read_eval(tmp_path / "run"), None)
    evaluation = card.split("## Evaluation\n\n")[1].split("\n\n## Usage")[0]
    assert evaluation.splitlines()[:4] == [
        "| Model | GSM8K pass@1 | GSM8K cons@2 |",
        "|---|---|---|",
        "| metrics-student (this model) | 62.5 ± 23.9 | 50.0 |",
        "| smollm2-135m (before distillation) | 25.0 ± 14.4 | 25.0 |",
    ]
    assert evaluation.endswith(f"\n{line}\n")
