"""`distill plan RECIPE`: what a run will cost (teacher tokens, GPU-hours, disk) before anything runs.

    distill plan pipelines/r1-distill-qwen-7b.yaml --set plan.prompts=800000 --set plan.gen_tokens_per_s=2500

Every number the estimate rests on is an assumption printed with its source and overridable with
`--set plan.NAME=VALUE` (recipe fields with the usual `--set generate.n=8`). The arithmetic, with T = tokens:
  teacher T     = prompts x n x completion_tokens          (decode; prefill is inside gen_tokens_per_s)
  generation    = teacher T / gen_tokens_per_s / 3600 instance-hours, x gpus_per_instance GPU-hours
  SFT T         = samples seen x s, s = min(prompt_tokens + completion_tokens, max_length); samples seen =
                  prompts x n x keep_rate x epochs (or max_steps x global_batch)
  SFT FLOPs     = 6 N T + 6 L d s^2 per sample (causal attention; the train loop's MFU formula), GPU-hours at
                  mfu x the GPU's dense bf16 peak
  eval          = sum over benchmarks of problems x k x eval_completion_tokens, at eval_tokens_per_s_per_gpu
                  (twice with eval.baseline)
  disk          = generate + curate shards ((prompt + completion) T x shard_bytes_per_token, each) + kept
                  checkpoints x checkpoint_bytes_per_param x params + the final weights
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, ValidationError

from distill.config import Recipe, Strict, apply_overrides
from distill.errors import DistillError
from distill.memory import SHAPES, Shape  # noqa: F401  (the architecture facts; Shape re-exported)


class Assumptions(Strict):
    """What the estimate assumes; `None` fields are derived (from the recipe or a measured run)."""

    prompts: int | None = None  # None: count the recipe's prompt set (generate.prompts)
    # Mean teacher tokens per sample. None: the run's own generate manifest (a short run measures it), else 8000
    # (R1 on competition math writes several thousand tokens of reasoning; measure yours to replace this).
    completion_tokens: float | None = None
    prompt_tokens: float | None = None  # None: measured as above, else 150 (a problem plus the directive)
    # Output tokens/s of one teacher instance at full batch (R1 TP8xPP2: a few k)
    gen_tokens_per_s: float = Field(3000.0, gt=0)
    gpus_per_instance: int | None = None  # None: teacher tensor_parallel_size x pipeline_parallel_size
    keep_rate: float = Field(0.5, ge=0, le=1)  # share of samples curate keeps (correct, clean, deduplicated)
    gpu: str = "H100"  # key of train's PEAK_BF16_FLOPS table
    mfu: float = Field(0.4, gt=0, le=1)  # model FLOPs utilisation of SFT (packed, flash-attn varlen)
    eval_completion_tokens: float | None = None  # None: min(completion_tokens, eval.max_tokens)
    # Student output tokens/s per GPU in vLLM at full batch
    eval_tokens_per_s_per_gpu: float = Field(2500.0, gt=0)
    # Parquet bytes per (prompt + completion) token: text stored twice (completion, reasoning + answer), zstd
    shard_bytes_per_token: float = 2.0
    checkpoint_bytes_per_param: float = 14.0  # bf16 weights + fp32 master + Adam m and v
    final_bytes_per_param: float = 2.0  # bf16 final weights (patch hard-links them: no second copy)
    usd_per_gpu_hour: float = 2.5
    # memory plan (distill.memory)
    gpus: int | None = Field(None, ge=1)  # None: num_processes of the recipe's accelerate config
    overhead_gib: float = 3.0  # per GPU: CUDA context (~0.5), NCCL buffers, allocator fragmentation
    host_memory_gib: float = 2048.0  # per node, for offload (DGX H100: 2 TB)
    max_num_seqs: int = Field(1024, ge=1)  # sequences a vLLM engine runs at once (its default on H100/H200)


DEFAULT_COMPLETION_TOKENS, DEFAULT_PROMPT_TOKENS = 8000.0, 150.0


def split_sets(sets: list[str]) -> tuple[list[str], list[str]]:
    """`--set plan.x=v` go to the assumptions (without the prefix), the rest to the recipe."""
    plan = [s.removeprefix("plan.") for s in sets if s.startswith("plan.")]
    return [s for s in sets if not s.startswith("plan.")], plan


def load_assumptions(sets: list[str]) -> Assumptions:
    try:
        return Assumptions.model_validate(apply_overrides({}, sets))
    except ValidationError as err:
        first = err.errors()[0]
        raise DistillError(f"--set plan.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


# ---------------------------------------------------------------- resolving the assumptions


def measured(recipe: Recipe) -> dict[str, float] | None:
    """Mean prompt and completion tokens per sample from this run's generate manifest, when it has one."""
    from distill.artifacts import read_manifest

    manifest = read_manifest(recipe.run_path() / "generate")
    if manifest is None or not manifest.rows_out:
        return None
    m = manifest.metrics
    return {
        "prompt": m["prompt_tokens"] / manifest.rows_out,
        "completion": m["completion_tokens"] / manifest.rows_out,
    }


