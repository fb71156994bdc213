"""Stage 1: the teacher writes n traces per prompt into resumable Parquet shards (`distill generate RECIPE`).

The unit of work and of resume is a shard: `shard_size` prompts with all their samples. A shard is written
atomically (part-NNNNN.parquet), then its marker _done/part-NNNNN.parquet.ok (JSON: the shard key, rows, bytes,
sha256, token and flag counts). A run killed at any moment (kill -9) and started again keeps every shard whose
marker matches, deletes half-written temp files, stale shards and markers, and generates only the rest, so the
output is exactly prompts x n rows, none missing, none twice. The shard key hashes what decides the output (teacher
model/tokenizer/template, sampling, R1 rules, the shard's prompts), not engine knobs (TP size, memory,
concurrency): a run can resume on a different machine layout. manifest.json is written last.

Data-parallel replicas (teacher.data_parallel_size > 1): one spawned process per replica, each with its own
backend and, for vLLM, its own slice of tensor_parallel_size x pipeline_parallel_size GPUs of
CUDA_VISIBLE_DEVICES (replica r: devices [r*tp*pp, (r+1)*tp*pp)). Replicas pull shards from one queue, so a slow
shard does not stall the others. Multi-node (full R1 TP8 x PP2 over two nodes): one replica whose engine uses
distributed_executor_backend=ray; start the ray cluster first.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import queue
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from distill import logits
from distill.artifacts import (
    Manifest,
    atomic_dir,
    atomic_write_text,
    finish_manifest,
    model_identity,
    prepare_stage,
    read_manifest,
    replace_shards,
    shard_name,
    write_parquet,
)
from distill.config import GenerateConfig, Recipe, TeacherConfig, config_hash
from distill.data import PROMPT_FIELDS, load_source, split_spec
from distill.engines.backends import (
    ENGINE_LOG,
    SERVER_MAX_LOGPROBS,
    Backend,
    Completion,
    GenRequest,
    OnDone,
    SamplingSpec,
    make_backend,
    replica_devices,
)
from distill.engines.prompts import (
    DOMAINS,
    build_messages,
    default_system_prompt,
    load_teacher_tokenizer,
    make_request,
    prefilled,
)
from distill.engines.traces import Trace, parse_trace
from distill.errors import DistillError
from distill.release import THINK
from distill.sources import drawn

DONE = "_done"
COLUMN_FIELDS = (
    "problem",
    "reference",
    "prompt_id",
    "domain",
)  # PromptSource.columns keys (data._map_columns)


# ---------------------------------------------------------------- the run and its rows


@dataclass
class GenerateRun:
    """What every shard of one run shares: the recipe, the teacher's tokenizer (None for a chat-API teacher:
    the server renders), the output folder, the stage key, and the row values fixed for the run (sampling JSON
    and its hash). Each data-parallel replica builds its own (a tokenizer does not cross processes)."""

    recipe: Recipe
    tokenizer: Any
    out: Path
    key: str
    sampling: str = field(init=False)
    sampling_hash: str = field(init=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.sampling = sampling_json(self.recipe.generate)
        self.sampling_hash = config_hash(self.sampling, ensure_ascii=False)


@dataclass(frozen=True)
class Sample:
    """One sample of one prompt, as the teacher returned it: what a row is made from."""

    prompt: dict[str, Any]  # the prompt row (PROMPT_FIELDS)
    request: GenRequest
    completion: Completion
    trace: Trace
    index: int  # sample j of n


class Column(NamedTuple):
    name: str
    arrow: str  # a key of arrow_types()
    value: Callable[[GenerateRun, Sample], Any]


def _prompt_column(name: str) -> Column:
    return Column(name, "string", lambda run, s: s.prompt[name])


# The generate row (design.md): the prompt row plus one sample. The one definition: the Arrow schema and each
# row dict are both derived from it, so a new column is one line here.
ROW: tuple[Column, ...] = (
    *(_prompt_column(name) for name in PROMPT_FIELDS),
    Column("sample_index", "int32", lambda run, s: s.index),
    Column("messages", "messages", lambda run, s: s.request.messages),
    Column("prompt_text", "string", lambda run, s: s.request.prompt_text),
    Column("completion", "string", lambda run, s: s.completion.text),
    Column("reasoning", "string", lambda run, s: s.trace.reasoning),
    Column("answer", "string", lambda run, s: s.trace.answer),
    Column("finish_reason", "string", lambda run, s: s.completion.finish_reason),
    Column("prompt_tokens", "int32", lambda run, s: s.completion.prompt_tokens),
    Column("completion_tokens", "int32", lambda run, s: s.completion.completion_tokens),
    Column("flags", "strings", lambda run, s: s.trace.flags),
    Column("teacher", "string", lambda run, s: run.recipe.teacher.model),
    Column("sampling", "string", lambda run, s: run.sampling),
    Column("sampling_hash", "string", lambda run, s: run.sampling_hash),
    Column("seed", "int64", lambda run, s: s.request.seed + s.index),
)


def _logprob_column(name: str) -> Column:
    return Column(
        name, logits.CODECS[name][0], lambda run, s: logits.encode_column(name, s.completion.logprobs)
    )


# generate.logprobs: K > 0 adds the teacher's per-token log-probs (distill.logits); K = 0 writes ROW alone, so
# runs without them keep their exact shards.
LOGPROB_ROW: tuple[Column, ...] = tuple(_logprob_column(name) for name in logits.COLUMNS)


def row_columns(cfg: GenerateConfig) -> tuple[Column, ...]:
    return ROW + LOGPROB_ROW if cfg.logprobs else ROW


def arrow_types() -> dict[str, Any]:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    return {
        "string": pa.string(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "strings": pa.list_(pa.string()),
        "messages": pa.list_(message),
        "int32s": pa.list_(pa.int32()),
        "binary": pa.binary(),
    }


def row_schema(columns: tuple[Column, ...] = ROW):
    """The Arrow schema of a shard. Explicit, so empty shards and None agree."""
    import pyarrow as pa

    types = arrow_types()
    return pa.schema([(c.name, types[c.arrow]) for c in columns])


def make_row(run: GenerateRun, sample: Sample, columns: tuple[Column, ...] = ROW) -> dict[str, Any]:
    return {c.name: c.value(run, sample) for c in columns}


# ---------------------------------------------------------------- inputs and keys


def check_config(teacher: TeacherConfig, cfg: GenerateConfig) -> None:
    if cfg.force_think and not teacher.thinking:
        raise DistillError(
            "generate.force_think is true but teacher.thinking is false: a teacher that does not think "
            f"cannot start inside {THINK}; set generate.force_think: false"
        )
    for name in ("n", "max_tokens", "shard_size"):
        if getattr(cfg, name) < 1:
            raise DistillError(f"generate.{name} must be >= 1 (got {getattr(cfg, name)})")
    if not 0 <= cfg.logprobs <= SERVER_MAX_LOGPROBS:
        raise DistillError(
            f"generate.logprobs: {cfg.logprobs} is outside 0..{SERVER_MAX_LOGPROBS}, the top-K log-probs vLLM "
            "and OpenAI-compatible servers return (vLLM's max_logprobs default, OpenAI's top_logprobs limit)"
        )
    if teacher.data_parallel_size < 1:
        raise DistillError(f"teacher.data_parallel_size must be >= 1 (got {teacher.data_parallel_size})")
    if teacher.chat_template is not None and not Path(teacher.chat_template).is_file():
        raise DistillError(f"teacher.chat_template: file not found: {teacher.chat_template}")
    for i, spec in enumerate(cfg.prompts):
        if not 0 < spec.weight <= 1:
            raise DistillError(f"generate.prompts[{i}].weight: {spec.weight} is not in (0, 1]")
        unknown = sorted(set(spec.columns) - set(COLUMN_FIELDS))
        if unknown:
            raise DistillError(
                f"generate.prompts[{i}].columns: unknown field '{unknown[0]}' (map our fields to your columns: "
                f"{', '.join(COLUMN_FIELDS)}; reference = gold answer or tests JSON)"
            )


def load_prompt_set(cfg: GenerateConfig) -> tuple[list[dict[str, Any]], int]:
    """Every prompt of every source, in recipe order; exact duplicates (same id and problem) dropped and counted."""
    rows: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for spec in cfg.prompts:
        loaded = load_source(spec.source, spec.split, spec.limit, spec.columns, spec.domain)
        for row in [r for i, r in enumerate(loaded, 1) if drawn(spec.source, i, spec.weight)]:
            pid = row["prompt_id"]
            if row["domain"] not in DOMAINS:
                raise DistillError(
                    f"{spec.source}: prompt {pid}: unknown domain '{row['domain']}' ({'|'.join(DOMAINS)})"
                )
            if pid in rows:
                if rows[pid]["problem"] != row["problem"]:
                    raise DistillError(
                        f"{spec.source}: prompt_id '{pid}' also names a different problem in "
                        f"{rows[pid]['source']}; ids must be unique across generate.prompts"
                    )
                duplicates += 1
                continue
            rows[pid] = {k: row[k] for k in PROMPT_FIELDS}
    if not rows:
        names = ", ".join(s.source for s in cfg.prompts) or "none"
        raise DistillError(f"generate.prompts: the prompt set is empty (sources: {names})")
    return list(rows.values()), duplicates


def stage_key(teacher: TeacherConfig, cfg: GenerateConfig) -> str:
    """Hash of what decides the output. The prompts are hashed apart (per shard and as the stage input)."""
    template = Path(teacher.chat_template).read_text() if teacher.chat_template else None
    who = {
        "model": teacher.model,
        "tokenizer": teacher.tokenizer,
        "thinking": teacher.thinking,
        "chat_template": config_hash(template, ensure_ascii=False) if template else None,
    }
    if Path(teacher.model).is_dir():  # a local checkpoint: new weights at the same path are sampled anew
        who["files"] = model_identity(Path(teacher.model))
    return config_hash(
        {"teacher": who, "generate": cfg.model_dump(mode="json", exclude={"prompts", "shard_size"})}
    )


def shard_key(key: str, rows: list[dict[str, Any]]) -> str:
    """ensure_ascii=False: the hash of every run made so far (old shards stay fresh)."""
    return config_hash({"key": key, "prompts": rows}, ensure_ascii=False)


def prompt_seed(seed: int, prompt_id: str) -> int:
    """Per-prompt seed from the recipe seed and the prompt id (sample j: +j); < 2**30 so seed + j fits int32."""
    return int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:8], 16) & 0x3FFFFFFF


def sampling_spec(cfg: GenerateConfig) -> SamplingSpec:
    return SamplingSpec(
        n=cfg.n,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_tokens=cfg.max_tokens,
        logprobs=cfg.logprobs,
    )


def sampling_json(cfg: GenerateConfig) -> str:
    """The row's `sampling` field: what the teacher sampled with; each row adds its own seed. logprobs is
    listed only when asked for, so runs without it keep their sampling hash."""
    spec = {k: v for k, v in asdict(sampling_spec(cfg)).items() if k != "logprobs" or v}
    return json.dumps({**spec, "seed": cfg.seed}, sort_keys=True)


# ---------------------------------------------------------------- shards


def _marker(out: Path, name: str) -> Path:
    return out / DONE / f"{name}.ok"


def read_marker(out: Path, name: str, key: str) -> dict[str, Any] | None:
    """The marker of a finished shard, or None when absent, unreadable, for other prompts/config, or its file
    is not the one the marker describes (size)."""
    path, shard = _marker(out, name), out / name
    try:
        marker = json.loads(path.read_text())
        if marker["key"] == key and shard.stat().st_size == marker["bytes"]:
            return marker
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def pending_shards(out: Path, plan: list[list[dict]], key: str, force: bool) -> list[int]:
    """Shard indices still to generate; deletes temp files, stale shards and stale markers (marker first)."""
    for tmp in [*out.glob(".part-*.tmp"), *(out / DONE).glob(".*.tmp")]:
        tmp.unlink(missing_ok=True)
    keys = {shard_name(i): shard_key(key, rows) for i, rows in enumerate(plan)}
    on_disk = {p.name for p in out.glob("part-*.parquet")} | {p.name[:-3] for p in (out / DONE).glob("*.ok")}
    for name in sorted(on_disk):
        if force or name not in keys or read_marker(out, name, keys[name]) is None:
            _marker(out, name).unlink(missing_ok=True)
            (out / name).unlink(missing_ok=True)
    return [i for i, name in enumerate(keys) if read_marker(out, name, keys[name]) is None]


def run_shard(
    backend: Backend, run: GenerateRun, index: int, rows: list[dict], on_done: OnDone
) -> dict[str, Any]:
    """Generate one shard, write it atomically, then its marker."""
    cfg = run.recipe.generate
    requests = [prompt_request(run, r) for r in rows]
    start = time.perf_counter()
    outs = backend.generate(requests, sampling_spec(cfg), on_done)
    seconds = time.perf_counter() - start
    if len(outs) != len(rows) or any(len(o) != cfg.n for o in outs):  # never write a short shard
        raise RuntimeError(
            f"backend returned {[len(o) for o in outs]} samples for {len(rows)} prompts x {cfg.n}"
        )
    table = [
        make_row(run, sample_of(run, row, req, c, j), row_columns(cfg))
        for row, req, samples in zip(rows, requests, outs, strict=True)
        for j, c in enumerate(samples)
    ]
    return write_shard(run, index, rows, table, seconds)


def prompt_request(run: GenerateRun, row: dict[str, Any]) -> GenRequest:
    cfg = run.recipe.generate
    messages = build_messages(row["problem"], row["domain"], cfg)
    return make_request(run.tokenizer, messages, cfg.force_think, prompt_seed(cfg.seed, row["prompt_id"]))


def sample_of(run: GenerateRun, row: dict, req: GenRequest, c: Completion, j: int) -> Sample:
    trace = parse_trace(c.text, c.finish_reason, run.recipe.teacher.thinking, prefilled(req.prompt_text))
    return Sample(row, req, c, trace, j)


def write_shard(run: GenerateRun, index: int, rows: list[dict], table: list[dict], seconds: float) -> dict:
    """The shard (atomically), then its marker: the key it was made for, its size and its counts."""
    name = shard_name(index)
    entry = write_parquet(table, run.out / name, schema=row_schema(row_columns(run.recipe.generate)))
    marker = {
        **entry,
        "key": shard_key(run.key, rows),
        "bytes": (run.out / name).stat().st_size,
        "prompts": len(rows),
        "prompt_tokens": sum(r["prompt_tokens"] for r in table),
        "completion_tokens": sum(r["completion_tokens"] for r in table),
        "truncated": sum("truncated" in r["flags"] for r in table),
        "malformed": sum("malformed" in r["flags"] for r in table),
        "seconds": round(seconds, 3),
    }
    atomic_write_text(_marker(run.out, name), json.dumps(marker, sort_keys=True))
    return marker


# ---------------------------------------------------------------- running: one process or replicas


class ProgressView:
    """Prompts done (resumed shards count as done at start), generated tokens/s of this run, ETA."""

    def __init__(self, total: int, done: int):
        from distill.ui import progress

        # 2 redraws/s, not rich's 10: on a CPU engine every cycle the driver takes is one the engine loses
        self.bar = progress(refresh_per_second=2)
        self.task = self.bar.add_task("generate", total=total, completed=done, info="starting the teacher")
        self.tokens, self.start = 0, None

    def begin(self) -> None:
        """The first teacher is up: tokens/s counts from here, not from before a 30 s (or 30 min) engine start."""
        if self.start is None:
            self.start = time.perf_counter()
            self.bar.update(self.task, info="")

    def seconds(self) -> float:
        return time.perf_counter() - self.start if self.start is not None else 0.0

    def advance(self, prompts: int, tokens: int) -> None:
        self.begin()
        self.tokens += tokens
        rate = self.tokens / max(self.seconds(), 1e-9)
        self.bar.update(self.task, advance=prompts, info=f"{rate:,.0f} tok/s  {self.tokens:,} tok")

    def __enter__(self) -> ProgressView:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()


def run_local(
    run: GenerateRun, jobs: list[tuple[int, list[dict]]], view: ProgressView, backend: Backend | None
) -> None:
    own = backend is None
    # Ray Data runs the teacher (data_parallel_size included)
    if own and run.recipe.teacher.executor == "ray":
        from distill.engines.ray_backend import RayBackend

        backend = RayBackend.from_config(run.recipe.teacher)
    backend = backend or make_backend(run.recipe.teacher, run.out.parent / ENGINE_LOG)
    view.begin()
    try:
        for index, rows in jobs:
            run_shard(backend, run, index, rows, view.advance)
    finally:
        if own:
            backend.close()


def _replica_main(
    rank: int, recipe_data: dict, out: str, key: str, devices: str | None, jobs: Any, events: Any
):
    """One data-parallel replica (a spawned process): pull shards until the None sentinel."""
    if devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices
    recipe = Recipe.model_validate(recipe_data)
    try:
        run = GenerateRun(recipe, load_teacher_tokenizer(recipe.teacher), Path(out), key)
        backend = make_backend(recipe.teacher, Path(out).parent / ENGINE_LOG)
        events.put(("ready", rank))
        while (job := jobs.get()) is not None:
            run_shard(backend, run, job[0], job[1], lambda p, t: events.put(("progress", p, t)))
        backend.close()
    except BaseException as err:
        events.put(("error", rank, f"{type(err).__name__}: {err}"))
        raise


def run_replicas(run: GenerateRun, jobs: list[tuple[int, list[dict]]], view: ProgressView) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # vLLM and CUDA need fresh processes
    dp = min(run.recipe.teacher.data_parallel_size, len(jobs))
    work, events = ctx.Queue(), ctx.Queue()
    for job in [*jobs, *[None] * dp]:
        work.put(job)
    devices = replica_devices(run.recipe.teacher)
    recipe_data = run.recipe.model_dump(mode="json")
    procs = [
        ctx.Process(
            target=_replica_main, args=(r, recipe_data, str(run.out), run.key, devices[r], work, events)
        )
        for r in range(dp)
    ]
    for p in procs:
        p.start()
    try:
        errors = _pump_events(procs, events, view)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        work.cancel_join_thread()  # shards a dead replica never took must not block our exit
    failed = [f"replica {r} exit code {p.exitcode}" for r, p in enumerate(procs) if p.exitcode != 0]
    if failed or errors:
        raise DistillError("; ".join(errors or failed) + " (finished shards are kept: rerun to resume)")


def _pump_events(procs: list[Any], events: Any, view: ProgressView) -> list[str]:
    """Progress and errors from the replicas until every one has exited; returns the errors."""
    errors: list[str] = []
    while any(p.is_alive() for p in procs) or not events.empty():
        with contextlib.suppress(queue.Empty):
            event = events.get(timeout=0.5)
            if event[0] == "progress":
                view.advance(event[1], event[2])
            elif event[0] == "ready":
                view.begin()
            else:
                errors.append(f"replica {event[1]}: {event[2]}")
    return errors


# ---------------------------------------------------------------- the stage


@contextlib.contextmanager
def _exclusive(out: Path):
    """One writer per output folder; the OS drops the lock when the process dies, kill -9 included."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DistillError(f"{out}: another `distill generate` is writing here") from None
        yield


