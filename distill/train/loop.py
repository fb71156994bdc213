"""The SFT loop, readable top to bottom: Accelerate, packed R1 traces, completion-only chunked loss, exact resume.

    distill train pipelines/demo-cpu.yaml                          # one process: CPU or one GPU
    distill train --student qwen-7b --data runs/x/curate --set train.max_steps=100
    accelerate launch --config_file pipelines/accelerate/zero3.yaml -m distill.train.loop \\
        pipelines/r1-distill-qwen-7b.yaml [--set train.lr=2e-5] [--data DIR] [--out DIR] [--force]

src = RUN_DIR/curate (its kept/ shards); out = RUN_DIR/train with checkpoints/step-N/ (model, optimizer,
scheduler, RNG, data position), final/ (plain HF folder, safetensors, release tokenizer), metrics.jsonl,
loss.png, tokens/ (the tokenized data, reused on resume) and manifest.json, written last.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from distill.artifacts import (
    Manifest,
    atomic_dir,
    atomic_path,
    atomic_write_text,
    checkpoint_files,
    finish_manifest,
    is_fresh,
    manifest_hash,
    model_identity,
    prepare_stage,
    read_manifest,
)
from distill.config import Recipe, TeacherConfig, TrainConfig, config_hash, load_recipe, stepped_lr
from distill.errors import DistillError
from distill.memory import check_train
from distill.models import resolve_model
from distill.students import Student, get_student
from distill.train.data import (
    KDRows,
    TokenData,
    build_tokens,
    cache_key,
    collate_packed,
    collate_padded,
    epoch_micro_batches,
    load_tokens,
    read_key,
    step_micro_batches,
    steps_per_epoch,
    teacher_batch,
    token_utilisation,
    training_template,
    training_units,
)
from distill.train.kd import kd_loss
from distill.train.loss import LossFn, forward_ce
from distill.ui import progress

# Dense bf16 peak per GPU (FLOP/s) for the MFU estimate; matched as a substring of the device name.
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "B200": 2250e12,
}


# ---------------------------------------------------------------- configuration


def effective_config(
    train: TrainConfig, student: Student, teacher: TeacherConfig | None = None
) -> TrainConfig:
    """The recipe's train section with the student's defaults filled in where it says None (and, for the logit
    objectives, the teacher: train.teacher, else the recipe's teacher.tokenizer or teacher.model)."""
    logit = train.objective != "sft" and teacher is not None
    return train.model_copy(
        update={
            "model": train.model or student.base,
            "lr": train.lr if train.lr is not None else student.lr,
            "epochs": train.epochs if train.epochs is not None else student.epochs,
            "max_length": train.max_length or student.max_length,
            "global_batch": train.global_batch or student.global_batch,
            "teacher": train.teacher or ((teacher.tokenizer or teacher.model) if logit else None),
        }
    )


def attention_impl(requested: str) -> str:
    """auto: flash-attention 2 (varlen kernels, boundaries from position_ids) on CUDA when installed, else sdpa."""
    import torch

    flash = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    if requested == "auto":
        return "flash_attention_2" if flash else "sdpa"
    if requested == "flash_attention_2" and not flash:
        raise DistillError(
            "train.attn_implementation=flash_attention_2 needs a CUDA GPU and the flash-attn package "
            "(pip install 'distill[gpu]'); on CPU use sdpa or auto"
        )
    return requested


def use_bf16(cfg: TrainConfig) -> bool:
    """bf16 compute (fp32 master weights) on GPU; fp32 on CPU, which has no fast bf16 here (5x slower)."""
    import torch

    return cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and torch.cuda.is_available())


def make_accelerator(cfg: TrainConfig, out: Path):
    """Created before the model, so DeepSpeed ZeRO-3 / FSDP can shard it while it loads. The scheduler is
    stepped once per optimizer step (not once per process, Accelerate's default). Long collectives (rank 0
    tokenizing 800k traces, saving a 70B checkpoint) get two hours instead of the 10-minute default.
    Accelerate's state is a process-wide singleton: it is reset (keeping the process group) so a second
    train() in one process (a notebook, a sweep) may use another precision."""
    import torch

    # else DeepSpeed, imported by Accelerate, warns on the terminal that it fell back to CPU
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from accelerate import Accelerator, InitProcessGroupKwargs
    from accelerate.state import AcceleratorState, GradientState

    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise DistillError("train.tensorboard=true needs the tensorboard package (pip install tensorboard)")
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(
        mixed_precision="bf16" if use_bf16(cfg) else "no",
        step_scheduler_with_optimizer=False,
        log_with="tensorboard" if cfg.tensorboard else None,
        project_dir=str(out),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(hours=2))],
    )


def is_sharded(accelerator) -> bool:
    from accelerate import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return accelerator.distributed_type == DistributedType.FSDP