def resolve(recipe: Recipe, a: Assumptions) -> tuple[Assumptions, dict[str, str]]:
    """Fill the derived fields; returns the full assumptions and, per field, where its value came from."""
    source = {
        name: ("--set" if name in a.model_fields_set else "default") for name in Assumptions.model_fields
    }
    values = a.model_dump()
    sample = measured(recipe) if a.completion_tokens is None or a.prompt_tokens is None else None
    where = str(recipe.run_path() / "generate" / "manifest.json")
    for name, key, default in (
        ("completion_tokens", "completion", min(DEFAULT_COMPLETION_TOKENS, recipe.generate.max_tokens)),
        ("prompt_tokens", "prompt", DEFAULT_PROMPT_TOKENS),
    ):
        if values[name] is None:
            values[name], source[name] = (
                (sample[key], f"measured: {where}") if sample else (default, "default")
            )
    if values["prompts"] is None:
        values["prompts"] = count_prompts(recipe)
        source["prompts"] = "recipe: generate." + (
            "datasets" if recipe.generate.source == "dataset" else "prompts"
        )
    if values["gpus_per_instance"] is None:
        t = recipe.teacher
        values["gpus_per_instance"] = t.tensor_parallel_size * t.pipeline_parallel_size
        source["gpus_per_instance"] = "recipe: teacher tp x pp"
    if values["gpus"] is None:
        values["gpus"] = launch_of(recipe).ranks
        source["gpus"] = f"recipe: num_processes of {accelerate_config(recipe)}"
    if values["eval_completion_tokens"] is None:  # the student writes like its teacher, within eval's budget
        values["eval_completion_tokens"] = min(values["completion_tokens"], recipe.eval.max_tokens)
        source["eval_completion_tokens"] = "min(completion_tokens, eval.max_tokens)"
    return Assumptions.model_validate(values), source


def accelerate_config(recipe: Recipe) -> str:
    from distill.students import get_student

    return recipe.train.accelerate_config or get_student(recipe.student).accelerate_config


def launch_of(recipe: Recipe, gpus: int | None = None):
    """The recipe's accelerate config as the train loop runs it: bf16 on a GPU unless train.dtype is float32."""
    from dataclasses import replace

    from distill.memory import read_launch

    launch = read_launch(accelerate_config(recipe))
    return replace(launch, ranks=gpus or launch.ranks, bf16=recipe.train.dtype != "float32")


def count_prompts(recipe: Recipe) -> int:
    if recipe.generate.source == "dataset":  # imported traces: the sets' rows (Parquet footers, JSONL lines)
        from distill.sources import count_rows

        return count_rows(recipe.generate.datasets)
    from distill.generate.run import load_prompt_set

    return len(load_prompt_set(recipe.generate)[0])