def generate(
    recipe: Recipe, src: Path | None, out: Path, force: bool = False, backend: Backend | None = None
) -> Manifest:
    """The stage. `backend` lets a caller share an engine it already started (tests, eval)."""
    if recipe.generate.source == "dataset":
        return import_traces(recipe, Path(out), force)
    out, cfg, teacher = Path(out), recipe.generate, recipe.teacher
    check_config(teacher, cfg)
    prompts, duplicates = load_prompt_set(cfg)
    key = stage_key(teacher, cfg)
    with _exclusive(out):
        manifest = prepare_stage(
            "generate", out, key, {"prompts": config_hash(prompts, ensure_ascii=False)}, force
        )
        if manifest is None:
            return read_manifest(out)
        # the tokenizer loads first: a bad template fails before an engine starts
        run = GenerateRun(recipe, load_teacher_tokenizer(teacher), out, key)
        plan = [prompts[i : i + cfg.shard_size] for i in range(0, len(prompts), cfg.shard_size)]
        jobs = [(i, plan[i]) for i in pending_shards(out, plan, key, force)]
        start = time.perf_counter()
        with ProgressView(len(prompts), len(prompts) - sum(len(rows) for _, rows in jobs)) as view:
            if jobs and teacher.data_parallel_size > 1 and teacher.executor == "local" and backend is None:
                run_replicas(run, jobs, view)
            elif jobs:
                run_local(run, jobs, view, backend)
        run_stats = {
            "seconds": time.perf_counter() - start,
            "generate_seconds": view.seconds(),
            "tokens": view.tokens,
            "shards": len(jobs),
        }
        return _finish(run, manifest, plan, duplicates, run_stats)


