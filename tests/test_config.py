"""Recipe loading: defaults, overrides, and one-line errors that name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill.config import Recipe, config_hash, load_recipe, recipe_from_dict
from distill.errors import DistillError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_r1_usage_rules(tmp_path):
    recipe = load_recipe(write(tmp_path, "name: x\n"))
    g = recipe.generate
    assert (g.temperature, g.top_p, g.max_tokens, g.system_prompt) == (0.6, 0.95, 32768, None)
    assert g.force_think is True
    assert g.math_directive == "Please reason step by step, and put your final answer within \\boxed{}."


def test_set_overrides_parse_yaml_types(tmp_path):
    path = write(tmp_path, "name: x\ntrain: {lr: 1.0e-5}\n")
    recipe = load_recipe(path, ["train.lr=3e-5", "train.packing=false", "curate.decontaminate.ngram=13"])
    assert recipe.train.lr == 3e-5 and recipe.train.packing is False
    assert recipe.curate.decontaminate.ngram == 13


@pytest.mark.parametrize(
    ("text", "sets", "message"),
    [
        ("name: x\ntrain: {lrr: 1}\n", [], "unknown key 'train.lrr'"),
        ("name: x\n", ["generate.bogus=1"], "unknown key 'generate.bogus'"),
        ("name: x\nstudent: qwen-9b\n", [], "unknown student 'qwen-9b'"),
        ("name: x\ntrain: {lr: [\n", [], "malformed YAML"),
        ("name: x\ngenerate: {n: lots}\n", [], "'generate.n'"),
        ("- a\n- b\n", [], "must be a mapping"),
        ("name: x\n", ["train.lr"], "expected KEY=VALUE"),
    ],
)
def test_bad_recipes_name_what_and_where(tmp_path, text, sets, message):
    path = write(tmp_path, text)
    with pytest.raises(DistillError) as err:
        load_recipe(path, sets)
    assert message in str(err.value)
    if "KEY=VALUE" not in message:
        assert str(path) in str(err.value)


def test_config_hash_changes_only_with_the_section():
    a = recipe_from_dict({"name": "a"})
    b = recipe_from_dict({"name": "b", "train": {"lr": 1e-4}})
    assert config_hash(a.generate) == config_hash(b.generate)
    assert config_hash(a.train) != config_hash(b.train)


def test_every_bundled_recipe_validates():
    recipes = sorted(Path(__file__).resolve().parent.parent.glob("pipelines/*.yaml"))
    assert len(recipes) >= 7  # six release students + the CPU demo
    for path in recipes:
        assert isinstance(load_recipe(path), Recipe)