def benchmark_problems(recipe: Recipe) -> dict[str, int]:
    from distill.eval.run import benchmark_prompts

    return {name: len(benchmark_prompts(name, spec.limit)) for name, spec in recipe.eval.benchmarks.items()}


def peak_flops(gpu: str) -> float:
    from distill.train.loop import PEAK_BF16_FLOPS

    if gpu not in PEAK_BF16_FLOPS:
        raise DistillError(f"--set plan.gpu: unknown GPU '{gpu}' (known: {', '.join(PEAK_BF16_FLOPS)})")
    return PEAK_BF16_FLOPS[gpu]


# ---------------------------------------------------------------- the estimate


def estimate(recipe: Recipe, a: Assumptions, problems: dict[str, int]) -> dict[str, float]:
    """Totals from resolved assumptions (every derived field filled) and the eval benchmarks' problem counts."""
    from distill.students import get_student
    from distill.train.loop import model_flops

    student, shape = get_student(recipe.student), SHAPES[recipe.student]
    samples = a.prompts * recipe.generate.n
    teacher_tokens = samples * a.completion_tokens
    gen_instance_h = teacher_tokens / a.gen_tokens_per_s / 3600
    length = min(a.prompt_tokens + a.completion_tokens, recipe.train.max_length or student.max_length)
    seen = sft_samples(recipe, samples * a.keep_rate)
    sft_flops = model_flops(shape.matmul_params(), shape.layers, shape.width, seen * length, seen * length**2)
    sft_gpu_h = sft_flops / (a.mfu * peak_flops(a.gpu)) / 3600
    runs = 2 if recipe.eval.baseline else 1  # the baseline model samples the same problems again
    eval_samples = sum(n * recipe.eval.benchmarks[b].k for b, n in problems.items())
    eval_tokens = runs * eval_samples * a.eval_completion_tokens
    eval_gpu_h = eval_tokens / a.eval_tokens_per_s_per_gpu / 3600
    shards = samples * (a.prompt_tokens + a.completion_tokens) * a.shard_bytes_per_token
    keep = recipe.train.keep_checkpoints
    ckpt = shape.params * (keep * a.checkpoint_bytes_per_param + a.final_bytes_per_param)
    gpu_h = gen_instance_h * a.gpus_per_instance + sft_gpu_h + eval_gpu_h
    return {
        "samples": samples,
        "teacher_tokens": teacher_tokens,
        "generate_instance_hours": gen_instance_h,
        "generate_gpu_hours": gen_instance_h * a.gpus_per_instance,
        "sft_samples": seen,
        "sft_tokens": seen * length,
        "sft_flops": sft_flops,
        "sft_gpu_hours": sft_gpu_h,
        "eval_samples": runs * eval_samples,
        "eval_tokens": eval_tokens,
        "eval_gpu_hours": eval_gpu_h,
        "disk_shards_gb": 2 * shards / 1e9,  # generate/ and curate/ (kept + dropped) each hold every row
        "disk_checkpoints_gb": ckpt / 1e9,
        "total_gpu_hours": gpu_h,
        "total_usd": gpu_h * a.usd_per_gpu_hour,
    }


def sft_samples(recipe: Recipe, kept: float) -> float:
    """Samples the SFT run sees: max_steps x global batch when capped, else kept x epochs."""
    from distill.students import get_student

    student, train = get_student(recipe.student), recipe.train
    if train.max_steps is not None:
        return float(train.max_steps * (train.global_batch or student.global_batch))
    return kept * (train.epochs if train.epochs is not None else student.epochs)


def plan(recipe: Recipe, sets: list[str]) -> tuple[Assumptions, dict[str, str], dict[str, float]]:
    if recipe.student not in SHAPES:
        raise DistillError(f"student '{recipe.student}': no architecture facts in distill.plan.SHAPES")
    assumptions, source = resolve(recipe, load_assumptions(sets))
    return assumptions, source, estimate(recipe, assumptions, benchmark_problems(recipe))