def _finish(
    run: GenerateRun, manifest: Manifest, plan: list[list[dict]], duplicates: int, stats: dict[str, Any]
) -> Manifest:
    """Manifest from the shard markers (all shards, resumed ones included), a summary table, manifest.json last."""
    markers = _all_markers(run, plan)
    manifest.outputs = [{"file": m["file"], "rows": m["rows"], "sha256": m["sha256"]} for m in markers]
    manifest.rows_in, manifest.rows_out = sum(len(p) for p in plan), sum(m["rows"] for m in markers)
    manifest.dropped = {"duplicate_prompt": duplicates} if duplicates else {}
    manifest.metrics = _metrics(run, markers, manifest.rows_in, stats)
    manifest.metrics["mixture"] = prompt_mix(run.recipe.generate, plan)
    _print_summary(manifest.metrics, manifest.rows_out, len(plan))
    return finish_manifest(run.out, manifest)


def prompt_mix(cfg: GenerateConfig, plan: list[list[dict]]) -> dict[str, dict[str, Any]]:
    """The realised mix of the prompt sources: prompts taken per source (after weights, limits, duplicates)."""
    taken = Counter(row["source"] for rows in plan for row in rows)
    total = sum(taken.values()) or 1
    return {
        name: {
            "weight": spec.weight,
            "limit": spec.limit,
            "prompts": taken[name],
            "share": taken[name] / total,
        }
        for spec in cfg.prompts
        for name in [split_spec(spec.source)[0] if split_spec(spec.source)[0] in taken else spec.source]
    }


