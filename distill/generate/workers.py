"""Many `distill generate` processes on one run dir: `--worker i/N` generates the shards s with s % N == i; the last
worker to finish (or `distill generate RECIPE --finalize`) writes the manifest once every shard has landed.

    sbatch --array=0-7 pipelines/slurm/generate.sbatch pipelines/r1-distill-qwen-7b.yaml
    # each array task: distill generate RECIPE --worker $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT

The split is static (no coordinator to lose), so a worker owns its shards: it deletes and regenerates only its
own, a killed worker rerun resumes exactly its own, and two workers never write the same shard. The first worker
pins the run in _plan.json (stage key, prompt hash, shard count, N); a worker of another recipe or another N is
refused before a teacher starts. Locks (flock; they guard processes of one node, the static split guards nodes):
each worker holds .lock shared (a plain `distill generate` takes it exclusive, so the two modes never mix) and its
own .lock-worker-I-of-N exclusive (one process per worker); finalizing holds .finalize.lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.artifacts import (
    Manifest,
    atomic_write_text,
    clear_manifest,
    is_fresh,
    prepare_stage,
    read_manifest,
    shard_name,
)
from distill.config import Recipe, config_hash, dump_recipe
from distill.engines.prompts import load_teacher_tokenizer
from distill.errors import DistillError
from distill.generate.run import (
    DONE,
    GenerateRun,
    ProgressView,
    _finish,
    _marker,
    check_config,
    load_prompt_set,
    read_marker,
    run_local,
    run_replicas,
    shard_key,
    stage_key,
)

PLAN = "_plan.json"
# What pins a run: another value in any of these is another run. "recipe" (the name) is only reported.
PINNED = ("stage_key", "prompts", "shards", "workers")


@dataclass(frozen=True)
class Worker:
    index: int  # 0 <= index < count
    count: int

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_worker(text: str) -> Worker:
    """'i/N', 0 <= i < N (Slurm: --array=0-(N-1), $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise DistillError(f"--worker {text!r}: expected i/N with integers, e.g. 0/8") from None
    if not 0 <= index < count:
        raise DistillError(
            f"--worker {text}: i must be in 0..N-1 (N={count} workers are numbered 0..{count - 1})"
        )
    return Worker(index, count)


def generate_from_cli(recipe: Recipe, worker: str | None, finalize: bool, force: bool) -> Manifest | None:
    if worker is not None and finalize:
        raise DistillError("give --worker i/N or --finalize, not both (the last worker finalizes by itself)")
    spec = parse_worker(worker) if worker is not None else None
    run_dir = recipe.run_path()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "recipe.resolved.yaml", dump_recipe(recipe))
    return generate_worker(recipe, run_dir / "generate", spec, force)


def generate_worker(recipe: Recipe, out: Path, worker: Worker | None, force: bool = False) -> Manifest | None:
    """Worker `worker`'s shards, then the manifest if every shard has landed (None when others are pending).
    worker None: finalize only; missing shards are then an error naming them and their workers."""
    out, cfg, teacher = Path(out), recipe.generate, recipe.teacher
    if cfg.source == "dataset":
        raise DistillError(
            "--worker/--finalize split a teacher run; generate.source: dataset imports in one process"
        )
    check_config(teacher, cfg)
    prompts, duplicates = load_prompt_set(cfg)
    key, inputs = stage_key(teacher, cfg), {"prompts": config_hash(prompts, ensure_ascii=False)}
    plan = [prompts[i : i + cfg.shard_size] for i in range(0, len(prompts), cfg.shard_size)]
    with _locks(out, worker):
        facts = {"recipe": recipe.name, "stage_key": key, "prompts": inputs["prompts"], "shards": len(plan)}
        count = pin_plan(out, facts, worker)
        if force and worker is not None:
            clear_manifest(out)
        elif is_fresh(out, key, inputs):
            print(f"generate: {out} is complete (manifest.json matches); nothing to do")
            return read_manifest(out)
        run = GenerateRun(recipe, load_teacher_tokenizer(teacher), out, key)
        stats = run_own(run, plan, worker, force) if worker is not None else idle_stats()
        return finalize(run, plan, duplicates, inputs, stats, worker, count)


# ---------------------------------------------------------------- pinning the run and locking


def pin_plan(out: Path, facts: dict[str, Any], worker: Worker | None) -> int | None:
    """The first worker writes _plan.json (exclusive create: of two racing workers one wins); every worker, and
    --finalize, must match it. Returns the pinned worker count (None: no worker ran here)."""
    path = out / PLAN
    if worker is not None:
        facts = {**facts, "workers": worker.count}
        _create_once(path, json.dumps(facts, sort_keys=True))
    if not path.exists():
        return None
    pinned = json.loads(path.read_text())
    for name in PINNED:
        if name in facts and pinned.get(name) != facts[name]:
            raise DistillError(_conflict(path, name, pinned, facts))
    return pinned["workers"]