# ---------------------------------------------------------------- the memory plan (distill.memory)


def gpu_capacity(a: Assumptions) -> float:
    """Bytes a process may use on one plan.gpu: its memory less plan.overhead_gib."""
    from distill.memory import GPU_MEMORY_GIB, GiB

    if a.gpu not in GPU_MEMORY_GIB:
        raise DistillError(f"--set plan.gpu: unknown GPU '{a.gpu}' (known: {', '.join(GPU_MEMORY_GIB)})")
    return (GPU_MEMORY_GIB[a.gpu] - a.overhead_gib) * GiB


def train_memory(recipe: Recipe, a: Assumptions) -> dict[str, Any]:
    """Per-GPU bytes of the train run by part, its total, the capacity, and each single change that would fit."""
    from distill.memory import TrainShape, as_trained, fixes, host_bytes, train_parts, train_total
    from distill.students import get_student

    shape, train = as_trained(SHAPES[recipe.student], recipe.student), recipe.train
    max_length = train.max_length or get_student(recipe.student).max_length
    t = TrainShape(max_length, train.micro_batch_size, train.gradient_checkpointing, train.loss_chunk_tokens)
    launch = launch_of(recipe, a.gpus)
    parts = train_parts(shape, t, launch)
    capacity, total = gpu_capacity(a), train_total(parts)
    over = total > capacity
    return {"launch": launch, "parts": parts, "total": total, "capacity": capacity,
            "fixes": fixes(shape, t, launch, capacity, accelerate_config(recipe)) if over else [],
            "host": host_bytes(shape, launch)}  # fmt: skip


def teacher_shape(recipe: Recipe) -> Shape | None:
    from distill.memory import TEACHERS, local_shape

    model = recipe.teacher.model
    if model in TEACHERS or model in SHAPES:
        return TEACHERS.get(model) or SHAPES[model]
    from distill.models import resolve_model

    try:
        return local_shape(resolve_model(model))
    except DistillError:
        return None