def say(accelerator, message: str) -> None:
    if accelerator.is_main_process:
        print(f"train: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data, model, optimizer


def release_tokenizer_for(model_path: str, student_name: str):
    """The student's release tokenizer (R1 tokens renamed into / added to the base vocabulary), so the ids
    trained on are the ids the released checkpoint reads and writes."""
    from distill.models import load_tokenizer
    from distill.release_files import release_tokenizer

    try:
        base = load_tokenizer(model_path)
    except OSError as err:  # not a folder and not reachable on the Hub
        raise DistillError(f"train.model '{model_path}': cannot load its tokenizer ({err})") from None
    return release_tokenizer(base, student_name)


def tokenized_data(
    src: Path, out: Path, tokenizer, cfg: TrainConfig, input_hash: str, accelerator, kd: KDRows | None = None
) -> TokenData:
    """Rank 0 renders and tokenizes once into out/tokens/ (memory-mapped by every rank, reused on resume).
    kd: kd's rows (teacher ids after the release prompt, top-K rows)."""
    folder = out / "tokens"
    key = cache_key(input_hash, tokenizer, training_template(), cfg.max_length, cfg.overlong)
    key = key if kd is None else f"{key}:kd:{kd.teacher_eos}:{kd.student_eos}:{kd.target}"
    if accelerator.is_main_process and read_key(folder) != key:
        say(accelerator, f"tokenizing {src / 'kept'} (max_length {cfg.max_length}, overlong: {cfg.overlong})")
        build_tokens(src, tokenizer, cfg.max_length, cfg.overlong, folder, key, kd)
    accelerator.wait_for_everyone()
    data = load_tokens(folder)
    stats = data.stats
    if stats["rows_in"] == 0:
        raise DistillError(f"{src / 'kept'}: the curated dataset is empty (0 rows); nothing to train on")
    if len(data) == 0:
        raise DistillError(
            f"{src / 'kept'}: all {stats['rows_in']} rows were dropped {stats['dropped']} "
            f"(train.max_length={cfg.max_length}); raise max_length or use overlong=truncate"
        )
    if stats["truncated"] or stats["dropped"]:
        say(
            accelerator,
            f"{stats['truncated']} samples truncated to {cfg.max_length} tokens, dropped: "
            f"{stats['dropped'] or 'none'} (train.overlong={cfg.overlong})",
        )
    return data


def load_model(cfg: TrainConfig, tokenizer, student_name: str, attn: str):
    """fp32 master weights (bf16 compute comes from autocast / ZeRO / FSDP mixed precision: bf16 weights
    would round away updates smaller than 1/256 of a weight). Returns (model, ids of added tokens)."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill.release_files import prepare_model

    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.float32, attn_implementation=attn)
    rows_before = model.get_input_embeddings().num_embeddings
    model = prepare_model(model, tokenizer, student_name)
    new_ids = list(range(rows_before, len(tokenizer)))
    # The packing trap: with use_cache on, transformers makes a cache and then ignores the restarting
    # position_ids, so packed samples attend to each other (see docs/cpu-stack.md).
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.lora is not None:
        model = add_lora(model, cfg.lora, new_ids)
    return model, new_ids


def add_lora(model, lora, new_ids: list[int]):
    """LoRA on every linear layer (not lm_head); rows of tokens the release added (other families) are
    trained too, or the model could never learn to write them."""
    from peft import LoraConfig, get_peft_model

    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        task_type="CAUSAL_LM",
        target_modules=lora.target_modules,
        trainable_token_indices=new_ids or None,
    )
    return get_peft_model(model, peft_cfg)


def make_optimizer(model, cfg: TrainConfig):
    """AdamW; no weight decay on norms and biases (by name: ZeRO-3 flattens partitioned shapes)."""
    import torch

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if not re.search(r"bias|norm", n)]
    rest = [p for n, p in named if re.search(r"bias|norm", n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    lr = stepped_lr(cfg.model_dump(include={"lr", "objective", "on_policy"}))
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def make_scheduler(optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.lr_scheduler]
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)


def grad_accum_for(cfg: TrainConfig, units: list[list[int]], world: int) -> int:
    """Micro-steps per optimizer step so that a step sees about global_batch samples (a bin holds several)."""
    if cfg.grad_accum:
        return cfg.grad_accum
    samples_per_micro = cfg.micro_batch_size * sum(len(u) for u in units) / len(units)
    return max(1, round(cfg.global_batch / (samples_per_micro * world)))


def param_count(model) -> int:
    """Parameters doing matmuls per token (the embedding lookup does none, unless tied to lm_head);
    ZeRO-3 keeps the real size of a partitioned parameter in ds_numel."""
    total = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embed
    return total - (0 if tied else (embed.ds_numel if hasattr(embed, "ds_numel") else embed.numel()))


# ---------------------------------------------------------------- one step


def batch_for(data: TokenData, indices: list[int], packing: bool, pad_id: int, device) -> dict[str, Any]:
    samples = [data.sample(i) for i in indices]
    batch = collate_packed(samples) if packing else collate_padded(samples, pad_id)
    if data.top_ids is not None:  # kd: the teacher's top-K row of every trained position
        batch.update(teacher_batch(data, indices))
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def train_step(
    accelerator,
    model,
    lm_head,
    optimizer,
    scheduler,
    batches: list[dict],
    cfg: TrainConfig,
    flash: bool,
    loss_fn: LossFn = forward_ce,
) -> dict[str, float]:
    """One optimizer step over this rank's micro-batches. The loss is the mean over every trained token of
    the global batch: trained tokens are counted on all ranks before the first backward and each summed
    micro-batch loss is divided by that count, so batch 1 x accumulation 8 == batch 8 x accumulation 1.
    `loss_fn` (the objective's summed loss of a micro-batch) is called here and nowhere else."""
    import torch

    device, lr = accelerator.device, optimizer.param_groups[0]["lr"]  # DeepSpeed steps inside backward
    local = [
        sum(float(len(b["labels"])) for b in batches),
        sum(float(n) for b in batches for n in b["seq_lens"]),
        sum(float(n * n) for b in batches for n in b["seq_lens"]),
    ]
    totals = accelerator.reduce(torch.tensor(local, dtype=torch.float64, device=device), "sum")
    n_targets, n_tokens, sq_lens = totals.tolist()
    # accelerator.backward divides by the accumulation steps and DDP/FSDP/ZeRO average over ranks: undo both
    scale = accelerator.num_processes * accelerator.gradient_accumulation_steps / n_targets
    ce_sum = torch.zeros((), device=device)
    parts: dict[str, Any] = {}  # the objective's logged terms (kd: ce, kd), summed over micro-batches
    for batch in batches:
        with accelerator.accumulate(model):
            with accelerator.autocast():
                ce = loss_fn(model, lm_head, batch, cfg.loss_chunk_tokens, flash)
            ce, terms = ce if isinstance(ce, tuple) else (ce, {})
            accelerator.backward(ce * scale)
        ce_sum += ce.detach()
        for name, value in terms.items():
            parts[name] = parts.get(name, 0.0) + value.detach().float()
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or float("inf"))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loss = accelerator.reduce(ce_sum, "sum").item() / n_targets
    terms = {k: accelerator.reduce(v.reshape(()), "sum").item() / n_targets for k, v in sorted(parts.items())}
    return {
        "terms": terms,
        "loss": loss,
        "lr": lr,
        "grad_norm": None if grad_norm is None else float(grad_norm),
        "tokens": int(n_tokens),
        "targets": int(n_targets),
        "sq_lens": sq_lens,
    }


# ---------------------------------------------------------------- checkpoints and outputs


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints (state.json is written last), oldest first."""
    found = [p.parent for p in (out / "checkpoints").glob("step-*/state.json")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resume_point(out: Path, fingerprint: str, force: bool, accelerator) -> Path | None:
    """The newest checkpoint of this very run (same config and data); stale ones, and temp folders a killed
    save left, are removed so pruning never deletes a current checkpoint in favour of an old one."""
    current = []
    for ckpt in checkpoint_dirs(out):
        state = json.loads((ckpt / "state.json").read_text())
        if state["fingerprint"] == fingerprint and not force:
            current.append(ckpt)
        elif accelerator.is_main_process:
            shutil.rmtree(ckpt)
    if accelerator.is_main_process:
        for leftover in (out / "checkpoints").glob(".step-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    accelerator.wait_for_everyone()
    return current[-1] if current else None


def save_checkpoint(accelerator, out: Path, step: int, state: dict[str, Any], keep: int) -> None:
    """Every rank writes its part (ZeRO/FSDP shards, its RNG) into rank 0's atomic_dir temp folder; rank 0
    adds state.json (step = data position), the folder is renamed into place, then the oldest beyond `keep`
    are pruned."""
    with _rank0_atomic_dir(accelerator, out / "checkpoints" / f"step-{step}") as tmp:
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            atomic_write_text(tmp / "state.json", json.dumps({**state, "step": step}, indent=2))
    if accelerator.is_main_process:
        for old in checkpoint_dirs(out)[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()


@contextlib.contextmanager
def _rank0_atomic_dir(accelerator, path: Path) -> Iterator[Path]:
    """atomic_dir on rank 0, its temp folder's path sent to every rank (a shared filesystem, as Accelerate's
    own checkpoints need)."""
    from accelerate.utils import broadcast_object_list

    with atomic_dir(path) if accelerator.is_main_process else contextlib.nullcontext() as tmp:
        yield broadcast_object_list([tmp])[0]


def save_final(accelerator, model, tokenizer, folder: Path, bf16: bool, base: str | None = None) -> None:
    """A plain HF folder: LoRA merged into the base, safetensors in the compute dtype, use_cache back on,
    the release tokenizer, and the base model's own config JSON in base/ (patch edits those, not transformers'
    re-serialisation). AutoModelForCausalLM and vLLM load it unchanged."""
    import torch

    from distill.release_files import keep_base_files

    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model)  # a collective under ZeRO-3 / FSDP: every rank calls it
    if accelerator.is_main_process:
        net = accelerator.unwrap_model(model)
        if hasattr(net, "merge_and_unload"):  # a peft model (LoRA is refused with sharded training)
            net = net.merge_and_unload()
            state = net.state_dict()
        dtype = torch.bfloat16 if bf16 else torch.float32
        state = {k: v.to(dtype) for k, v in state.items()}
        net.config.use_cache = True
        with atomic_dir(folder) as tmp:
            net.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            # save_pretrained records the fp32 master weights' dtype; vLLM's dtype=auto would then load
            # bf16 weights as fp32 (2x memory): config.json must name the dtype of the saved tensors
            net.config.dtype = dtype
            net.config.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if base is not None:
                keep_base_files(base, tmp)
    accelerator.wait_for_everyone()


def read_metrics(path: Path, upto: int | None = None) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if upto is None or r["step"] <= upto]


def plot_loss(metrics: list[dict[str, Any]], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics], lw=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean CE per completion token)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def metrics_row(step: int, epoch_len: int, stats: dict[str, Any], seconds: float) -> dict[str, Any]:
    """One metrics.jsonl line: loss is the mean CE per trained token of the global batch; tokens count
    every real token of the step on all ranks (prompts included, no padding)."""
    return {
        "step": step,
        "epoch": round(step / epoch_len, 4),
        "loss": stats["loss"],
        "lr": stats["lr"],
        "grad_norm": stats["grad_norm"],
        "tokens": stats["tokens"],
        "trained_tokens": stats["targets"],
        "tokens_per_s": round(stats["tokens"] / seconds, 1),
        "step_s": round(seconds, 4),
        **stats.get("terms", {}),  # the objective's parts per trained token (kd: ce, kd)
    }


def run_summary(logged: list[dict[str, Any]], run: list[dict[str, Any]]) -> dict[str, Any]:
    """Whole-curve numbers from metrics.jsonl (all steps, across resumes); speed from this process's steps."""
    summary = {
        "first_loss": logged[0]["loss"],
        "final_loss": logged[-1]["loss"],
        "tokens": sum(m["tokens"] for m in logged),
        "trained_tokens": sum(m["trained_tokens"] for m in logged),
    }
    if run:
        summary["tokens_per_s"] = round(sum(m["tokens"] for m in run) / sum(m["step_s"] for m in run), 1)
    if run and "mfu" in run[0]:
        summary["mfu"] = round(sum(m["mfu"] for m in run) / len(run), 4)
    return summary


