"""Chain the stages through their run-dir folders; each stage skips itself when its manifest matches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from distill.artifacts import MANIFEST, atomic_write_text, manifest_hash, read_manifest
from distill.config import (
    PhaseConfig,
    Recipe,
    dump_recipe,
    load_recipe,
    phase_folders,
    phase_train,
    recipe_from_dict,
    run_phases_of,
)
from distill.errors import DistillError

STAGES = ["generate", "curate", "train", "patch", "eval", "push"]


# One thin function per stage, each stage(recipe, src, out, force) -> Manifest. The stage module is imported
# inside: `import distill` and `distill --help` stay instant (train pulls in torch), and train/ may import this
# module without a cycle at import time.
def _generate(recipe: Recipe, src: Path | None, out: Path, force: bool):
    from distill.generate.run import generate

    return generate(recipe, src, out, force=force)


def _curate(recipe: Recipe, src: Path, out: Path, force: bool):
    from distill.curate.run import curate

    return curate(recipe, src, out, force=force)


def _train(recipe: Recipe, src: Path, out: Path, force: bool):
    from distill.train.loop import train

    if recipe.phases:
        return run_phases(recipe, src, force)
    return train(recipe, src, out, force=force)


def phase_dirs(recipe: Recipe) -> dict[str, Path]:
    """Each phase's stage folder: train-<name>, the last phase's train/ (the folder patch, eval and push read)."""
    names = [p.name for p in recipe.phases]
    return {n: recipe.run_path() / f for n, f in zip(names, phase_folders(names), strict=True)}


def phase_recipe(recipe: Recipe, phase: PhaseConfig) -> Recipe:
    """The one-phase recipe train runs for `phase`: its train section, init and teacher resolved to folders."""
    dirs = phase_dirs(recipe)
    update = {}
    if phase.init is not None:
        update["model"] = str(dirs[phase.init] / "final")
    if phase.teacher is not None:
        update["teacher"] = str(dirs[phase.teacher] / "final") if phase.teacher in dirs else phase.teacher
    train = phase_train(recipe, phase).model_copy(update=update)
    return recipe.model_copy(update={"train": train, "phases": []})


def run_phases(recipe: Recipe, src: Path, force: bool):
    """The recipe's phases in order; each is a train stage keyed by its config, the curated data and the manifests
    of the phases it reads (init, teacher): unchanged ones are skipped, a killed one resumes from its checkpoint."""
    check_phase_teachers(recipe)
    check_phase_data(recipe, src)
    result = None
    for phase in recipe.phases:
        command = launch_command(recipe, phase, src, force)
        if command is None:
            result = run_phase(recipe, phase, src, force)
            continue
        print(f"train: phase '{phase.name}' on every GPU: {' '.join(command)}", file=sys.stderr)
        if subprocess.run(command).returncode != 0:
            raise DistillError(f"phase '{phase.name}': its `accelerate launch` failed (its output is above)")
        result = read_manifest(phase_dirs(recipe)[phase.name])
    return result


def run_phase(recipe: Recipe, phase: PhaseConfig, src: Path, force: bool):
    """One phase in this process (or in each process of an `accelerate launch`)."""
    from distill.train.loop import train

    dirs = phase_dirs(recipe)
    reads = {"init": phase.init, "teacher": phase.teacher}
    after = {field: manifest_hash(dirs[name]) for field, name in reads.items() if name in dirs}
    print(f"train: phase '{phase.name}' ({phase.objective}) -> {dirs[phase.name]}", file=sys.stderr)
    return train(phase_recipe(recipe, phase), src, dirs[phase.name], force=force, after=after)


def launch_command(recipe: Recipe, phase: PhaseConfig, src: Path, force: bool) -> list[str] | None:
    """On a machine with several GPUs, from a process no launcher started: `accelerate launch` of `distill train
    --phase` with the phase's accelerate config (train.accelerate_config, else the student's), so sft and kd phases
    use every GPU. None (run here): one GPU or none, already launched, or on_policy (one process by design)."""
    import os

    if phase.objective == "on_policy" or "LOCAL_RANK" in os.environ or _cuda_devices() < 2:
        return None
    from distill.students import get_student

    train = phase_recipe(recipe, phase).train
    config = train.accelerate_config or get_student(recipe.student).accelerate_config
    resolved = recipe.run_path() / "recipe.resolved.yaml"
    atomic_write_text(resolved, dump_recipe(recipe))
    return [
        *(sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)),
        *("-m", "cli.main", "train", str(resolved), "--data", str(src), "--phase", phase.name),
        *(["--force"] if force else []),
    ]


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count()


def check_phase_data(recipe: Recipe, src: Path) -> None:
    """kd phases read the teacher's log-probs from the curated shards: a shard without them stops the run here."""
    import pyarrow.parquet as pq

    from distill.train.data import KD_FIELDS

    shards = sorted((Path(src) / "kept").glob("part-*.parquet"))[:1]
    for phase in (p for p in recipe.phases if p.objective == "kd"):
        missing = [c for s in shards for c in KD_FIELDS if c not in pq.read_schema(s).names]
        if missing:
            raise DistillError(
                f"phase '{phase.name}': objective: kd needs the teacher's log-probs, but {shards[0]} has none "
                f"(missing {', '.join(missing)}; generate with generate.logprobs: K > 0)"
            )