def _all_markers(run: GenerateRun, plan: list[list[dict]]) -> list[dict[str, Any]]:
    """Every shard's marker; fails rather than claim completion when one vanished or rows are missing."""
    out, n = run.out, run.recipe.generate.n
    markers = [read_marker(out, shard_name(i), shard_key(run.key, rows)) for i, rows in enumerate(plan)]
    if any(m is None for m in markers):  # a shard vanished under us
        raise DistillError(f"{out}: shard markers missing after the run; rerun to regenerate them")
    rows, prompts = sum(m["rows"] for m in markers), sum(len(p) for p in plan)
    if rows != prompts * n:
        raise DistillError(f"{out}: {rows} rows for {prompts} prompts x n={n}; rerun with --force")
    return markers


def _logprob_metrics(run: GenerateRun) -> dict[str, Any]:
    """With generate.logprobs: K and the teacher's vocabulary hash (logit objectives check it against the
    student's before training)."""
    k = run.recipe.generate.logprobs
    if not k:
        return {}
    from distill.vocab_identity import vocab_hash

    return {
        "logprobs_k": k,
        "teacher_vocab": vocab_hash(run.tokenizer) if run.tokenizer is not None else None,
    }


def _metrics(run: GenerateRun, markers: list[dict], prompts: int, stats: dict[str, Any]) -> dict[str, Any]:
    """The dataset's totals and rates (all shards) and this run's speed (shards generated now)."""
    keys = ("prompt_tokens", "completion_tokens", "truncated", "malformed")
    total = {k: sum(m[k] for m in markers) for k in keys}
    rows, tokenizer, busy = sum(m["rows"] for m in markers), run.tokenizer, stats["generate_seconds"]
    return {
        "prompts": prompts,
        "n": run.recipe.generate.n,
        "teacher": run.recipe.teacher.model,
        "sampling": run.sampling,
        **total,
        "truncated_rate": round(total["truncated"] / rows, 4),
        "malformed_rate": round(total["malformed"] / rows, 4),
        "mean_completion_tokens": round(total["completion_tokens"] / rows, 1),
        "template_default_system": default_system_prompt(tokenizer) if tokenizer is not None else None,
        **_logprob_metrics(run),
        "run_shards_generated": stats["shards"],
        "run_shards_resumed": len(markers) - stats["shards"],
        "run_tokens": stats["tokens"],
        "run_seconds": round(stats["seconds"], 2),  # wall, teacher start included
        "run_generate_seconds": round(busy, 2),
        "run_tokens_per_s": round(stats["tokens"] / busy, 1) if busy else 0.0,
    }


