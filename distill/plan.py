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

from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError

from distill.config import Recipe, Strict, apply_overrides
from distill.errors import DistillError


@dataclass(frozen=True)
class Shape:
    params: int  # all parameters (what a checkpoint stores)
    layers: int
    width: int  # hidden size
    vocab: int
    tied: bool  # input embedding shared with lm_head

    def matmul_params(self) -> int:
        """Parameters doing matmuls per token: an untied input embedding is a lookup (as train's MFU counts)."""
        return self.params - (0 if self.tied else self.vocab * self.width)


# The students' architectures, from their config.json on the Hub (params: safetensors totals).
SHAPES: dict[str, Shape] = {
    "qwen-1.5b": Shape(1_543_714_304, 28, 1536, 151936, True),
    "qwen-7b": Shape(7_615_616_512, 28, 3584, 152064, False),
    "llama-8b": Shape(8_030_261_248, 32, 4096, 128256, False),
    "qwen-14b": Shape(14_770_033_664, 48, 5120, 152064, False),
    "qwen-32b": Shape(32_763_876_352, 64, 5120, 152064, False),
    "llama-70b": Shape(70_553_706_496, 80, 8192, 128256, False),
    "smollm2-135m": Shape(134_515_008, 30, 576, 49152, True),
    "smollm2-pruned": Shape(81_413_568, 15, 576, 49152, True),  # distill.models.PRUNED, as built
}


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
    if values["eval_completion_tokens"] is None:  # the student writes like its teacher, within eval's budget
        values["eval_completion_tokens"] = min(values["completion_tokens"], recipe.eval.max_tokens)
        source["eval_completion_tokens"] = "min(completion_tokens, eval.max_tokens)"
    return Assumptions.model_validate(values), source


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


def print_plan(recipe: Recipe, a: Assumptions, source: dict[str, str], totals: dict[str, float]) -> None:
    from distill.ui import print_table

    rows = [
        {"assumption": f"plan.{k}", "value": _fmt(v), "from": source[k]} for k, v in a.model_dump().items()
    ]
    print_table(f"plan {recipe.name}: assumptions (override: --set plan.NAME=VALUE)", rows)
    print_table(f"plan {recipe.name}: totals", [{"total": k, "value": _fmt(v)} for k, v in totals.items()])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3e}" if value >= 1e6 else f"{value:,.2f}" if value >= 1 else f"{value:.3g}"
    return f"{value:,}" if isinstance(value, int) else str(value)