def check_phase_teachers(recipe: Recipe) -> None:
    """kd and on_policy phases taught by a model (not a phase): its ids must be the student's release ids (on_policy:
    all of them, the R1 rows included), checked on the tokenizers before anything trains. A phase's final/ is in
    the student's release layout, and a phase's init has the start's ids: both are checked as the start's."""
    from distill.models import resolve_model
    from distill.students import get_student
    from distill.train.loop import effective_config, release_tokenizer_for, same_vocabulary

    student, dirs = get_student(recipe.student), phase_dirs(recipe)
    for phase in recipe.phases:
        if phase.objective == "sft" or phase.teacher in dirs:
            continue
        train = phase_train(recipe, phase)
        train = train.model_copy(update={"teacher": phase.teacher}) if phase.teacher else train
        cfg = effective_config(train, student, recipe.teacher)
        try:
            same_vocabulary(
                cfg, release_tokenizer_for(resolve_model(cfg.model), recipe.student), recipe.student
            )
        except DistillError as err:
            raise DistillError(f"phase '{phase.name}': teacher: {err}") from None


def _patch(recipe: Recipe, src: Path, out: Path, force: bool):
    from distill.patch import patch_stage

    return patch_stage(recipe, src, out, force=force)


def _eval(recipe: Recipe, src: Path, out: Path, force: bool):
    from distill.eval.run import evaluate

    return evaluate(recipe, src, out, force=force)


def _push(recipe: Recipe, src: Path, out: Path, force: bool):
    from distill.push import push_stage

    # publishing is never "fresh": it always runs (or lists, when dry_run)
    return push_stage(recipe, src, out, force=True, dry_run=recipe.push.dry_run, print_card=False)


STAGE_FNS = {
    "generate": _generate,
    "curate": _curate,
    "train": _train,
    "patch": _patch,
    "eval": _eval,
    "push": _push,
}
# the folder each stage reads: the previous stage's, none for generate, the whole run dir for push
SOURCE_STAGE = {
    "generate": None,
    "curate": "generate",
    "train": "curate",
    "patch": "train",
    "eval": "patch",
    "push": None,
}


def stage_range(first: str, last: str) -> list[str]:
    for name in (first, last):
        if name not in STAGES:
            raise DistillError(f"unknown stage '{name}' (stages: {', '.join(STAGES)})")
    if STAGES.index(first) > STAGES.index(last):  # an empty range would run nothing and look like success
        raise DistillError(f"--from {first} comes after --until {last} (stages: {', '.join(STAGES)})")
    return STAGES[STAGES.index(first) : STAGES.index(last) + 1]