def model_flops(n_params: int, n_layers: int, width: int, tokens: float, sq_lens: float) -> float:
    """Training FLOPs of a step (forward + backward, recomputation not counted, as MFU is defined): 6 per
    matmul parameter per token, plus causal attention 6 * layers * width * sum(len^2) over the samples."""
    return 6 * n_params * tokens + 6 * n_layers * width * sq_lens


def peak_flops() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


# ---------------------------------------------------------------- the run: setup -> loop -> summarize


@dataclass(frozen=True)
class Schedule:
    """Bins (or samples) -> shuffled micro-batches per epoch -> `accum` micro-batches per rank per step."""

    units: list[list[int]]  # sample indices per packed bin (or one sample each)
    accum: int  # micro-batches per rank per optimizer step
    epoch_len: int  # optimizer steps per epoch
    total_steps: int
    utilisation: float  # real tokens / token slots (padding and bin tails waste the rest)


@dataclass
class TrainRun:
    """What setup() builds and loop() and summarize() read."""

    cfg: TrainConfig  # the effective config (student defaults filled in)
    out: Path
    accelerator: Any
    model: Any  # prepared (wrapped by DDP / FSDP / DeepSpeed)
    lm_head: Any
    optimizer: Any
    scheduler: Any
    tokenizer: Any
    data: TokenData
    schedule: Schedule
    loss_fn: LossFn  # the objective's loss of a micro-batch
    vocab: dict[str, str]  # logit objectives: teacher_vocab / student_vocab id-table hashes (sft: empty)
    policy: Any  # on_policy: distill.train.on_policy.Policy (prompts, the student's engine, the teacher); else None
    attn: str
    fingerprint: str  # config hash : data hash : world size; a checkpoint resumes only the same run
    start: int  # first step to run (0, or the resumed checkpoint's step)
    flop_model: tuple[int, int, int]  # (matmul parameters, layers, width) for MFU
    peak: float | None  # the GPU's dense bf16 FLOP/s (None: no MFU)
    manifest: Manifest | None  # rank 0 only
    began: float  # time.time() when the loop starts

    @property
    def flash(self) -> bool:
        return self.attn == "flash_attention_2"

    def step(self, batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over this rank's micro-batches (train_step on this run's parts)."""
        parts = (self.accelerator, self.model, self.lm_head, self.optimizer, self.scheduler)
        return train_step(*parts, batches, self.cfg, self.flash, self.loss_fn)


def train(recipe: Recipe, src: Path, out: Path, force: bool = False, after: dict[str, str] | None = None):
    """Stage 3: SFT of recipe.student on src/kept (RUN_DIR/curate) -> out/final/ and the manifest. `after`: the
    manifest hashes of the phases this one reads (distill.pipeline's phases), part of its key."""
    src, out = Path(src), Path(out)
    student = get_student(recipe.student)
    cfg = effective_config(recipe.train, student, recipe.teacher)
    inputs = {"curate": manifest_hash(src), **(after or {})}
    inputs |= {field: h for field, h in local_models(cfg).items() if field not in inputs}
    cfg_hash = config_hash({"student": recipe.student, "train": cfg.model_dump(mode="json")})
    if not force and is_fresh(out, cfg_hash, inputs):
        print(f"train: {out} is up to date (same config and data); --force reruns it", file=sys.stderr)
        return read_manifest(out)
    run = setup(recipe.student, cfg, src, out, (cfg_hash, inputs), force)
    return summarize(run, loop(run))


def local_models(cfg: TrainConfig) -> dict[str, str]:
    """The local model folders whose weights this run reads, by identity (distill.artifacts.model_identity): its
    start, and on_policy's teacher, which scores every sample (kd reads only the teacher's tokenizer; its log-probs
    come from curate). Retrained in place, they make the run stale; a hub or registry name is keyed by the config.
    A phase's final/ has its phase's manifest hash, the value `after` already holds for it."""
    reads = {"init": cfg.model, "teacher": cfg.teacher if cfg.objective == "on_policy" else None}
    return {field: model_identity(Path(p)) for field, p in reads.items() if p and Path(p).is_dir()}


def setup(
    student: str, cfg: TrainConfig, src: Path, out: Path, key: tuple[str, dict], force: bool
) -> TrainRun:
    """Accelerate first (ZeRO-3 / FSDP shard the model as it loads), then data, model, the schedule, the
    optimizer and its wrapping, and this run's newest checkpoint to resume from."""
    import torch

    cfg_hash, inputs = key
    attn = attention_impl(cfg.attn_implementation)
    accelerator = make_accelerator(cfg, out)
    check_launch(accelerator, cfg, student)
    manifest = (
        prepare_stage("train", out, cfg_hash, inputs, force=True) if accelerator.is_main_process else None
    )
    model_path = resolve_model(cfg.model)
    tokenizer = release_tokenizer_for(model_path, student)
    check_zero3_init(accelerator, model_path, tokenizer, student)
    vocab, kd = same_vocabulary(cfg, tokenizer, student)  # before anything is trained
    data = tokenized_data(src, out, tokenizer, cfg, inputs["curate"], accelerator, kd)
    check_train(
        accelerator, cfg, student, model_path, unit_count(cfg, data.lengths())
    )  # exit 2 before weights load
    torch.manual_seed(cfg.seed)  # new token rows and LoRA weights are drawn at random
    model, _ = load_model(cfg.model_copy(update={"model": model_path}), tokenizer, student, attn)
    flop_model = (param_count(model), model.config.num_hidden_layers, model.config.hidden_size)
    policy_start = (
        save_policy_start(model, tokenizer, out / "policy-start") if cfg.objective == "on_policy" else None
    )
    schedule = make_schedule(cfg, data, accelerator.num_processes)
    say(accelerator, describe(cfg, data, schedule, accelerator.num_processes, attn))
    model, optimizer, scheduler = prepare(accelerator, model, cfg, schedule)
    # a phase's inputs (the phases it reads) too: a checkpoint of a phase whose init changed never resumes
    fingerprint = f"{cfg_hash}:{':'.join(inputs.values())}:{accelerator.num_processes}"
    start = resume(accelerator, out, fingerprint, force, schedule.total_steps)
    policy = start_policy(cfg, data, tokenizer, policy_start, model, accelerator) if policy_start else None
    if cfg.tensorboard:
        accelerator.init_trackers("tensorboard")
    return TrainRun(
        cfg=cfg,
        out=out,
        accelerator=accelerator,
        model=model,
        lm_head=accelerator.unwrap_model(model).get_output_embeddings(),
        optimizer=optimizer,
        scheduler=scheduler,
        tokenizer=tokenizer,
        data=data,
        schedule=schedule,
        loss_fn=objective_loss(cfg),
        vocab=vocab,
        policy=policy,
        attn=attn,
        fingerprint=fingerprint,
        start=start,
        flop_model=flop_model,
        peak=peak_flops(),
        manifest=manifest,
        began=time.time(),
    )


def loop(run: TrainRun) -> list[dict[str, Any]]:
    """The optimizer steps from run.start to the end: batches, one train_step, a metrics row, a checkpoint
    every save_every steps. Returns this process's metrics rows."""
    acc, cfg, sched = run.accelerator, run.cfg, run.schedule
    rows: list[dict[str, Any]] = []
    epochs: dict[int, list[list[int]]] = {}  # the current epoch's shuffled micro-batches
    run.model.train()
    with step_bar(run) as show:
        for step in range(run.start, sched.total_steps):
            t0 = time.perf_counter()
            batches = run.policy.batches(step) if run.policy else step_batches(run, step, epochs)
            stats = run.step(
                [{k: v.to(acc.device) if hasattr(v, "to") else v for k, v in b.items()} for b in batches]
            )
            check_finite(stats, step + 1, cfg)  # before NaN weights reach on_policy's engine
            if run.policy:  # the engine samples the next step from the updated weights
                run.policy.student.push(acc.unwrap_model(run.model))
                stats["terms"].update(run.policy.last)
            row = metrics_row(step + 1, sched.epoch_len, stats, time.perf_counter() - t0)
            add_mfu(run, row, stats)
            rows.append(row)
            log_row(run, row, show)
            if (step + 1) % cfg.save_every == 0 and step + 1 < sched.total_steps:
                state = {
                    "fingerprint": run.fingerprint,
                    "epoch": step // sched.epoch_len,
                    "micro_batches_done": (step + 1) * sched.accum,
                }
                save_checkpoint(acc, run.out, step + 1, state, cfg.keep_checkpoints)
    return rows


def check_finite(stats: dict[str, Any], step: int, cfg: TrainConfig) -> None:
    """Stop at the first non-finite loss: the optimizer has stepped on its NaN gradients, so every later step and
    the final weights would be NaN (the last checkpoint and no manifest stay on disk)."""
    if not math.isfinite(stats["loss"]):
        raise DistillError(
            f"train: step {step}: the {cfg.objective} loss is {stats['loss']} (terms {stats['terms']}); "
            "stopped before writing anything past the last checkpoint"
        )


def summarize(run: TrainRun, rows: list[dict[str, Any]]):
    """final/, loss.png and the manifest (written last, by rank 0) from metrics.jsonl and this run's rows."""
    acc, out = run.accelerator, run.out
    base = resolve_model(run.cfg.model)  # the model trained from: its own config JSON goes to final/base/
    save_final(acc, run.model, run.tokenizer, out / "final", use_bf16(run.cfg), base)
    if run.cfg.tensorboard:
        acc.end_training()
    if not acc.is_main_process:
        acc.wait_for_everyone()
        return read_manifest(out)
    logged = read_metrics(out / "metrics.jsonl")
    plot_loss(logged, out / "loss.png")
    manifest = run.manifest
    manifest.rows_in, manifest.rows_out = run.data.stats["rows_in"], len(run.data)
    manifest.dropped = dict(run.data.stats["dropped"])
    manifest.outputs = checkpoint_files(out / "final")
    manifest.metrics = {**run_summary(logged, rows), **run_facts(run)}
    manifest.config = run.cfg.model_dump(mode="json")  # what config_hash pins; push's card shows these values
    if "mfu" in manifest.metrics:
        say(
            acc,
            f"MFU {manifest.metrics['mfu']:.1%} (6N + attention FLOPs vs {run.peak / 1e12:.0f} TFLOP/s)",
        )
    finish_manifest(out, manifest)
    acc.wait_for_everyone()
    return manifest


# ---------------------------------------------------------------- setup's parts


def check_launch(accelerator, cfg: TrainConfig, student: str) -> None:
    """LoRA cannot be merged from shards; one process on a multi-GPU machine is allowed but pointed out."""
    import torch

    if cfg.lora is not None and is_sharded(accelerator):
        raise DistillError(
            "train.lora cannot be merged from ZeRO-3/FSDP shards; train LoRA with single_gpu.yaml "
            "or ddp.yaml (a LoRA student fits one GPU)"
        )
    if accelerator.num_processes == 1 and torch.cuda.device_count() > 1:
        launch = cfg.accelerate_config or get_student(student).accelerate_config
        say(
            accelerator,
            f"{torch.cuda.device_count()} GPUs visible but one process: use all of them with "
            f"`accelerate launch --config_file {launch} -m distill.train.loop RECIPE`",
        )


def unit_count(cfg: TrainConfig, lengths) -> int:
    """The units the data splits into over ranks: on_policy's prompts, else packed bins or samples."""
    if cfg.objective == "on_policy":
        return len(lengths)
    return len(training_units(lengths, cfg.max_length, cfg.packing))


def check_zero3_init(accelerator, model_path: str, tokenizer, student: str) -> None:
    """ZeRO-3 partitions the weights while they load (Accelerate hands transformers the DeepSpeed config whatever
    zero3_init_flag says), before release_files.prepare_model unties lm_head (Qwen-1.5B) or adds embedding rows
    (other families): those edits would write into empty partitions (measured: an lm_head of numel 0 that
    DeepSpeed then cannot fetch), so that combination stops here, before any weights load."""
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None or plugin.zero_stage != 3:
        return
    from transformers import AutoConfig

    from distill.release import config_changes

    config = AutoConfig.from_pretrained(model_path)
    edits = []
    if config_changes(student).get("tie_word_embeddings") is False and config.tie_word_embeddings:
        edits.append("unties lm_head from the embeddings")
    if len(tokenizer) > config.vocab_size:
        edits.append(f"adds {len(tokenizer) - config.vocab_size} embedding rows")
    if edits:
        raise DistillError(
            f"student {student}: its release {' and '.join(edits)}, which cannot be done to weights ZeRO-3 "
            "partitions while they load; train it with pipelines/accelerate/fsdp2.yaml or ddp.yaml"
        )


def same_vocabulary(cfg: TrainConfig, tokenizer, student: str) -> tuple[dict[str, str], KDRows | None]:
    """Logit objectives: the teacher's ids must mean the same tokens in the student (distill.vocab_identity);
    returns both table hashes and, for kd, how its rows are read (both EOS ids for the final position's mapping,
    and kd.target)."""
    if cfg.objective == "sft":
        return {}, None
    from distill.models import load_tokenizer
    from distill.vocab_identity import check_same_vocab

    try:
        teacher_tok = load_tokenizer(resolve_model(cfg.teacher))
    except OSError as err:
        raise DistillError(f"train.teacher '{cfg.teacher}': cannot load its tokenizer ({err})") from None
    hashes = check_same_vocab(teacher_tok, tokenizer, cfg.teacher, f"{student} release ({cfg.model})")
    if cfg.objective == "on_policy":
        from distill.train.on_policy import check_scores

        check_scores(teacher_tok, tokenizer, cfg.teacher, f"{student} release ({cfg.model})")
    if cfg.objective != "kd":
        return hashes, None
    return hashes, KDRows(teacher_tok.eos_token_id, tokenizer.eos_token_id, cfg.kd.target)


def objective_loss(cfg: TrainConfig) -> LossFn:
    """The LossFn of train.objective (on_policy's batches are fresh student samples; see on_policy.py)."""
    if cfg.objective == "kd":
        from distill.train.kd import KDSpec

        k = cfg.kd
        return kd_loss(KDSpec(k.alpha, k.temperature, k.divergence, k.beta))
    if cfg.objective == "on_policy":
        from distill.train.on_policy import mixed_loss

        return mixed_loss(cfg.on_policy.sft_mix, cfg.on_policy.discount)
    return forward_ce


def save_policy_start(model, tokenizer, folder: Path) -> Path:
    from distill.train.on_policy import save_policy_start as save

    return save(model, tokenizer, folder)


def start_policy(cfg: TrainConfig, data: TokenData, tokenizer, folder: Path, model, accelerator):
    """on_policy: the student's engine from the starting weights (then the resumed ones, pushed in place) and
    the teacher's scorer."""
    from distill.engines.backends import ENGINE_LOG
    from distill.train import on_policy

    if accelerator.num_processes > 1:
        raise DistillError(
            "train.objective=on_policy runs in one process (one student engine); launch it without DDP"
        )
    prompts, rows = on_policy.read_prompts(data, tokenizer)
    log = folder.parent.parent / ENGINE_LOG  # the run dir's engine.log (folder: RUN/train/policy-start)
    student = on_policy.Student(on_policy.start_engine(cfg.on_policy.engine, str(folder), log))
    if cfg.on_policy.teacher_url:
        scorer = on_policy.ServerScorer(cfg.on_policy.teacher_url, cfg.teacher)
    else:
        scorer = on_policy.EngineScorer(
            on_policy.start_engine(cfg.on_policy.engine, resolve_model(cfg.teacher), log)
        )
    student.push(accelerator.unwrap_model(model))  # a resumed run's weights (a no-op copy at step 0)
    say(accelerator, f"on_policy: {len(prompts)} prompts, student engine on {folder}, teacher {cfg.teacher}")
    return on_policy.Policy(prompts, rows, student, scorer, cfg.on_policy, cfg.seed, data)


def make_schedule(cfg: TrainConfig, data: TokenData, world: int) -> Schedule:
    if cfg.objective == "on_policy":  # a step = prompts_per_step prompts, one micro-batch each
        per = cfg.on_policy.prompts_per_step
        epoch_len = max(1, math.ceil(len(data) / per))
        total = cfg.max_steps or max(1, math.ceil((cfg.epochs or 1) * epoch_len))
        return Schedule([[i] for i in range(len(data))], per, epoch_len, total, 1.0)
    lengths = data.lengths()
    units = training_units(lengths, cfg.max_length, cfg.packing)
    accum = grad_accum_for(cfg, units, world)
    epoch_len = steps_per_epoch(math.ceil(len(units) / cfg.micro_batch_size), world, accum)
    total_steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * epoch_len))
    first_epoch = epoch_micro_batches(units, cfg.micro_batch_size, cfg.seed, 0)
    utilisation = token_utilisation(
        lengths, units if cfg.packing else first_epoch, cfg.max_length, cfg.packing
    )
    return Schedule(units, accum, epoch_len, total_steps, utilisation)


