"""pass@1, cons@k and pass@k on hand-checked cases."""

from __future__ import annotations

import pytest

from distill.eval.metrics import cons_at_k, majority, normalize_answer, pass1_mean_se, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(4, 1, 1, 0.25), (4, 1, 4, 1.0), (4, 0, 2, 0.0), (5, 2, 2, 1 - (3 / 5) * (2 / 4)), (10, 10, 1, 1.0)],
)
def test_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass1_is_mean_over_problems_with_standard_error():
    mean, se = pass1_mean_se([[True, False, False, False], [True, True, True, True]])
    assert mean == pytest.approx(0.625)
    assert se == pytest.approx(((0.25 - 0.625) ** 2 + (1 - 0.625) ** 2) ** 0.5 / 2**0.5)
    assert pass1_mean_se([]) == (0.0, 0.0)


def test_cons_at_k_majority_vote():
    answers = [["4", "4", "5"], ["7", "8", "8"], [None, None, "3"]]
    correct = [[True, True, False], [True, False, False], [False, False, True]]
    # problem 1: majority 4 (correct); problem 2: majority 8 (wrong); problem 3: only answer 3 (correct)
    assert cons_at_k(answers, correct) == pytest.approx(2 / 3)
    assert majority(["a", "b", "b", "a"]) == "a"  # tie -> first seen
    assert majority([None, ""]) is None


def test_normalize_answer_for_voting():
    assert normalize_answer(" \\left( 3, \\frac{\\pi}{2} \\right). ") == "(3,\\frac{\\pi}{2})"
    assert normalize_answer("$5$") == "5" and normalize_answer(None) is None
