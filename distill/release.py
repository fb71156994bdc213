"""The R1-Distill release spec as data: R1 token strings and ids, renames, config/generation/tokenizer facts, templates.

The only module of the package that spells an R1 token (the .jinja templates aside); patch, train, generate, curate,
graders and eval read these names. `distill/release_files.py` builds the release files from this spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT, THINK, END_THINK = "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"
EOT = "<|EOT|>"  # DeepSeek's name for Qwen's id 151647 (unused by the template)
THINK_OPEN = THINK + "\n"  # R1's "force the response to begin with <think>\n"
THINK_CLOSE = END_THINK
GENERATION_PREFIX = ASSISTANT + THINK_OPEN  # what add_generation_prompt appends (Feb-2025 template)
TRACE_JOIN = "\n" + END_THINK + "\n"  # reasoning + this + answer: one trace's text (curate's trace dedup key)

TEMPLATES = Path(__file__).resolve().parent / "templates"
RELEASE_TEMPLATE, TRAIN_TEMPLATE = "r1_distill.jinja", "r1_distill_train.jinja"
MODEL_MAX_LENGTH = 16384  # tokenizer_config.json model_max_length of every R1-Distill release

# Sampling DeepSeek ships in generation_config.json (temperature 0.6, top-p 0.95).
RELEASE_SAMPLING = {"do_sample": True, "temperature": 0.6, "top_p": 0.95}
# config.json keys that describe the saved tensors, not the release: set from the checkpoint's weights.
WEIGHT_KEYS = ("torch_dtype", "dtype", "vocab_size")


@dataclass(frozen=True)
class FamilySpec:
    """What DeepSeek's release does to a base model of one family."""

    family: str
    model_type: str | None  # config.json model_type of the base; None: any
    first_special: int | None  # first added-token id of the base vocabulary (family check)
    first_special_name: str | None  # its name in the base tokenizer
    renames: dict[int, tuple[str, bool]]  # id -> (content, special): base ids the release renames
    new_tokens: tuple[tuple[str, bool], ...] = ()  # appended in this order (families without a release)
    config_changes: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # student -> keys DeepSeek changed
    config_ids: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # student -> bos/eos ids the release keeps
    generation_drop: tuple[str, ...] = ()  # base generation_config keys the release does not have
    ids_from_tokenizer: bool = False  # config.json bos/eos/pad point at the (added) R1 tokens