def describe(cfg: TrainConfig, data: TokenData, schedule: Schedule, world: int, attn: str) -> str:
    s = schedule
    return (
        f"{len(data)} samples, {len(s.units)} {'bins' if cfg.packing else 'samples'}, token "
        f"utilisation {s.utilisation:.3f}, {world} process(es) x micro {cfg.micro_batch_size} x accum "
        f"{s.accum}, {s.total_steps} steps ({s.epoch_len}/epoch), attn {attn}, "
        f"{'bf16' if use_bf16(cfg) else 'fp32'}"
    )


def prepare(accelerator, model, cfg: TrainConfig, schedule: Schedule):
    """Optimizer and scheduler, then Accelerate's wrapping of all three."""
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, schedule.total_steps)
    accelerator.gradient_accumulation_steps = schedule.accum
    if accelerator.state.deepspeed_plugin is not None:  # no dataloader is prepared: DeepSpeed needs these
        accelerator.state.deepspeed_plugin.deepspeed_config.update(
            {
                "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
                "gradient_accumulation_steps": schedule.accum,
                "gradient_clipping": cfg.max_grad_norm,
            }
        )
    return accelerator.prepare(model, optimizer, scheduler)


def resume(accelerator, out: Path, fingerprint: str, force: bool, total_steps: int) -> int:
    """Load this run's newest checkpoint (if any) and cut metrics.jsonl back to it; returns the step to start at."""
    start = 0
    ckpt = resume_point(out, fingerprint, force, accelerator)
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        start = json.loads((ckpt / "state.json").read_text())["step"]
        say(accelerator, f"resumed from {ckpt} (step {start} of {total_steps})")
    metrics_path = out / "metrics.jsonl"
    history = read_metrics(metrics_path, upto=start) if start else []
    if accelerator.is_main_process:
        atomic_write_text(metrics_path, "".join(json.dumps(m) + "\n" for m in history))
    return start