def run_stage(recipe: Recipe, stage: str, force: bool = False):
    run = recipe.run_path()
    src_stage = SOURCE_STAGE[stage]
    src = run / src_stage if src_stage else (run if stage == "push" else None)
    result = STAGE_FNS[stage](recipe, src, run / stage, force)
    if stage in SUMMARIES and (m := read_manifest(run / stage)) is not None:
        from distill.ui import print_summary

        print_summary(f"{stage}: summary", SUMMARIES[stage](m, run / stage))
    return result


def _curate_summary(m, out: Path) -> dict[str, str]:
    """The yields: what was kept and why the rest was dropped, as shares of the traces read."""
    share = lambda n: f"{n:,} ({100 * n / max(m.rows_in, 1):.1f}%)"  # noqa: E731
    rows = {"traces read": f"{m.rows_in:,}", "kept": share(m.rows_out)}
    return rows | {f"dropped: {why}": share(n) for why, n in sorted(m.dropped.items(), key=lambda kv: -kv[1])}


def _train_summary(m, out: Path) -> dict[str, str]:
    from distill.ui import short_path

    x = m.metrics
    return {
        "samples": f"{x.get('samples', m.rows_in):,}",
        "optimizer steps": str(x.get("steps", "-")),
        "loss (first -> final)": f"{x.get('first_loss', float('nan')):.3f} -> {x.get('final_loss', float('nan')):.3f}",
        "tokens/s": str(x.get("tokens_per_s", "-")),
        "checkpoint": short_path(out / "final"),
        "loss curve": short_path(out / "loss.png"),
    }


def _patch_summary(m, out: Path) -> dict[str, str]:
    from distill.ui import short_path

    x = m.metrics
    return {
        "release facts": f"{x.get('facts_ok', 0)} ok, {x.get('facts_failed', 0)} failed",
        "release": short_path(out / "release"),
    }


# stages whose function prints no table of its own (generate and eval print theirs, push lists its files)
SUMMARIES = {"curate": _curate_summary, "train": _train_summary, "patch": _patch_summary}


def run_pipeline(recipe: Recipe, stages: list[str], force: bool = False) -> None:
    if "train" in stages and recipe.phases:
        check_phase_teachers(recipe)  # before generate and before anything is written
    run = recipe.run_path()
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run / "recipe.resolved.yaml", dump_recipe(recipe))
    for stage in stages:
        run_stage(recipe, stage, force=force)


def _recipe_for_student(recipe_path: Path | None, student: str | None, sets: list[str]) -> Recipe:
    if recipe_path is not None:
        return load_recipe(recipe_path, sets + ([f"student={student}"] if student else []))
    if student is None:
        raise DistillError("give a RECIPE or --student NAME")
    from distill.config import apply_overrides

    bundled = Path(__file__).resolve().parent.parent / "pipelines" / f"r1-distill-{student}.yaml"
    if bundled.exists():
        return load_recipe(bundled, sets)
    return recipe_from_dict(apply_overrides({"name": f"distill-{student}", "student": student}, sets))


def train_from_cli(recipe_path, student, data, out, sets, force, phase: str | None = None) -> None:
    recipe = _recipe_for_student(recipe_path, student, sets)
    src = Path(data) if data else recipe.run_path() / "curate"
    if out and recipe.phases:
        raise DistillError(
            "--out: a recipe with phases writes each phase to its run dir (set run_dir instead)"
        )
    if phase is not None:
        found = [p for p in recipe.phases if p.name == phase]
        names = ", ".join(p.name for p in recipe.phases) or "none"
        if not found:
            raise DistillError(f"--phase {phase}: not a phase of this recipe (its phases: {names})")
        run_phase(recipe, found[0], src, force)
        return
    dest = Path(out) if out else recipe.run_path() / "train"
    STAGE_FNS["train"](recipe, src, dest, force)


def patch_from_cli(ckpt, out, student, check, recipe_path, sets, force) -> None:
    from distill import patch as patch_mod

    if check is not None:
        if student is None:
            raise DistillError("--check needs --student NAME")
        if not patch_mod.print_conformance(check, student):
            raise SystemExit(1)
        return
    if recipe_path is not None:
        recipe = load_recipe(recipe_path, sets)
        run_stage(recipe, "patch", force=force)
        return
    if ckpt is None or out is None or student is None:
        raise DistillError("usage: distill patch --student NAME CKPT OUT  (or --check OUT, or --recipe R)")
    patch_mod.patch_checkpoint(ckpt, out, student)


