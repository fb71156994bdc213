"""Build the release files from the spec in release.py: tokenizer, model edits, and config JSON as edits of the base's.

Shared by train (which trains in the release layout) and patch (which writes the release folder). config.json and
generation_config.json are the base model's own files with only the release's keys changed, key order kept, so
rope_theta / rope_scaling / sliding_window survive whatever transformers version is installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from distill.errors import DistillError
from distill.release import (
    BOS,
    EOS,
    MODEL_MAX_LENGTH,
    RELEASE_SAMPLING,
    chat_template,
    config_changes,
    family_spec,
    release_tokenizer_config,
    spec_for,
)
from distill.vocab import added_token, bos_template

BASE_DIR = "base"  # train keeps the base model's own JSON files in final/base/ (the source of untouched keys)
BASE_FILES = ("config.json", "generation_config.json")


# ---------------------------------------------------------------------------------------------------------
# Tokenizer


def tokenizer_dict(tokenizer) -> dict[str, Any]:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def _token_at(data: dict[str, Any], token_id: int) -> str | None:
    for tok in data["added_tokens"]:
        if tok["id"] == token_id:
            return tok["content"]
    return None


def check_model_type(model_type: str | None, student_name: str, where: str) -> None:
    spec = spec_for(student_name)
    if spec.model_type is not None and model_type is not None and model_type != spec.model_type:
        raise DistillError(
            f"{where}: config.json model_type '{model_type}' is not a {spec.family} checkpoint "
            f"(student {student_name} expects '{spec.model_type}')"
        )


def check_family(data: dict[str, Any], model_type: str | None, student_name: str, where: str) -> None:
    """Refuse a checkpoint of another family than the student's (its ids would be renamed into garbage)."""
    spec = spec_for(student_name)
    if spec.first_special is None:
        return
    check_model_type(model_type, student_name, where)
    first = spec.first_special
    found = _token_at(data, first)
    if found not in (spec.first_special_name, spec.renames[first][0]):
        raise DistillError(
            f"{where}: token id {first} is {found!r}, expected {spec.first_special_name!r}: the tokenizer is not "
            f"a {spec.family} vocabulary (student {student_name})"
        )


def _renamed(data: dict[str, Any], renames: dict[int, tuple[str, bool]]) -> dict[str, Any]:
    for tok in data["added_tokens"]:
        if tok["id"] in renames:
            tok["content"], tok["special"] = renames[tok["id"]]
    missing = set(renames) - {t["id"] for t in data["added_tokens"]}
    if missing:
        raise DistillError(f"tokenizer has no added tokens at ids {sorted(missing)} to rename")
    return data


def _with_new_tokens(data: dict[str, Any], new_tokens) -> dict[str, Any]:
    present = {t["content"] for t in data["added_tokens"]} | set(data["model"]["vocab"])
    next_id = max([t["id"] for t in data["added_tokens"]] + list(data["model"]["vocab"].values())) + 1
    for content, special in new_tokens:
        if content not in present:
            data["added_tokens"].append(added_token(next_id, content, special))
            next_id += 1
    return data


def token_id(data: dict[str, Any], content: str) -> int:
    for tok in data["added_tokens"]:
        if tok["content"] == content:
            return tok["id"]
    return data["model"]["vocab"][content]


def release_tokenizer(tokenizer, student_name: str, model_type: str | None = None, where: str = "tokenizer"):
    """Base (or already released) tokenizer -> the R1-Distill release tokenizer: renamed/added R1 tokens, BOS
    prepended by the post-processor, bos/eos/pad and the R1 chat template. Idempotent. Raises DistillError
    for a vocabulary (or config model_type) of another family than the student's."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = spec_for(student_name)
    data = tokenizer_dict(tokenizer)
    check_family(data, model_type, student_name, where)
    data = _renamed(data, spec.renames) if spec.renames else _with_new_tokens(data, spec.new_tokens)
    data["post_processor"] = bos_template(BOS, token_id(data, BOS))
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        add_bos_token=True,
        add_eos_token=False,
        chat_template=chat_template(),
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
    )


def release_ids(tokenizer) -> tuple[int, int]:
    return tokenizer.convert_tokens_to_ids(BOS), tokenizer.convert_tokens_to_ids(EOS)


def write_release_tokenizer(tokenizer, folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json exactly as DeepSeek ships them (no chat_template.jinja, no
    special_tokens_map.json: the template lives in tokenizer_config.json)."""
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"), pretty=True)
    write_json(folder / "tokenizer_config.json", release_tokenizer_config())


# ---------------------------------------------------------------------------------------------------------
# Model (train's in-memory model, or patch when rows are added / lm_head untied)


def prepare_model(model, tokenizer, student_name: str):
    """Model side of the release: resize embeddings for added tokens (other family), DeepSeek's config.json
    changes (Qwen-1.5B: 128k positions and an untied lm_head copy of the embeddings), release ids and sampling."""
    import torch
    from transformers import GenerationConfig

    old_rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > old_rows:
        # 64-row padding keeps the matmul shapes GPU-friendly; rows then start from their analogues (below)
        model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=64, mean_resizing=True)
        init_new_token_rows(model, tokenizer, old_rows)
    if config_changes(student_name).get("tie_word_embeddings") is False and model.config.tie_word_embeddings:
        embed = model.get_input_embeddings().weight
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(embed.detach().clone())
    for key, value in config_edits(student_name, tokenizer).items():
        setattr(model.config, key, value)
    bos_id, eos_id = release_ids(tokenizer)
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, **RELEASE_SAMPLING)
    return model