# ---------------------------------------------------------------- loop's parts


def step_batches(run: TrainRun, step: int, epochs: dict[int, list[list[int]]]) -> list[dict[str, Any]]:
    """This rank's micro-batches of `step`, on its device; `epochs` caches the current epoch's shuffle."""
    cfg, acc = run.cfg, run.accelerator
    epoch, in_epoch = divmod(step, run.schedule.epoch_len)
    if epoch not in epochs:
        epochs.clear()
        epochs[epoch] = epoch_micro_batches(run.schedule.units, cfg.micro_batch_size, cfg.seed, epoch)
    picks = step_micro_batches(
        epochs[epoch], in_epoch, acc.num_processes, acc.process_index, run.schedule.accum
    )
    return [batch_for(run.data, p, cfg.packing, run.tokenizer.pad_token_id, acc.device) for p in picks]


def add_mfu(run: TrainRun, row: dict[str, Any], stats: dict[str, Any]) -> None:
    """row["mfu"] on a GPU with a known peak: model FLOPs of the step / step time / (peak x processes)."""
    if run.peak:
        flops = model_flops(*run.flop_model, stats["tokens"], stats["sq_lens"])
        row["mfu"] = round(flops / row["step_s"] / (run.peak * run.accelerator.num_processes), 4)


@contextlib.contextmanager
def step_bar(run: TrainRun) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Rank 0's progress bar; yields show(row), a no-op on the other ranks."""
    if not run.accelerator.is_main_process:
        yield lambda row: None
        return
    with progress() as bar:
        task = bar.add_task("train", total=run.schedule.total_steps, completed=run.start, info="")
        yield lambda row: bar.update(task, completed=row["step"], info=step_info(row))