def recipe_of_run(run_dir: Path, sets: list[str]) -> Recipe:
    """The recipe a run dir was made with (its recipe.resolved.yaml), pointed at that dir wherever it now is."""
    resolved = Path(run_dir) / "recipe.resolved.yaml"
    if not resolved.exists():
        raise DistillError(
            f"{run_dir}: not a run dir (no recipe.resolved.yaml); pass the run dir or its recipe"
        )
    return load_recipe(resolved, [*sets, f"run_dir={Path(run_dir).resolve()}"])


def push_from_cli(recipe: Recipe, repo: str | None, dry_run: bool) -> None:
    from distill.push import push_stage

    if repo:
        recipe.push.repo = repo
    run = recipe.run_path()
    push_stage(recipe, run, run / "push", force=True, dry_run=dry_run or recipe.push.dry_run)


def show_run(run_dir: Path) -> None:
    """One line a stage: status, rows, seconds, config hash and the stage's headline number; the rest of
    each manifest stays in its file (`manifest.json`), so the table fits 80 columns."""
    from distill.ui import print_table

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DistillError(f"run dir not found: {run_dir}")
    rows = [_stage_row(run_dir, stage) for stage in STAGES]
    at = STAGES.index("train")
    rows[at : at + 1] = [
        _stage_row(run_dir, "train", folder, label) for label, folder in _shown_phases(run_dir)
    ]
    print_table(f"{run_dir} ({MANIFEST} per stage)", rows)


def _shown_phases(run_dir: Path) -> list[tuple[str, str]]:
    """(row label, folder) of the train stage: one row, or one per phase of the run's recipe (train:<name>)."""
    return [(f"train:{name}", folder) for name, folder in run_phases_of(run_dir)] or [("train", "train")]


def _stage_row(
    run_dir: Path, stage: str, folder: str | None = None, label: str | None = None
) -> dict[str, object]:
    m = read_manifest(run_dir / (folder or stage))
    if m is None:
        status = "partial" if (run_dir / (folder or stage)).exists() else "-"
        if stage == "push" and (run_dir / stage / "model_card.md").exists():
            status = "dry run"
        return {
            "stage": label or stage,
            "status": status,
            "in": "",
            "out": "",
            "s": "",
            "config": "",
            "headline": "",
        }
    return {
        "stage": label or stage,
        "status": "done",
        "in": m.rows_in,
        "out": m.rows_out,
        "s": f"{m.seconds:.0f}",
        "config": m.config_hash[:8],
        "headline": headline(stage, m.metrics, m.rows_in, m.rows_out),
    }


def headline(stage: str, x: dict, rows_in: int, rows_out: int) -> str:
    """The number a reader looks for first in each stage's manifest (percent where it is a rate)."""
    try:
        if stage == "generate" and "run_tokens_per_s" in x:
            return f"{x['run_tokens_per_s']} tok/s, {100 * x.get('truncated_rate', 0):.0f}% truncated"
        if stage == "curate":
            return f"kept {100 * rows_out / max(rows_in, 1):.1f}%"
        if stage == "train" and "final_loss" in x:
            return f"{x['steps']} steps, loss {x['first_loss']:.2f}→{x['final_loss']:.2f}"
        if stage == "patch" and "facts_ok" in x:
            return f"{x['facts_ok']} facts ok, {x['facts_failed']} failed"
        if stage == "eval" and "held_out/gain" in x:
            return f"gain {100 * x['held_out/gain']:.1f} ± {100 * x['held_out/gain_se']:.1f} (held out)"
        if stage == "eval":
            return ", ".join(f"{k} {100 * v:.1f}" for k, v in x.items() if k.endswith("/pass@1"))[:60]
    except (KeyError, TypeError):  # a manifest from an older distill: show what is there
        pass
    return ""
