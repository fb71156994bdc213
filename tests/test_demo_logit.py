"""`make demo-logit` over training seeds (bench/demo_logit.py): the seeded phase list and the pooled verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from distill.config import load_recipe, phase_train
from distill.pipeline import phase_dirs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from demo_logit import pooled, seeded_phases  # noqa: E402


def test_each_phase_is_trained_again_under_each_other_seed_and_the_last_keeps_train():
    recipe = load_recipe(ROOT / "pipelines" / "demo-logit.yaml", [])
    seeded = recipe.model_copy(update={"phases": seeded_phases(recipe, [0, 1, 2])})
    assert [p.name for p in seeded.phases] == ["sft", "sft-seed1", "kd-seed1", "sft-seed2", "kd-seed2", "kd"]
    assert phase_dirs(seeded)["kd"].name == "train"  # patch, eval and push read the recipe's own kd
    for p in seeded.phases:
        base = next(q for q in recipe.phases if p.name.startswith(q.name))
        want = phase_train(recipe, base).model_copy(
            update={"seed": int(p.name[-1]) if "-seed" in p.name else 0}
        )
        assert phase_train(seeded, p) == want  # the seed is the one difference


def _scores(correct: dict[str, list[list[bool]]]) -> dict[str, dict]:
    return {
        m: {
            "correct": {f"p{i}": v for i, v in enumerate(rows)},
            "pass@1": sum(map(sum, rows)) / (2 * len(rows)),
        }
        for m, rows in correct.items()
    }


def test_the_verdict_over_seeds_pairs_by_seed_and_problem():
    """kd beats sft by half the problems under seed 0 and loses by as much under seed 1: over both, 0."""
    yes, no = [True, True], [False, False]
    seed0 = _scores({"sft": [no, no, yes, yes], "kd": [yes, yes, yes, yes], "before": [no] * 4})
    seed1 = _scores({"sft": [yes, yes, yes, yes], "kd": [no, no, yes, yes], "before": [no] * 4})
    lines = pooled([seed0, seed1], [0, 1], "arith:test")
    kd_sft = next(line for line in lines if line.strip().startswith("kd - sft"))
    assert "+0.0 ± " in kd_sft and "per seed +50.0, -50.0 (± 50.0 over seeds)" in kd_sft
    sft_before = next(line for line in lines if line.strip().startswith("sft - before"))
    assert sft_before.split(":")[1].startswith(" +75.0 ± 14.4")  # problems +50, +50, +100, +100: SD 28.9 / 2
    assert pytest.approx(75.0) == float(next(x for x in lines if x.strip().startswith("sft")).split()[2])


def test_teacher_errors_reads_the_first_wrong_result_digit_of_a_sample(smollm2_path):
    """bench/teacher_errors.py on one stored sample, "17 + 6 = 13" (a real teacher sample's error in
    `make demo-logit`'s traces), through SmolLM2's own tokenizer: the position is the token "1" of 13, the right digit
    is "2" (of 23), and what the teacher gave it is read from the row's top-K, raw and as sampled."""
    import numpy as np
    from teacher_errors import positions, summary

    from distill.logits import encode, from_lists
    from distill.models import load_tokenizer

    tok = load_tokenizer(str(smollm2_path))
    text = "So, 2 + 2 = 4 and 17 + 6 = 13 birds. 5 + 5 = 10."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    one, two = tok.convert_tokens_to_ids("1"), tok.convert_tokens_to_ids("2")
    tops = [[(i, -0.1), (i + 1, -2.5)] for i in ids]
    where = next(t for t, i in enumerate(ids) if i == one and tok.decode(ids[:t]).endswith("= "))
    tops[where] = [(one, np.log(0.7)), (two, np.log(0.3))]  # the teacher: 0.7 on the written "1", 0.3 on "2"
    row = {
        **encode(from_lists(ids, [-0.1] * len(ids), tops, 2)),
        "sampling": '{"temperature": 1.0, "top_p": 1.0}',
    }
    found = list(positions(row, tok))
    assert [(t, d, ok) for _, _, t, d, ok in found] == [
        (ids.index(tok.convert_tokens_to_ids("4")), tok.convert_tokens_to_ids("4"), True),
        (where, two, False),
    ]  # "5 + 5 = 10" after the first error is not read
    wrong = [c[:4] for c in found if not c[4]]
    assert summary(wrong, "w") == (
        "w: 1 positions; teacher top-1 is the right digit 0.0%; p(right digit) raw 0.300, as sampled 0.300"
    )