def step_info(row: dict[str, Any]) -> str:
    info = f"loss {row['loss']:.4f} lr {row['lr']:.2e} {row['tokens_per_s']:,.0f} tok/s"
    return info + (f" MFU {row['mfu']:.1%}" if "mfu" in row else "")


def log_row(run: TrainRun, row: dict[str, Any], show: Callable[[dict[str, Any]], None]) -> None:
    """metrics.jsonl gets every step (rank 0); the bar and TensorBoard every log_every steps."""
    step, every = row["step"], run.cfg.log_every
    if run.accelerator.is_main_process:
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    if step % every == 0 or step == run.schedule.total_steps:
        show(row)
    if run.cfg.tensorboard and step % every == 0:
        run.accelerator.log({k: v for k, v in row.items() if isinstance(v, (int, float))}, step=step)


# ---------------------------------------------------------------- summarize's parts


def run_facts(run: TrainRun) -> dict[str, Any]:
    """The manifest's facts of how this run trained (after the loss curve numbers of run_summary)."""
    cfg, s, data = run.cfg, run.schedule, run.data
    return {
        "objective": cfg.objective,
        **objective_facts(cfg, data),
        **run.vocab,
        "steps": s.total_steps,
        "resumed_from_step": run.start,
        "epochs": round(s.total_steps / s.epoch_len, 4),
        "token_utilisation": round(s.utilisation, 4),
        "truncated": data.stats["truncated"],
        "samples": len(data),
        "bins": len(s.units) if cfg.packing else None,
        "grad_accum": s.accum,
        "micro_batch_size": cfg.micro_batch_size,
        "world_size": run.accelerator.num_processes,
        "attn_implementation": run.attn,
        "dtype": "bfloat16" if use_bf16(cfg) else "float32",
        "lora": cfg.lora is not None,
        "wall_s": round(time.time() - run.began, 1),
    }