def _print_summary(met: dict[str, Any], rows: int, shards: int) -> None:
    from distill.ui import print_summary

    summary = {
        "prompts": met["prompts"],
        "rows": rows,
        "generated shards": f"{met['run_shards_generated']}/{shards}",
        "tokens (run)": f"{met['run_tokens']:,}",
        "seconds (run)": met["run_seconds"],
        "generating (s)": met["run_generate_seconds"],
        "tok/s (run)": met["run_tokens_per_s"],
        "mean tokens": met["mean_completion_tokens"],
        "truncated": f"{met['truncated_rate']:.1%}",
        "malformed": f"{met['malformed_rate']:.1%}",
    }
    print_summary("generate: summary", summary)


# ---------------------------------------------------------------- generate.source: dataset


def import_traces(recipe: Recipe, out: Path, force: bool) -> Manifest:
    """Public trace sets (distill.sources) as generate shards, through the same ROW plus source_verified and
    trace_spans (rows whose reasoning and answer are spans of their completion; read them with
    sources.trace_texts); no teacher runs. The shards fill a temp folder and move in at the end: a bad row
    anywhere leaves nothing behind."""
    from distill import sources

    cfg = recipe.generate
    sources.check(cfg.datasets)
    key = config_hash(
        {"datasets": [d.model_dump(mode="json") for d in cfg.datasets], "shard": cfg.shard_size}
    )
    with _exclusive(out):
        manifest = prepare_stage("generate", out, key, {"datasets": sources.fingerprint(cfg.datasets)}, force)
        if manifest is None:
            return read_manifest(out)
        mix = sources.Mixture(cfg.datasets)
        schema = row_schema().append(arrow_field("source_verified", "bool")).append(sources.spans_field())
        with atomic_dir(out / "_import") as tmp:
            tables = (imported_table(t, schema) for t in mix.tables())
            manifest.outputs.extend(write_import_shards(tables, tmp, cfg.shard_size, schema))
        replace_shards(out, out / "_import", markers=f"{DONE}/*.ok")
        manifest.rows_in = manifest.rows_out = sum(o["rows"] for o in manifest.outputs)
        manifest.metrics = {**mix.metrics(), "mixture": mix.realised()}
        return finish_manifest(out, manifest)


