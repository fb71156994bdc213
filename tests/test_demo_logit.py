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