def objective_facts(cfg: TrainConfig, data: TokenData) -> dict[str, Any]:
    """Provenance of a logit objective for the manifest and the model card: teacher, K, α, τ, D."""
    if cfg.objective == "sft":
        return {}
    facts: dict[str, Any] = {"teacher": cfg.teacher}
    if cfg.objective == "kd":
        k = cfg.kd
        facts.update(kd_k=data.stats.get("k"), kd_alpha=k.alpha, kd_temperature=k.temperature)
        facts.update(kd_divergence=k.divergence, kd_beta=k.beta if k.divergence == "jsd" else None)
    return facts


def main(argv: list[str] | None = None) -> None:
    """`accelerate launch -m distill.train.loop RECIPE [--set k=v] [--data DIR] [--out DIR] [--force]`."""
    parser = argparse.ArgumentParser(prog="python -m distill.train.loop", description=main.__doc__)
    parser.add_argument("recipe", type=Path, help="YAML recipe, e.g. pipelines/r1-distill-qwen-7b.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override: train.lr=1e-5")
    parser.add_argument("--data", type=Path, default=None, help="curate stage dir (default: RUN_DIR/curate)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: RUN_DIR/train)")
    parser.add_argument("--force", action="store_true", help="rerun even if the manifest matches")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, args.sets)
        run_dir = recipe.run_path()
        train(recipe, args.data or run_dir / "curate", args.out or run_dir / "train", args.force)
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
