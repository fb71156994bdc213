"""curate.difficulty: SmolLM2 on the real vLLM CPU engine answers each arithmetic prompt k times, math-verify grades,
prompts outside the pass-rate range are dropped as `difficulty`; rates, histogram and yields land in the manifest
and the card. The range check and the worked examples of the module doc need no engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill.config import DifficultyConfig, recipe_from_dict
from distill.curate.difficulty import histogram, outside, report
from distill.curate.run import curate
from distill.data import arith_records
from distill.errors import DistillError
from distill.generate.run import generate


@pytest.mark.parametrize(
    ("rate", "dropped"),
    [
        (0.0, True),
        (0.25, False),
        (0.5, False),
        (0.75, False),
        (1.0, True),
        (None, False),
    ],  # keep [0.25, 0.75]
)
def test_outside_worked_examples(rate, dropped):
    assert (outside(rate, (0.25, 0.75)) is not None) is dropped


def test_histogram_and_report():
    rates = {"a": 0.0, "b": 0.5, "c": 1.0, "d": None, "e": 0.95}
    assert histogram(rates) == [1, 0, 0, 0, 0, 1, 0, 0, 0, 2]  # 1.0 in the last bin
    rep = report(rates, DifficultyConfig(model="m", k=4, keep=(0.25, 0.75)), dropped=3)
    assert rep["rated"] == 4 and rep["kept_prompts"] == 2 and rep["mean_pass_rate"] == round(2.45 / 4, 4)


def imported_run(tmp_path: Path, difficulty: dict, problems: int = 6):
    """Arithmetic prompts imported with correct traces (columns adapter), so only difficulty can drop them."""
    rows = [
        {
            "q": r["problem"],
            "think": f"It is {r['answer']}.",
            "final": f"\\boxed{{{r['answer']}}}",
            "gold": r["answer"],
        }
        for r in arith_records("train")[:problems]
    ]
    data = tmp_path / "arith.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cols = {"problem": "q", "reasoning": "think", "answer": "final", "reference": "gold"}
    recipe = recipe_from_dict(
        {
            "name": "diff",
            "run_dir": str(tmp_path / "run"),
            "generate": {
                "source": "dataset",
                "datasets": [{"adapter": "columns", "path": str(data), "columns": cols, "domain": "math"}],
            },
            "curate": {
                "decontaminate": {"benchmarks": []},
                "dedup": {"minhash_threshold": None},
                "verify": {"workers": 1, "math_answer_phrase": True},
                "difficulty": difficulty,
            },
        }
    )
    run = recipe.run_path()
    generate(recipe, None, run / "generate")
    return recipe, run


def test_bad_range_names_the_field_and_writes_nothing(tmp_path):
    recipe, run = imported_run(tmp_path, {"model": "smollm2-135m", "keep": [0.5, 1.2]}, problems=2)
    with pytest.raises(
        DistillError, match=r"curate.difficulty.keep: \[0.5, 1.2\] must satisfy 0 <= lo <= hi <= 1"
    ):
        curate(recipe, run / "generate", run / "curate")
    assert not (run / "curate").exists()


def test_pass_rate_filter_on_vllm(tmp_path, smollm2_path):
    engine = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024, "thinking": False}
    dc = {"model": str(smollm2_path), "k": 4, "keep": [0.25, 1.0], "max_tokens": 48, "engine": engine}
    recipe, run = imported_run(tmp_path, dc)
    manifest = curate(recipe, run / "generate", run / "curate")
    d = manifest.metrics["difficulty"]
    rates = d["pass_rates"]
    assert len(rates) == 6 and all(r in (0.0, 0.25, 0.5, 0.75, 1.0) for r in rates.values())
    too_hard = {pid for pid, r in rates.items() if r < 0.25}
    assert manifest.dropped.get("difficulty", 0) == len(too_hard)  # one row per prompt
    assert d["dropped_prompts"] == len(too_hard) and sum(d["histogram"]) == 6
    kept = json.loads(json.dumps([o for o in manifest.outputs if o["file"].startswith("kept/")]))
    assert sum(o["rows"] for o in kept) == 6 - len(too_hard)
    card = (run / "curate" / "card.md").read_text()
    assert "## Difficulty (pass-rate filter)" in card and "| 0.0-0.1 |" in card
    assert "## Realised mix" in card and "| source | adapter | weight |" in card