def arrow_field(name: str, kind: str):
    import pyarrow as pa

    return pa.field(name, {"bool": pa.bool_()}[kind])


def imported_row(run: GenerateRun, t: dict[str, Any]) -> dict[str, Any]:
    """A trace of a public set as a generate row: the set, not a recipe, says who sampled it and how."""
    prompt = {k: t[k] for k in PROMPT_FIELDS}
    request = GenRequest([{"role": "user", "content": t["problem"]}], "", seed=0)
    tokens = len(t["problem"]) // 4  # estimated: the set records no prompt tokens (~4 chars per token)
    completion = Completion(t["completion"], t["finish_reason"], tokens, t["completion_tokens"])
    trace = Trace(t["reasoning"], t["answer"], t["flags"])
    sample = Sample(prompt, request, completion, trace, t["sample_index"])
    sampling, sampling_hash = imported_sampling(t["source"])
    return {
        **make_row(run, sample),
        "teacher": t["teacher"],
        "sampling": sampling,
        "sampling_hash": sampling_hash,
        "seed": None,  # the set does not record its seeds
        "source_verified": t["verified"],
    }


def imported_table(traces: Any, schema: Any) -> Any:
    """imported_row on a whole table of traces (distill.sources.TRACE_FIELDS), column-wise: equal row for row
    (tested), without a Python object per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = {name: one_array(traces.column(name)) for name in traces.schema.names}
    n, problem, source = traces.num_rows, t["problem"], t["source"]
    user = pa.StructArray.from_arrays([pa.repeat(pa.scalar("user"), n), problem], names=["role", "content"])
    sets = pc.unique(source)
    which, sampling = pc.index_in(source, sets), [imported_sampling(s) for s in sets.to_pylist()]
    values = {
        **t,
        "messages": pa.ListArray.from_arrays(pa.array(range(n + 1), pa.int32()), user),
        "prompt_text": pa.repeat(pa.scalar(""), n),
        "prompt_tokens": pc.divide(pc.utf8_length(problem), 4),  # estimated, as imported_row
        "sampling": pc.take(pa.array([s for s, _ in sampling], pa.string()), which),
        "sampling_hash": pc.take(pa.array([h for _, h in sampling], pa.string()), which),
        "seed": pa.nulls(n, pa.int64()),
        "source_verified": t["verified"],
    }
    return pa.Table.from_arrays([values[f.name].cast(f.type) for f in schema], schema=schema)


def one_array(column: Any) -> Any:
    """A column as one array: its chunk when it has one (combine_chunks would copy it)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def write_import_shards(tables: Any, folder: Path, size: int, schema: Any) -> list[dict[str, Any]]:
    """Tables streamed into shards of `size` rows (the last one shorter), each piece written as it comes: memory
    holds a few record batches, never a shard. Writes run on WRITERS background threads (Parquet encoding and
    snappy release the GIL) while the next batch is read and split: the pieces of one shard in order, different
    shards at once, at most WRITERS writes in flight. Returns the shards' manifest entries."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    closed: list[Any] = []
    writer, filled, last = None, 0, None
    with ThreadPoolExecutor(WRITERS) as pool:
        running: deque[Any] = deque()
        for table in tables:
            while table.num_rows:
                writer = writer or ShardWriter(folder / shard_name(len(closed)), schema)
                piece = table.slice(0, size - filled)
                while len(running) >= WRITERS:
                    running.popleft().result()  # a write's error, if any, surfaces here
                running.append(last := pool.submit(after, last, writer.write, piece))
                table, filled = table.slice(piece.num_rows), filled + piece.num_rows
                if filled == size:
                    closed.append(pool.submit(after, last, writer.close))
                    writer, filled, last = None, 0, None
        if writer:
            closed.append(pool.submit(after, last, writer.close))
        for write in running:
            write.result()
        return [entry.result() for entry in closed]


def after(previous: Any, step: Callable[..., Any], *args: Any) -> Any:
    """step(*args) once `previous` (the shard's write before it, or None) is done. The pool starts tasks in the
    order they came, so the one waited for is running or done: no deadlock."""
    if previous is not None:
        previous.result()
    return step(*args)


WRITERS = 2  # shard writes at once: one per core of a small machine (a write is ~60 us of CPU a row, snappy)
LONG_TEXT = ("problem", "messages", "completion", "reasoning", "answer")
SHARD_CODEC = "snappy"  # imported shards' Parquet compression (ShardWriter says why)


class ShardWriter:
    """One Parquet shard written in row groups as they come, hashed on the way out (no second read)."""

    def __init__(self, path: Path, schema: Any):
        import pyarrow.parquet as pq

        self.path, self.rows, self.file = path, 0, HashedFile(open(path, "wb"))  # noqa: SIM115 (closed in close)
        # Dictionaries and min/max statistics only for the short columns: on the long texts (an imported
        # completion: ~24 KB a row) they cost ~15% of the write and never pay off.
        small = [f.name for f in schema if f.name not in LONG_TEXT]
        # Snappy: encoding R1-like text (~24 KB a row) alone, 18.4k rows per CPU-second at 11.3 KB a row; lz4
        # 16.2k at 12.2 KB, zstd-1 9.3k at 7.4 KB; none 86k at 24.2 KB, but 2.1x the disk (a 1M-row import:
        # 12.5k vs 10.3k rows/s on 2 cores, 24 vs 11 GB). Every Parquet reader knows it.
        self.writer = pq.ParquetWriter(
            self.file, schema, compression=SHARD_CODEC, use_dictionary=small, write_statistics=small
        )

    def write(self, table: Any) -> None:
        self.writer.write_table(table)
        self.rows += table.num_rows

    def close(self) -> dict[str, Any]:
        self.writer.close()
        self.file.close()
        return {"file": self.path.name, "rows": self.rows, "sha256": self.file.sha.hexdigest()}


class HashedFile:
    """A binary file that hashes (sha256) what is written to it: Parquet writers only append."""

    def __init__(self, file: Any):
        self.file, self.sha, self.closed = file, hashlib.sha256(), False

    def write(self, data: Any) -> int:
        self.sha.update(data)
        return self.file.write(data)

    def tell(self) -> int:
        return self.file.tell()

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()
        self.closed = True


@functools.cache
def imported_sampling(source: str) -> tuple[str, str]:
    """The `sampling` JSON of an imported row (its set) and its hash; once per set, not per row."""
    sampling = json.dumps({"dataset": source})
    return sampling, config_hash(sampling)
