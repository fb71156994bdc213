"""Peak memory per GPU of a recipe's train and generate runs against the named GPU: `distill plan` prints it,
`distill train` checks it before any weights load.

Model states per rank, P parameters over N ranks, in bytes per parameter (bf16 compute over fp32 master weights,
AdamW; the train loop loads fp32 weights and autocasts, FSDP2 / ZeRO-3 cast per unit):
  none / ddp     4 P fp32 weights + 2 P bf16 autocast copies (cached until the forward ends) + 4 P fp32 grads
                 (+ 4 P DDP reducer buckets) + 8 P Adam m, v
  fsdp2          16 P / N (fp32 weights, grads, Adam, sharded) + the unsharded bf16 weights and grads of the units
                 in flight: 4 B x (2 decoder layers + the root unit: embeddings, lm_head, final norm)
  zero3          18 P / N (bf16 + fp32 weights, fp32 grads, Adam) + 4 B x the largest layer: DeepSpeed's own
                 estimate_zero3_model_states_mem_needs (deepspeed/runtime/zero/stage3.py); fp32 (CPU) 16 P / N, as
                 stage3.py keeps no second fp32 copy of weights already in fp32. Beside the states, the reduce
                 bucket stage3.py allocates on the device for gradients (torch.empty(reduce_bucket_size): 5e8
                 elements by default, which neither accelerate's zero3 configs nor the estimate set) and the copy
                 its reduce-scatter makes of the bucketed gradients (min(P, 5e8) elements), x c bytes each
  zero3 offload  4 B x the largest layer + the reduce bucket on the GPU; 18 P x 1.5 / nodes of host memory (same
                 source)
  fp32 (CPU)     the none/ddp row without the bf16 copies
Activations of a micro-batch of b bins x s tokens (T = b s), L layers, hidden h, kv width k (kv heads x head dim),
MLP width i; e = 9 h + 3 k + 4 i elements per token and layer are kept for the backward (the two norms' inputs and
outputs, q and k before and after RoPE, v, the attention output, gate, up and their product; flash / sdpa keep no
s x s scores):
  checkpointing off  L T e x c          (c: compute bytes, 2 bf16 / 4 fp32)
  checkpointing on   L T h x r + T e x c  (each layer's input, r: 4 when the residual stream is fp32 as under
                                          autocast of fp32 weights, else c; plus one layer recomputed)
Loss head (distill.train.loss: one checkpointed chunk of n = min(loss_chunk_tokens, T) rows alive, recomputed in
the backward): n V x 12 (the fp32 log-softmax it keeps, the gradient arriving at it and the one it returns; + 2 for
the bf16 logits' gradient under bf16) + 2 T h c (the gathered trained positions and their gradient).
Generate (vLLM): weights params x weight bytes / (tp x pp) per GPU; KV per token per GPU = ceil(layers / pp) x 2 x
max(1, kv_heads / tp) x head_dim x 2 bytes (MLA: kv_lora_rank + qk_rope_head_dim per layer, on every TP rank);
the recipe's concurrency needs it for concurrency x (prompt + max_tokens) tokens.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distill.errors import DistillError

GiB = 2**30

HF = "https://huggingface.co/{}/blob/main/config.json"
# litgpt transcribes the same config.json fields, each under its link (Lightning-AI/litgpt litgpt/config.py)


@dataclass(frozen=True)
class Shape:
    params: int  # all parameters (what a checkpoint stores)
    layers: int
    width: int  # hidden size
    vocab: int
    tied: bool  # input embedding shared with lm_head
    heads: int = 0
    kv_heads: int = 0
    intermediate: int = 0  # MLP width
    head_dim: int = 0  # 0: width / heads
    mla_cache: int = 0  # MLA: cached elements per token and layer (kv_lora_rank + qk_rope_head_dim)
    weight_bytes: float = 2.0  # as vLLM serves the checkpoint (bf16; fp8 checkpoints 1)
    qkv_bias: bool = True  # Qwen2 has q, k, v biases; Llama none
    source: str = ""

    def matmul_params(self) -> int:
        """Parameters doing matmuls per token: an untied input embedding is a lookup (as train's MFU counts)."""
        return self.params - (0 if self.tied else self.vocab * self.width)

    def hd(self) -> int:
        return self.head_dim or self.width // self.heads

    def layer_params(self) -> int:
        """One decoder layer: attention (q, k, v, o), the gated MLP, two norms."""
        q, kv, h = self.heads * self.hd(), self.kv_heads * self.hd(), self.width
        bias = q + 2 * kv if self.qkv_bias else 0
        return 2 * h * q + 2 * h * kv + bias + 3 * h * self.intermediate + 2 * h

    def largest_layer(self) -> int:
        """Largest single module (DeepSpeed's largest_layer_params): the embedding matrix, or an MLP projection."""
        return max(self.vocab * self.width, self.width * self.intermediate)


def _arch(params, layers, width, vocab, tied, heads, kv, inter, hub):
    bias = hub.startswith("Qwen/")  # Qwen2 biases q, k, v; Llama and SmolLM2 do not
    return Shape(params, layers, width, vocab, tied, heads, kv, inter, qkv_bias=bias, source=HF.format(hub))


# The students' architectures from their base model's published config.json (params: the safetensors totals).
SHAPES: dict[str, Shape] = {
    "qwen-1.5b": _arch(1_543_714_304, 28, 1536, 151936, True, 12, 2, 8960, "Qwen/Qwen2.5-Math-1.5B"),
    "qwen-7b": _arch(7_615_616_512, 28, 3584, 152064, False, 28, 4, 18944, "Qwen/Qwen2.5-Math-7B"),
    "llama-8b": _arch(8_030_261_248, 32, 4096, 128256, False, 32, 8, 14336, "meta-llama/Llama-3.1-8B"),
    "qwen-14b": _arch(14_770_033_664, 48, 5120, 152064, False, 40, 8, 13824, "Qwen/Qwen2.5-14B"),
    "qwen-32b": _arch(32_763_876_352, 64, 5120, 152064, False, 40, 8, 27648, "Qwen/Qwen2.5-32B"),
    "llama-70b": _arch(
        70_553_706_496, 80, 8192, 128256, False, 64, 8, 28672, "meta-llama/Llama-3.3-70B-Instruct"
    ),
    "smollm2-135m": _arch(
        134_515_008, 30, 576, 49152, True, 9, 3, 1536, "HuggingFaceTB/SmolLM2-135M-Instruct"
    ),
    # distill.models.PRUNED, as built: every other layer of SmolLM2-135M
    "smollm2-pruned": replace(
        _arch(81_413_568, 15, 576, 49152, True, 9, 3, 1536, "HuggingFaceTB/SmolLM2-135M-Instruct"),
        source="distill.models.PRUNED",
    ),
}

# Teachers that generate serves. DeepSeek-R1: 61 layers, MLA (kv_lora_rank 512 + qk_rope_head_dim 64 cached per
# token and layer), 671B parameters stored in fp8 (the model card), hidden 7168, vocab 129280.
TEACHERS: dict[str, Shape] = {
    "deepseek-ai/DeepSeek-R1": Shape(
        671_000_000_000,
        61,
        7168,
        129280,
        False,
        heads=128,
        mla_cache=576,
        weight_bytes=1.0,
        source=HF.format("deepseek-ai/DeepSeek-R1"),
    ),
}

# Memory per GPU in GiB as NVIDIA sells it (H100/H800 SXM 80 GB, H200 141 GB, A100/A800 80 GB, L40S 48 GB,
# B200 180 GB); plan.overhead_gib of it goes to the CUDA context, NCCL buffers and allocator fragmentation.
GPU_MEMORY_GIB = {"H200": 141, "H100": 80, "H800": 80, "A100": 80, "A800": 80, "L40S": 48, "B200": 180}


def as_trained(shape: Shape, student: str) -> Shape:
    """The model train holds: the release config's changes are applied before the first step, and Qwen-1.5B's
    unties lm_head (a second vocab x width matrix: +233M parameters, 15 % of the 1.5B's)."""
    from distill.release import config_changes

    if shape.tied and config_changes(student).get("tie_word_embeddings") is False:
        return replace(shape, tied=False, params=shape.params + shape.vocab * shape.width)
    return shape


def shape_from_config(config: dict[str, Any], source: str) -> Shape:
    """A Qwen2 / Llama config.json as a Shape (parameters counted from the architecture)."""
    h, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
    heads = config["num_attention_heads"]
    shape = Shape(
        0,
        layers,
        h,
        vocab,
        bool(config.get("tie_word_embeddings", False)),
        heads,
        config.get("num_key_value_heads") or heads,
        config["intermediate_size"],
        config.get("head_dim") or h // heads,
        qkv_bias=config.get("model_type") == "qwen2" or bool(config.get("attention_bias", False)),
        source=source,
    )
    embeddings = vocab * h * (1 if shape.tied else 2)
    return replace(shape, params=embeddings + layers * shape.layer_params() + h)


def local_shape(model_path: str) -> Shape | None:
    """The shape of a local checkpoint folder from its config.json (no weights read); None for a hub id."""
    import json

    config = Path(model_path) / "config.json"
    if not config.is_file():
        return None
    return shape_from_config(json.loads(config.read_text()), str(config))


# ---------------------------------------------------------------- how a run is launched


@dataclass(frozen=True)
class Launch:
    sharding: str  # none | ddp | fsdp2 | fsdp2-offload | zero3 | zero3-offload
    ranks: int
    nodes: int
    bf16: bool
    source: str  # where this was read (an accelerate config, or the running Accelerator)


def read_launch(path: str | Path) -> Launch:
    """The sharding, ranks and precision an accelerate config file asks for."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise DistillError(f"train.accelerate_config: {file} not found")
    cfg = yaml.safe_load(file.read_text()) or {}
    kind = str(cfg.get("distributed_type", "NO"))
    ranks, nodes = int(cfg.get("num_processes", 1)), int(cfg.get("num_machines", 1))
    bf16 = cfg.get("mixed_precision", "no") == "bf16"
    if kind == "DEEPSPEED":
        ds = cfg.get("deepspeed_config", {})
        if int(ds.get("zero_stage", 0)) != 3:
            raise DistillError(
                f"{file}: zero_stage {ds.get('zero_stage')}: plan knows ZeRO-3 only (or use FSDP2)"
            )
        offload = "cpu" in (ds.get("offload_optimizer_device"), ds.get("offload_param_device"))
        return Launch("zero3-offload" if offload else "zero3", ranks, nodes, bf16, str(file))
    if kind == "FSDP":
        offload = bool(cfg.get("fsdp_config", {}).get("fsdp_offload_params", False))
        return Launch("fsdp2-offload" if offload else "fsdp2", ranks, nodes, bf16, str(file))
    return Launch("ddp" if ranks > 1 else "none", ranks, nodes, bf16, str(file))


def running_launch(accelerator) -> Launch:
    """The sharding the running Accelerator applies (what `accelerate launch` was given)."""
    from accelerate import DistributedType

    kind, ranks = accelerator.distributed_type, accelerator.num_processes
    nodes = max(1, ranks // int(os.environ.get("LOCAL_WORLD_SIZE", ranks)))
    bf16 = accelerator.mixed_precision == "bf16"
    sharding = "ddp" if ranks > 1 else "none"
    if kind == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]
        devices = (ds.get("offload_optimizer", {}).get("device"), ds.get("offload_param", {}).get("device"))
        sharding = "zero3-offload" if "cpu" in devices else "zero3"
    elif kind == DistributedType.FSDP:
        offload = bool(getattr(accelerator.state.fsdp_plugin.cpu_offload, "offload_params", False))
        sharding = "fsdp2-offload" if offload else "fsdp2"
    return Launch(sharding, ranks, nodes, bf16, f"accelerate ({kind.value}, {ranks} processes)")


# ---------------------------------------------------------------- train


@dataclass(frozen=True)
class TrainShape:
    """What the activations depend on: tokens per micro-batch and the loss head's chunk."""

    max_length: int
    micro_batch: int
    checkpointing: bool
    chunk_tokens: int


def model_states(s: Shape, launch: Launch) -> dict[str, float]:
    """Bytes per rank of weights, gradients, optimizer states and sharding buffers (module docstring)."""
    p, n = s.params, launch.ranks
    if launch.sharding in ("none", "ddp"):
        copies = 2 * p if launch.bf16 else 0  # autocast's bf16 weight cache
        buckets = 4 * p if launch.sharding == "ddp" else 0
        return {"parameters": 4 * p + copies, "gradients": 4 * p + buckets, "optimizer": 8 * p, "gathered": 0}
    if launch.sharding.startswith("fsdp2"):
        root = s.vocab * s.width * (1 if s.tied else 2) + s.width
        on_gpu = 0 if launch.sharding.endswith("offload") else 1
        gathered = 4 * (2 * s.layer_params() + root)
        return {"parameters": on_gpu * 4 * p / n, "gradients": on_gpu * 4 * p / n, "optimizer": on_gpu * 8 * p / n,
                "gathered": gathered}  # fmt: skip
    on_gpu, weights = (0 if launch.sharding == "zero3-offload" else 1), (6 if launch.bf16 else 4)
    return {"parameters": on_gpu * weights * p / n, "gradients": on_gpu * 4 * p / n,
            "optimizer": on_gpu * 8 * p / n, "gathered": 4 * s.largest_layer()}  # fmt: skip


# elements: DeepSpeed's reduce_bucket_size default (deepspeed/runtime/zero/config.py)
REDUCE_BUCKET = 500_000_000


def buffers(s: Shape, launch: Launch) -> float:
    """Device bytes outside the model states: ZeRO-3's gradient reduce bucket, REDUCE_BUCKET elements in the
    compute dtype (stage3.py: `torch.empty(self.reduce_bucket_size, dtype=dtype, device=...)`), plus the copy its
    reduce-scatter makes of the bucketed gradients (comm/coalesced_collectives.py reduce_scatter_coalesced:
    `torch.cat` of every rank's interleaved partitions), at most P elements."""
    if not launch.sharding.startswith("zero3"):
        return 0.0
    return (REDUCE_BUCKET + min(s.params, REDUCE_BUCKET)) * (2 if launch.bf16 else 4)


def host_bytes(s: Shape, launch: Launch) -> float:
    """Host memory per node the offloaded states need (DeepSpeed's zero_init estimate: 18 P x 1.5 / nodes)."""
    if launch.sharding == "zero3-offload":
        return 18 * s.params * 1.5 / launch.nodes
    return 16 * s.params / launch.nodes if launch.sharding == "fsdp2-offload" else 0.0


def activations(s: Shape, t: TrainShape, launch: Launch, checkpointing: bool) -> float:
    c = 2 if launch.bf16 else 4
    # fp32 weights under autocast keep the residual stream (each checkpointed layer input) in fp32
    r = 4 if launch.sharding in ("none", "ddp") else c
    tokens = t.max_length * t.micro_batch
    per_layer = 9 * s.width + 3 * s.kv_heads * s.hd() + 4 * s.intermediate
    if not checkpointing:
        return s.layers * tokens * per_layer * c
    return s.layers * tokens * s.width * r + tokens * per_layer * c


def loss_chunks(s: Shape, t: TrainShape, launch: Launch) -> float:
    c = 2 if launch.bf16 else 4
    tokens = t.max_length * t.micro_batch
    return min(t.chunk_tokens, tokens) * s.vocab * (12 + (2 if launch.bf16 else 0)) + 2 * tokens * s.width * c


def train_parts(s: Shape, t: TrainShape, launch: Launch) -> dict[str, float]:
    """Bytes per rank, by part; `activations` follows t.checkpointing, the other setting is alongside."""
    parts = model_states(s, launch)
    if launch.sharding.startswith("zero3"):
        parts["reduce bucket"] = buffers(s, launch)
    parts["activations"] = activations(s, t, launch, t.checkpointing)
    parts["activations, checkpointing " + ("off" if t.checkpointing else "on")] = activations(
        s, t, launch, not t.checkpointing
    )
    parts["loss chunks"] = loss_chunks(s, t, launch)
    return parts


def train_total(parts: dict[str, float]) -> float:
    return sum(v for k, v in parts.items() if not k.startswith("activations, "))


def fixes(s: Shape, t: TrainShape, launch: Launch, capacity: float, accelerate_config: str) -> list[str]:
    """Each single change that brings the plan under `capacity` bytes, as the setting to write."""

    def fits(t2: TrainShape = t, launch2: Launch = launch) -> bool:
        return train_total(train_parts(s, t2, launch2)) <= capacity

    out = []
    if not t.checkpointing and fits(replace(t, checkpointing=True)):
        out.append("train.gradient_checkpointing=true")
    if t.micro_batch > 1 and fits(replace(t, micro_batch=1)):
        out.append("train.micro_batch_size=1")
    if launch.sharding in ("none", "ddp"):
        sharded = replace(launch, sharding="zero3", ranks=max(launch.ranks, 8))
        if fits(launch2=sharded):
            out.append(
                f"a sharded accelerate config ({max(launch.ranks, 8)} GPUs, pipelines/accelerate/zero3.yaml)"
            )
    else:
        more = next((n for n in (2**k for k in range(1, 11)) if n > launch.ranks and fits(launch2=replace(launch, ranks=n))), None)  # fmt: skip
        if more:
            out.append(f"{more} GPUs (num_processes in {accelerate_config})")
    if not launch.sharding.endswith("offload") and fits(launch2=replace(launch, sharding="zero3-offload")):
        out.append("offload (pipelines/accelerate/zero3_offload.yaml)")
    shorter = next((n for n in (t.max_length // 2**k for k in range(1, 6)) if n >= 1024 and fits(replace(t, max_length=n))), None)  # fmt: skip
    if shorter:
        out.append(f"train.max_length={shorter}")
    return out


# ---------------------------------------------------------------- generate


def kv_bytes_per_token(s: Shape, tp: int, pp: int) -> float:
    """KV cache bytes one token takes on one GPU (bf16 cache)."""
    layers = math.ceil(s.layers / pp)
    if s.mla_cache:  # the latent is not split by heads: every TP rank holds all of it
        return layers * s.mla_cache * 2
    return layers * 2 * max(1.0, s.kv_heads / tp) * s.hd() * 2


def generate_parts(s: Shape, tp: int, pp: int, seq_tokens: float, concurrency: int) -> dict[str, float]:
    """Bytes per GPU of a vLLM engine: the weights and the KV cache `concurrency` sequences of `seq_tokens` need."""
    per_seq = kv_bytes_per_token(s, tp, pp) * seq_tokens
    return {"weights": s.params * s.weight_bytes / (tp * pp), "kv per sequence": per_seq,
            "kv cache": per_seq * concurrency}  # fmt: skip


# ---------------------------------------------------------------- the check `distill train` runs


def device_capacity(ranks: int) -> tuple[float, str]:
    """Bytes one rank may use: the GPU's memory, or on CPU the host's total memory shared by its ranks."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return float(props.total_memory), props.name
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ranks))
    return host_memory() / local, f"CPU ({local} rank(s) sharing the host memory)"


def host_memory() -> float:
    with open("/proc/meminfo") as f:
        return float(next(line.split()[1] for line in f if line.startswith("MemTotal:"))) * 1024


def check_train(accelerator, cfg, student: str, model_path: str, bins: int) -> None:
    """Before weights load: exit 2 (DistillError) when the run cannot fit or has fewer bins (the data's units of
    training: packed bins, samples, or on_policy's prompts) than ranks; a line on the planned peak otherwise, a
    warning within 10 % of the device's memory."""
    from distill.students import get_student

    launch = running_launch(accelerator)
    if launch.ranks > bins:
        raise DistillError(
            f"train: {launch.ranks} ranks but the data makes {bins} {'bins' if cfg.packing else 'samples'} of "
            f"train.max_length={cfg.max_length}: launch at most {bins} processes (num_processes)"
        )
    shape = local_shape(model_path) or SHAPES.get(student)
    if shape is None:
        return
    shape = as_trained(shape, student)
    t = TrainShape(cfg.max_length, cfg.micro_batch_size, cfg.gradient_checkpointing, cfg.loss_chunk_tokens)
    capacity, device = device_capacity(launch.ranks)
    total = train_total(train_parts(shape, t, launch))
    config = cfg.accelerate_config or get_student(student).accelerate_config
    host = host_bytes(shape, launch)
    if host > host_memory():
        raise DistillError(
            f"train: {launch.sharding} needs {host / GiB:.0f} GiB of host memory per node, this host has "
            f"{host_memory() / GiB:.0f}: more nodes (num_machines in {config}) or pipelines/accelerate/zero3.yaml"
        )
    plan = f"planned peak {total / GiB:.1f} GiB per rank ({launch.sharding}, {launch.ranks} rank(s)) of {capacity / GiB:.1f} GiB on {device}"  # fmt: skip
    if total > capacity:
        options = fixes(shape, t, launch, capacity, config)
        raise DistillError(f"train: {plan}: does not fit; change " + (" or ".join(options) or "the model"))
    if accelerator.is_main_process:
        warn = " (within 10 %: watch for out-of-memory)" if total > 0.9 * capacity else ""
        print(f"train: memory: {plan}{warn}", file=sys.stderr, flush=True)
