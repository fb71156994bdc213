"""Training phases declared in the recipe (`phases:`): validated before anything trains, run in order by the train
stage (each its own folder and manifest, keyed by its config, the curated data and the manifests of the phases it
reads), skipped when unchanged, shown by `distill show`, listed in the model card. Train's model work is replaced
by a recorder here (its keying, skip and folder logic is the real one); real training is tests/test_train*.py's."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from distill import pipeline, push
from distill.artifacts import finish_manifest, prepare_stage, read_manifest, start_manifest, write_parquet
from distill.config import config_hash, load_recipe, recipe_from_dict
from distill.errors import DistillError
from distill.logits import COLUMNS as LOGIT_COLUMNS
from distill.train import loop

ROOT = Path(__file__).resolve().parent.parent
CHAIN = [  # the example: sft, kd from the sft result, on_policy from kd with the sft result as teacher
    {"name": "sft", "objective": "sft"},
    {"name": "kd", "objective": "kd", "init": "sft", "train": {"lr": 1e-4, "kd": {"alpha": 0.25}}},
    {"name": "op", "objective": "on_policy", "init": "kd", "teacher": "sft", "train": {"lr": 1e-5}},
]


def chain_recipe(tmp_path: Path, phases=CHAIN, **top) -> dict:
    return {
        "name": "phases",
        "run_dir": str(tmp_path / "run"),
        "generate": {"logprobs": 20},
        "train": {"max_steps": 2, "lr": 2e-4, "teacher": "smollm2-135m"},
        "phases": phases,
        **top,
    }


def error_of(data: dict) -> str:
    with pytest.raises(DistillError) as err:
        recipe_from_dict(data, where="r.yaml")
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {1: {"objective": "distil"}},
            "r.yaml: phase 'kd': objective: unknown 'distil' (one of sft, kd, on_policy)",
        ),
        ({1: {"init": "op"}}, "r.yaml: phase 'kd': init: phase 'op' runs after it (phases before it: sft)"),
        (
            {1: {"init": "base"}},
            "r.yaml: phase 'kd': init: phase 'base' is not a phase (phases before it: sft)",
        ),
        (
            {0: {"teacher": "op"}},
            "r.yaml: phase 'sft': teacher: phase 'op' runs after it (phases before it: none)",
        ),
        (
            {2: {"name": "sft"}},
            "r.yaml: phase 'sft': name: a second phase of that name (phase names are stage folders)",
        ),
        ({1: {"train": {"lrr": 1}}}, "r.yaml: phase 'kd': train: unknown key 'lrr'"),
        (
            {1: {"train": {"kd": {"alpha": 2}}}},
            "r.yaml: phase 'kd': train: 'kd.alpha': Input should be less than or equal to 1",
        ),
    ],
)
def test_a_bad_phase_list_is_one_line_naming_the_phase_and_field(tmp_path, change, message):
    phases = [{**p, **change.get(i, {})} for i, p in enumerate(CHAIN)]
    assert error_of(chain_recipe(tmp_path, phases)) == message


def test_a_kd_phase_needs_the_teachers_log_probs(tmp_path):
    """Statically (generate stores none) and on the curated shards (a shard without the columns)."""
    assert error_of(chain_recipe(tmp_path, generate={"logprobs": 0})) == (
        "r.yaml: phase 'kd': objective: kd reads the teacher's stored log-probs, but this recipe's generate stores "
        "none (generate.source: teacher with generate.logprobs: K > 0)"
    )
    curate = tmp_path / "curate"
    write_parquet(
        [{"messages": [{"role": "user", "content": "1+1"}], "answer": "2"}],
        curate / "kept" / "part-00000.parquet",
    )
    with pytest.raises(
        DistillError, match=r"^phase 'kd': objective: kd needs the teacher's log-probs, but .*part-00000"
    ):
        pipeline.check_phase_data(recipe_from_dict(chain_recipe(tmp_path)), curate)


def test_an_on_policy_teacher_outside_the_release_vocabulary_stops_before_anything_runs(
    tmp_path, smollm2_path
):
    """SmolLM2 as it ships has no R1 rows: the student's samples hold ids it cannot score. `distill run`: exit 2,
    one line, no run dir written (the check runs before generate)."""
    phases = [{"name": "op", "objective": "on_policy", "teacher": str(smollm2_path)}]
    data = chain_recipe(tmp_path, phases, generate={"logprobs": 0})
    with pytest.raises(
        DistillError, match=r"^phase 'op': teacher: train.objective=on_policy: teacher .* has 49152 ids"
    ):
        pipeline.check_phase_teachers(recipe_from_dict(data))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    done = CliRunner().invoke(app, ["run", str(path), "--until", "train"])
    assert done.exit_code == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: phase 'op': teacher: ") and not (tmp_path / "run").exists()


def test_no_phases_is_the_one_train_stage_it_always_was():
    """Every shipped recipe without `phases` loads to the same train section and config hash as `phases: []`."""
    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        recipe = load_recipe(path)
        if recipe.phases:
            continue
        same = load_recipe(path, ["phases=[]"])
        assert config_hash(same.train) == config_hash(recipe.train) and same == recipe


@pytest.fixture
def recorded(monkeypatch):
    """loop.train with its model work replaced: setup records the phase and its key, summarize writes final/ and
    the manifest the way train does (prepare_stage, then the manifest last)."""
    calls = []

    def setup(student, cfg, src, out, key, force):
        calls.append(SimpleNamespace(out=Path(out).name, cfg=cfg, inputs=key[1], force=force))
        return SimpleNamespace(out=Path(out), key=key)

    def summarize(run, rows):
        manifest = prepare_stage("train", run.out, run.key[0], run.key[1], force=True)
        (run.out / "final").mkdir(exist_ok=True)
        # a rerun writes another manifest (a real one: another wall time, other file stamps)
        manifest.metrics = {"steps": 2, "first_loss": 1.0, "final_loss": 0.5, "call": len(calls)}
        manifest.config = calls[-1].cfg.model_dump(mode="json")
        return finish_manifest(run.out, manifest)

    monkeypatch.setattr(loop, "setup", setup)
    monkeypatch.setattr(loop, "loop", lambda run: [])
    monkeypatch.setattr(loop, "summarize", summarize)
    monkeypatch.setattr(pipeline, "check_phase_teachers", lambda recipe: None)  # tokenizers: tested above
    return calls


def curated(run: Path) -> Path:
    row = {"messages": [{"role": "user", "content": "1+1"}], "answer": "2"}
    rows = [row | {c: b"" for c in LOGIT_COLUMNS}]  # the columns kd reads (distill.logits), present
    write_parquet(rows, run / "curate" / "kept" / "part-00000.parquet")
    finish_manifest(run / "curate", start_manifest("curate", "test"))
    return run / "curate"


def test_phases_run_in_order_skip_when_unchanged_and_rerun_after_what_they_read(tmp_path, recorded, capsys):
    recipe = recipe_from_dict(chain_recipe(tmp_path))
    run = recipe.run_path()
    run.mkdir(parents=True)
    (run / "recipe.resolved.yaml").write_text(pipeline.dump_recipe(recipe))
    src = curated(run)
    pipeline.run_stage(recipe, "train")
    assert [c.out for c in recorded] == ["train-sft", "train-kd", "train"]
    sft, kd, op = recorded
    assert (sft.cfg.objective, sft.cfg.lr, sft.cfg.model) == (
        "sft",
        2e-4,
        "smollm2-135m",
    )
    assert (kd.cfg.objective, kd.cfg.lr, kd.cfg.kd.alpha, kd.cfg.model) == (
        "kd",
        1e-4,
        0.25,
        str(run / "train-sft" / "final"),
    )
    assert (op.cfg.objective, op.cfg.model, op.cfg.teacher) == (
        "on_policy",
        str(run / "train-kd" / "final"),
        str(run / "train-sft" / "final"),
    )
    assert sft.inputs == {"curate": pipeline.manifest_hash(src)}
    assert kd.inputs == {"curate": sft.inputs["curate"], "init": pipeline.manifest_hash(run / "train-sft")}
    assert set(op.inputs) == {"curate", "init", "teacher"} and not any(c.force for c in recorded)

    pipeline.run_stage(recipe, "train")  # unchanged: every phase skips
    assert len(recorded) == 3

    (
        run / "train-kd" / "manifest.json"
    ).unlink()  # killed during kd: kd resumes (force off), op reads a new kd
    pipeline.run_stage(recipe, "train")
    assert [c.out for c in recorded[3:]] == ["train-kd", "train"] and not recorded[3].force

    changed = recipe_from_dict(chain_recipe(tmp_path, [{**CHAIN[0], "train": {"lr": 3e-4}}, *CHAIN[1:]]))
    pipeline.run_stage(changed, "train")  # sft's config changed: it and everything after it reruns
    assert [c.out for c in recorded[5:]] == ["train-sft", "train-kd", "train"]

    capsys.readouterr()
    pipeline.show_run(run)
    shown = capsys.readouterr().out
    assert [line.split()[1] for line in shown.splitlines() if "train:" in line] == [
        "train:sft",
        "train:kd",
        "train:op",
    ]

    prov = push.provenance(run)
    assert list(prov) == ["curate", "train-sft", "train-kd", "train"]
    card = push._training_section(prov)
    assert (
        "train-sft (sft, 2 steps, lr 0.0003) → train-kd (kd, 2 steps, lr 0.0001) → "
        "train (on_policy, 2 steps, lr 2.5e-06 (train.lr 1e-05 x on_policy.lr_scale 0.25))" in card
    )
    assert read_manifest(run / "train").config["objective"] == "on_policy"


def test_on_several_gpus_sft_and_kd_phases_are_launched_on_all_of_them(tmp_path, monkeypatch):
    """`distill run` from a plain process on an 8-GPU machine: an sft or kd phase becomes `accelerate launch` of
    `distill train --phase` with the phase's accelerate config; on_policy (one process by design), a process a
    launcher started, or a machine with one GPU run the phase in-process (None)."""
    recipe = recipe_from_dict(
        chain_recipe(tmp_path, train={"accelerate_config": "pipelines/accelerate/ddp.yaml"})
    )
    monkeypatch.setattr(pipeline, "_cuda_devices", lambda: 8)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    sft, kd, op = recipe.phases
    command = pipeline.launch_command(recipe, kd, tmp_path / "run" / "curate", False)
    resolved = str(tmp_path / "run" / "recipe.resolved.yaml")
    assert command == [
        *(
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            "pipelines/accelerate/ddp.yaml",
        ),
        *("-m", "cli.main", "train", resolved, "--data", str(tmp_path / "run" / "curate"), "--phase", "kd"),
    ]
    assert load_recipe(resolved) == recipe  # what every rank reads
    assert pipeline.launch_command(recipe, op, tmp_path, False) is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert pipeline.launch_command(recipe, sft, tmp_path, False) is None
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setattr(pipeline, "_cuda_devices", lambda: 1)
    assert pipeline.launch_command(recipe, sft, tmp_path, False) is None
    with pytest.raises(
        DistillError, match=r"^--phase dpo: not a phase of this recipe \(its phases: sft, kd, op\)$"
    ):
        pipeline.train_from_cli(Path(resolved), None, None, None, [], False, "dpo")