def _conflict(path: Path, name: str, pinned: dict, facts: dict) -> str:
    what = {
        "stage_key": "a different recipe (teacher, sampling or R1 rules: the shard keys differ)",
        "prompts": "a different prompt set",
        "shards": "a different shard_size",
        "workers": "a different worker count N",
    }[name]
    return (
        f"{path}: this run dir is pinned to recipe '{pinned.get('recipe')}' ({name} {pinned.get(name)}); "
        f"recipe '{facts['recipe']}' has {what} ({name} {facts[name]}): use another run_dir, or remove "
        f"{path.parent} to start over"
    )


def _create_once(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic, and fails when another worker pinned the run first
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


@contextlib.contextmanager
def _locks(out: Path, worker: Worker | None):
    out.mkdir(parents=True, exist_ok=True)
    own = f".lock-worker-{worker.index}-of-{worker.count}" if worker else None
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            _flock(out / ".lock", fcntl.LOCK_SH, "a plain `distill generate` is writing here")
        )
        if own:
            stack.enter_context(_flock(out / own, fcntl.LOCK_EX, f"worker {worker} is already running here"))
        yield


@contextlib.contextmanager
def _flock(path: Path, mode: int, busy: str):
    """flock `path`; the OS drops it when the process dies, kill -9 included."""
    with open(path, "a") as f:
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DistillError(f"{path.parent}: {busy}") from None
        yield


# ---------------------------------------------------------------- a worker's own shards


def own_pending(out: Path, plan: list[list[dict]], key: str, worker: Worker, force: bool) -> list[int]:
    """The worker's shards still to generate. Only its own files are touched: its temp files, and its shards
    whose marker is missing or stale (marker first, so a crash in between never looks finished)."""
    pending = []
    for i in (i for i in range(len(plan)) if worker.owns(i)):
        name = shard_name(i)
        for tmp in [*out.glob(f".{name}.*.tmp"), *(out / DONE).glob(f".{name}.ok.*.tmp")]:
            tmp.unlink(missing_ok=True)
        if force or read_marker(out, name, shard_key(key, plan[i])) is None:
            _marker(out, name).unlink(missing_ok=True)
            (out / name).unlink(missing_ok=True)
            pending.append(i)
    return pending


def run_own(run: GenerateRun, plan: list[list[dict]], worker: Worker, force: bool) -> dict[str, Any]:
    start = time.perf_counter()
    jobs = [(i, plan[i]) for i in own_pending(run.out, plan, run.key, worker, force)]
    prompts = sum(len(rows) for i, rows in enumerate(plan) if worker.owns(i))
    with ProgressView(prompts, prompts - sum(len(rows) for _, rows in jobs)) as view:
        if jobs and run.recipe.teacher.data_parallel_size > 1 and run.recipe.teacher.executor == "local":
            run_replicas(run, jobs, view)
        elif jobs:
            run_local(run, jobs, view, None)
    resumed = sum(worker.owns(i) for i in range(len(plan))) - len(jobs)
    print(f"generate worker {worker}: {len(jobs)} shards generated, {resumed} resumed")
    elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "generate_seconds": view.seconds(),
        "tokens": view.tokens,
        "shards": len(jobs),
    }


def idle_stats() -> dict[str, Any]:
    return {"seconds": 0.0, "generate_seconds": 0.0, "tokens": 0, "shards": 0}


# ---------------------------------------------------------------- the manifest, once


def finalize(
    run: GenerateRun,
    plan: list[list[dict]],
    duplicates: int,
    inputs: dict[str, str],
    stats: dict[str, Any],
    worker: Worker | None,
    count: int | None,
) -> Manifest | None:
    """The manifest once every shard's marker matches. Two workers finishing together queue on
    .finalize.lock: the second finds the manifest written and returns it."""
    out = run.out
    with open(out / ".finalize.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocking: the other finisher needs a second or so
        missing = [
            i
            for i, rows in enumerate(plan)
            if read_marker(out, shard_name(i), shard_key(run.key, rows)) is None
        ]
        if missing:
            return _not_yet(out, missing, len(plan), worker, count)
        manifest = prepare_stage("generate", out, run.key, inputs)
        if manifest is None:
            return read_manifest(out)
        manifest.seconds = time.time() - stats["seconds"]  # this process's time (finish_manifest subtracts)
        return _finish(run, manifest, plan, duplicates, stats)


def _not_yet(out: Path, missing: list[int], total: int, worker: Worker | None, count: int | None) -> None:
    def who(i: int) -> str:
        return f"{shard_name(i)} (worker {i % count}/{count})" if count else shard_name(i)

    listed = ", ".join(who(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
    if worker is None:
        raise DistillError(
            f"{out}: {len(missing)} of {total} shards have not landed: {listed}; run (or rerun: it resumes) "
            "those workers, then --finalize"
        )
    print(
        f"generate worker {worker}: done; {len(missing)} of {total} shards still pending ({listed}): the last "
        "worker to finish writes the manifest (or run --finalize)"
    )
    return None