def generate_memory(recipe: Recipe, a: Assumptions, samples: float) -> dict[str, Any] | None:
    """Per-GPU bytes of the teacher's vLLM engine: weights, the KV cache its concurrency needs, what fits."""
    from distill.memory import GPU_MEMORY_GIB, GiB, generate_parts

    t, shape = recipe.teacher, teacher_shape(recipe)
    if recipe.generate.source == "dataset" or t.backend != "vllm" or shape is None:
        return None
    seq = a.prompt_tokens + recipe.generate.max_tokens
    seq = min(seq, t.max_model_len) if t.max_model_len else seq
    concurrency = int(min(a.max_num_seqs, samples))
    parts = generate_parts(shape, t.tensor_parallel_size, t.pipeline_parallel_size, seq, concurrency)
    budget = GPU_MEMORY_GIB[a.gpu] * GiB * t.gpu_memory_utilization  # vLLM's share of the GPU
    kv_room = budget - parts["weights"]
    return {"parts": parts, "budget": budget, "concurrency": concurrency, "seq_tokens": seq,
            "fit_sequences": max(0, int(kv_room // parts["kv per sequence"])), "shape": shape}  # fmt: skip


def bins_per_epoch(recipe: Recipe, a: Assumptions, samples: float) -> int:
    """Micro-batch units one epoch makes: packed bins of max_length (or samples, unpacked)."""
    from distill.students import get_student

    max_length = recipe.train.max_length or get_student(recipe.student).max_length
    kept = samples * a.keep_rate
    if not recipe.train.packing:
        return math.ceil(kept)
    return math.ceil(kept * min(a.prompt_tokens + a.completion_tokens, max_length) / max_length)


def memory_verdicts(
    recipe: Recipe, a: Assumptions, train: dict[str, Any], gen: dict[str, Any] | None, samples: float
) -> list[str]:
    """One line per run: fits, or what to change."""
    from distill.memory import GiB

    launch = train["launch"]
    where = f"{a.gpus} x {a.gpu}, {launch.sharding}"
    lines = [
        f"train: {train['total'] / GiB:.1f} GiB per GPU of {train['capacity'] / GiB:.1f} usable ({where}): "
        + ("fits" if not train["fixes"] and train["total"] <= train["capacity"] else
           "does not fit; change " + (" or ".join(train["fixes"]) or "the model"))
    ]  # fmt: skip
    if train["host"] > a.host_memory_gib * GiB:
        lines.append(
            f"train: {launch.sharding} needs {train['host'] / GiB:.0f} GiB of host memory per node of "
            f"plan.host_memory_gib={a.host_memory_gib:.0f}: more nodes or pipelines/accelerate/zero3.yaml"
        )
    bins = bins_per_epoch(recipe, a, samples)
    if launch.ranks > bins:
        lines.append(
            f"train: {launch.ranks} ranks but about {bins} bins per epoch: some ranks would have no data; "
            f"use at most {bins} GPUs (plan.gpus, num_processes in {accelerate_config(recipe)})"
        )
    if gen is not None:
        lines.append(generate_verdict(recipe, gen))
    return lines


def generate_verdict(recipe: Recipe, gen: dict[str, Any]) -> str:
    from distill.memory import GiB

    t, p = recipe.teacher, gen["parts"]
    head = f"generate: weights {p['weights'] / GiB:.1f} GiB per GPU of {gen['budget'] / GiB:.1f} (gpu_memory_utilization)"  # fmt: skip
    if p["weights"] >= gen["budget"]:
        need = math.ceil(
            p["weights"] * t.tensor_parallel_size * t.pipeline_parallel_size / gen["budget"] * 1.25
        )
        return (
            f"{head}: does not fit; change teacher.tensor_parallel_size x pipeline_parallel_size to >= {need}"
        )
    if gen["fit_sequences"] < gen["concurrency"]:
        return (
            f"{head}: the KV cache holds {gen['fit_sequences']} of the {gen['concurrency']} sequences vLLM runs at "
            f"once at {gen['seq_tokens']:.0f} tokens each; it runs fewer (plan.gen_tokens_per_s should be measured "
            "so), or change generate.max_tokens or teacher.pipeline_parallel_size"
        )
    return f"{head}: fits, the KV cache holds all {gen['concurrency']} sequences at full length"


def memory_rows(train: dict[str, Any], gen: dict[str, Any] | None) -> list[dict[str, str]]:
    from distill.memory import GiB

    rows = [{"run": "train", "part": k, "GiB": f"{v / GiB:.2f}"} for k, v in train["parts"].items()]
    rows.append({"run": "train", "part": "total", "GiB": f"{train['total'] / GiB:.2f}"})
    if train["host"]:
        rows.append({"run": "train", "part": "host memory per node", "GiB": f"{train['host'] / GiB:.2f}"})
    for k, v in (gen or {}).get("parts", {}).items():
        rows.append({"run": "generate", "part": k, "GiB": f"{v / GiB:.2f}"})
    return rows


def print_plan(recipe: Recipe, a: Assumptions, source: dict[str, str], totals: dict[str, float]) -> None:
    from distill.ui import print_table

    rows = [
        {"assumption": f"plan.{k}", "value": _fmt(v), "from": source[k]} for k, v in a.model_dump().items()
    ]
    print_table(f"plan {recipe.name}: assumptions (override: --set plan.NAME=VALUE)", rows)
    print_table(f"plan {recipe.name}: totals", [{"total": k, "value": _fmt(v)} for k, v in totals.items()])
    train, gen = train_memory(recipe, a), generate_memory(recipe, a, totals["samples"])
    print_table(f"plan {recipe.name}: peak memory per GPU ({a.gpu})", memory_rows(train, gen))
    for line in memory_verdicts(recipe, a, train, gen, totals["samples"]):
        print(line)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3e}" if value >= 1e6 else f"{value:,.2f}" if value >= 1 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)