QWEN2_IDS = {"bos_token_id": 151643, "eos_token_id": 151643}
RELEASES: dict[str, FamilySpec] = {
    # id -> (content, special) in deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B/tokenizer.json added_tokens (copied in
    # tests/golden/qwen2_added_tokens.json; 151650-151664 keep Qwen2.5's names). The role and think tokens are not
    # "special", so decoding with skip_special_tokens keeps <think>...</think> for reasoning parsers.
    "qwen2": FamilySpec(
        family="qwen2",
        model_type="qwen2",
        first_special=151643,
        first_special_name="<|endoftext|>",
        renames={
            151643: (EOS, True),
            151644: (USER, False),
            151645: (ASSISTANT, False),
            151646: (BOS, True),
            151647: (EOT, False),
            151648: (THINK, False),
            151649: (END_THINK, False),
        },
        # Qwen2.5-Math has 4k positions; DeepSeek's 1.5B/7B configs say 128k, and the 1.5B unties lm_head.
        config_changes={
            "qwen-1.5b": {"max_position_embeddings": 131072, "tie_word_embeddings": False},
            "qwen-7b": {"max_position_embeddings": 131072},
        },
        config_ids={s: QWEN2_IDS for s in ("qwen-1.5b", "qwen-7b", "qwen-14b", "qwen-32b")},
        generation_drop=("max_new_tokens",),  # Qwen2.5's 2048; the release's file has no length limit
    ),
    # DeepSeek-R1-Distill-Llama-*: Llama-3's BOS/EOS renamed, reserved special tokens 128011-128014 reused for the
    # roles and think tags (</think> = 128014 is what R1-Distill-Llama-8B clients stop on).
    "llama3": FamilySpec(
        family="llama3",
        model_type="llama",
        first_special=128000,
        first_special_name="<|begin_of_text|>",
        renames={
            128000: (BOS, True),
            128001: (EOS, True),
            128011: (USER, False),
            128012: (ASSISTANT, False),
            128013: (THINK, False),
            128014: (END_THINK, False),
        },
        config_ids={
            "llama-8b": {"bos_token_id": 128000, "eos_token_id": 128001},
            "llama-70b": {"bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009]},  # Llama-3.3's
        },
    ),
    # Families without a DeepSeek release (the demo's SmolLM2): the R1 tokens appended as new tokens.
    "other": FamilySpec(
        family="other",
        model_type=None,
        first_special=None,
        first_special_name=None,
        renames={},
        new_tokens=(
            (BOS, True),
            (EOS, True),
            (USER, False),
            (ASSISTANT, False),
            (THINK, False),
            (END_THINK, False),
        ),
        ids_from_tokenizer=True,
    ),
}


def family_spec(family: str) -> FamilySpec:
    return RELEASES[family]


def spec_for(student_name: str) -> FamilySpec:
    from distill.students import get_student

    return RELEASES[get_student(student_name).family]


def config_changes(student_name: str) -> dict[str, Any]:
    """config.json keys DeepSeek's release of this student changed from the base model's file."""
    return spec_for(student_name).config_changes.get(student_name, {})


@cache
def chat_template(train: bool = False) -> str:
    """The R1-Distill chat template (release) or its training variant that keeps the reasoning. The release
    text is the JSON-decoded `chat_template` of the R1-Distill tokenizer_config.json after the Feb-2025 update
    that made add_generation_prompt end in the generation prefix (DeepSeek-R1-Distill-Qwen-32B commit
    3865e12; identical in the Llama releases)."""
    name = TRAIN_TEMPLATE if train else RELEASE_TEMPLATE
    return (TEMPLATES / name).read_text(encoding="utf-8").removesuffix("\n")


def _added(content: str) -> dict[str, Any]:
    """Special tokens are written as the release writes them: legacy AddedToken dicts."""
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def release_tokenizer_config() -> dict[str, Any]:
    """tokenizer_config.json of the R1-Distill releases, key for key and in order (DeepSeek-R1-Distill-Qwen-32B
    after its Feb-2025 update, commit 3865e12; the Llama releases use the same file). DeepSeek replaced the
    base's file whole (no added_tokens_decoder, a Llama tokenizer_class), so no base key survives."""
    return {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": _added(BOS),
        "clean_up_tokenization_spaces": False,
        "eos_token": _added(EOS),
        "legacy": True,
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": _added(EOS),
        "sp_model_kwargs": {},
        "unk_token": None,
        "tokenizer_class": "LlamaTokenizerFast",
        "chat_template": chat_template(),
    }


# DeepSeek's published scores of each release (eval prints them beside a release's own; push puts them in the card).
PUBLISHED_SOURCE = (
    "DeepSeek-R1 README / model cards deepseek-ai/DeepSeek-R1-Distill-* 'Distilled Model Evaluation' "
    "(= arXiv 2501.12948 Table 5)"
)

# (benchmark in the data registry, metric) -> the card's column title
SCORE_COLUMNS = {
    ("aime24", "pass@1"): "AIME 2024 pass@1",
    ("aime24", "cons@k"): "AIME 2024 cons@64",
    ("math500", "pass@1"): "MATH-500 pass@1",
    ("gpqa_diamond", "pass@1"): "GPQA Diamond pass@1",
    ("livecodebench", "pass@1"): "LiveCodeBench pass@1",
    ("codeforces", "rating"): "CodeForces rating",
}

# Percent (rating: Elo), in SCORE_COLUMNS order, exactly as the card prints them.
_CARD_ROWS = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": (28.9, 52.7, 83.9, 33.8, 16.9, 954),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": (55.5, 83.3, 92.8, 49.1, 37.6, 1189),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B": (69.7, 80.0, 93.9, 59.1, 53.1, 1481),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": (72.6, 83.3, 94.3, 62.1, 57.2, 1691),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": (50.4, 80.0, 89.1, 49.0, 39.6, 1205),
    "deepseek-ai/DeepSeek-R1-Distill-Llama-70B": (70.0, 86.7, 94.5, 65.2, 57.5, 1633),
}
PUBLISHED_SCORES: dict[str, dict[tuple[str, str], float]] = {
    release: dict(zip(SCORE_COLUMNS, values, strict=True)) for release, values in _CARD_ROWS.items()
}