def init_new_token_rows(model, tokenizer, old_rows: int) -> None:
    """Start each added R1 token from an analogue instead of the mean row: EOS/BOS from the base model's own
    EOS/BOS, the think tags etc. from the mean of the pieces their text splits into ("</", "think", ">"). A mean
    row scores like an average token, so a short fine-tune never learns to emit it (measured on the demo: the
    closing tag ranked ~15,000th after 12 steps); an analogue row starts near where the model already stops."""
    import torch

    base = {BOS: model.config.bos_token_id, EOS: model.config.eos_token_id}
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for content, _ in family_spec("other").new_tokens:
            new_id = tokenizer.convert_tokens_to_ids(content)
            if new_id is None or new_id < old_rows:
                continue
            if isinstance(base.get(content), int) and base[content] < old_rows:
                source = [base[content]]
            else:
                source = [i for i in _base_pieces(tokenizer, content) if i < old_rows]
            if source:
                emb[new_id] = emb[source].mean(dim=0)
        head = model.get_output_embeddings()
        if head is not None and head.weight is not emb and head.weight.shape[0] == emb.shape[0]:
            head.weight[old_rows:] = emb[old_rows:]  # an untied head starts from the same analogue rows


def _base_pieces(tokenizer, text: str) -> list[int]:
    """Ids of `text` under the BPE model alone, ignoring added tokens (a think tag -> "</", "think", ">")."""
    backend = tokenizer.backend_tokenizer
    words = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer else [(text, None)]
    return [tok.id for word, _ in words for tok in backend.model.tokenize(word)]


# ---------------------------------------------------------------------------------------------------------
# Release JSON as edits of the base model's files


def config_edits(student_name: str, tokenizer) -> dict[str, Any]:
    """config.json keys the release sets: DeepSeek's changes, or (no release to copy) ids of the R1 tokens."""
    edits = dict(config_changes(student_name))
    if spec_for(student_name).ids_from_tokenizer:
        bos_id, eos_id = release_ids(tokenizer)
        edits.update(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    return edits


def edit_json(base: dict[str, Any], changes: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """`base` with `changes` applied in place (key order kept; new keys appended) and `drop` removed."""
    out = {k: changes.get(k, v) for k, v in base.items() if k not in drop}
    out.update({k: v for k, v in changes.items() if k not in out})
    return out


def weight_facts(base: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """Keys that describe the saved tensors (dtype, rows), from the checkpoint's own config.json, under the
    base file's key names: a bf16 base trained and saved in fp32 must not claim bf16."""
    dtype = weights.get("dtype") or weights.get("torch_dtype")
    facts = {k: dtype for k in ("torch_dtype", "dtype") if k in base and dtype is not None}
    if "vocab_size" in weights and weights["vocab_size"] != base.get("vocab_size"):
        facts["vocab_size"] = weights["vocab_size"]
    return facts


def release_config(base: dict, weights: dict, student_name: str, tokenizer) -> dict[str, Any]:
    """The release config.json: the base's file, the release's keys and the weights' dtype/rows changed."""
    return edit_json(base, {**weight_facts(base, weights), **config_edits(student_name, tokenizer)})


def release_generation_config(base: dict, student_name: str, tokenizer) -> dict[str, Any]:
    """The release generation_config.json: the base's file with the R1 ids and DeepSeek's sampling."""
    bos_id, eos_id = release_ids(tokenizer)
    changes = {"bos_token_id": bos_id, "eos_token_id": eos_id, **RELEASE_SAMPLING}
    return edit_json(base, changes, drop=spec_for(student_name).generation_drop)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Written as the Hub files are: 2-space indent, UTF-8 kept, trailing newline."""
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------
# Where the base model's own files are


def local_model_folder(model: str) -> Path | None:
    """A local folder for a model argument (path, embedded name, or a hub id in the local HF cache), or None."""
    from distill.models import EMBEDDED, model_dir

    path = Path(model).expanduser()
    if (path / "config.json").is_file():
        return path
    if model in EMBEDDED:
        return model_dir(model) if (model_dir(model) / "config.json").is_file() else None
    if model.count("/") != 1:
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(model, "config.json")
    return Path(found).parent if isinstance(found, str) else None


def keep_base_files(model: str, folder: Path) -> None:
    """Copy the base model's own config.json / generation_config.json into folder/base/ (train calls this
    for final/), so patch edits the base's files and not transformers' re-serialisation of them."""
    src = local_model_folder(model)
    if src is None:
        return
    (Path(folder) / BASE_DIR).mkdir(parents=True, exist_ok=True)
    for name in BASE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, Path(folder) / BASE_DIR / name)


STRUCTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size")


def same_structure(base: dict[str, Any], ckpt: dict[str, Any]) -> bool:
    """True when `base` describes the checkpoint's architecture (a fine-tune of it, not another model)."""
    return all(base.get(k) == ckpt.get(k) for k in STRUCTURE_KEYS)


def base_folder(ckpt: Path, student_name: str, base: str | Path | None = None) -> Path:
    """Where the untouched keys come from: an explicit base (train's model), the copy train kept (ckpt/base/),
    the student's base model if it is local and of the checkpoint's shape, else the checkpoint itself (a base
    model patched directly)."""
    from distill.students import get_student

    ckpt = Path(ckpt)
    own = read_json(ckpt / "config.json") or {}
    kept = local_model_folder(str(ckpt / BASE_DIR))
    if kept is not None and same_structure(read_json(kept / "config.json") or {}, own):
        return kept
    if base is not None:
        folder = local_model_folder(str(base))
        if folder is None or not same_structure(read_json(folder / "config.json") or {}, own):
            raise DistillError(
                f"{ckpt}: base model '{base}' is not local or not the checkpoint's architecture"
            )
        return folder
    folder = local_model_folder(get_student(student_name).base)
    if folder is not None and same_structure(read_json(folder / "config.json") or {}, own):
        return folder
    return ckpt
