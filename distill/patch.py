"""Release patch: give a trained checkpoint DeepSeek's R1-Distill tokenizer and configs, and check the result.

distill patch --student qwen-7b runs/x/train/final OUT     # write the release layout
distill patch --check OUT --student qwen-7b                # conformance table, exit 1 on any ✗
"""

from __future__ import annotations

import json
import os
import shutil
from functools import cache
from pathlib import Path
from typing import Any

from distill.artifacts import (
    atomic_write_text,
    checkpoint_files,
    finish_manifest,
    manifest_hash,
    prepare_stage,
    read_manifest,
)
from distill.config import config_hash
from distill.errors import DistillError
from distill.students import get_student
from distill.vocab import QWEN25_SPECIALS, added_token, bos_template

TEMPLATES = Path(__file__).resolve().parent / "templates"
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT, THINK, END_THINK = "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"
GENERATION_PREFIX = ASSISTANT + THINK + "\n"  # what add_generation_prompt appends (R1 "force <think>\n")

# id -> (content, special) in deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B/tokenizer.json added_tokens (copied in
# tests/golden/qwen2_added_tokens.json; 151650-151664 keep Qwen2.5's names). The role and think tokens are not
# "special", so decoding with skip_special_tokens keeps <think>...</think> for reasoning parsers.
QWEN_RENAMES = {
    151643: (EOS, True),
    151644: (USER, False),
    151645: (ASSISTANT, False),
    151646: (BOS, True),
    151647: ("<|EOT|>", False),
    151648: (THINK, False),
    151649: (END_THINK, False),
}
# DeepSeek-R1-Distill-Llama-*: Llama-3's BOS/EOS renamed, reserved special tokens 128011-128014 reused for the
# roles and think tags (issue #6 release facts; </think> = 128014 is what R1-Distill-Llama-8B clients stop on).
LLAMA_RENAMES = {
    128000: (BOS, True),
    128001: (EOS, True),
    128011: (USER, False),
    128012: (ASSISTANT, False),
    128013: (THINK, False),
    128014: (END_THINK, False),
}
# Other families (the demo's SmolLM2) get the R1 tokens appended as new tokens, in this order.
NEW_TOKENS = [(BOS, True), (EOS, True), (USER, False), (ASSISTANT, False), (THINK, False), (END_THINK, False)]
RENAMES = {"qwen2": QWEN_RENAMES, "llama3": LLAMA_RENAMES}
BASE_MODEL_TYPE = {"qwen2": "qwen2", "llama3": "llama"}
FIRST_SPECIAL = {"qwen2": 151643, "llama3": 128000}  # first added-token id of the base vocabulary

MODEL_MAX_LENGTH = 16384


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
    after its Feb-2025 update, commit 3865e12; the Llama releases use the same file)."""
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


# Sampling DeepSeek ships in generation_config.json (temperature 0.6, top-p 0.95); bos/eos ids are added.
RELEASE_SAMPLING = {"do_sample": True, "temperature": 0.6, "top_p": 0.95}
# config.json changes DeepSeek made per student; the others keep the base config (rope, sliding window, ids).
CONFIG_CHANGES: dict[str, dict[str, Any]] = {
    "qwen-1.5b": {"max_position_embeddings": 131072, "tie_word_embeddings": False},
    "qwen-7b": {"max_position_embeddings": 131072},
}
# bos/eos ids the release config.json keeps from the base model.
BASE_CONFIG_IDS: dict[str, tuple[int, int | list[int]]] = {
    "qwen2": (151643, 151643),
    "llama-8b": (128000, 128001),
    "llama-70b": (128000, [128001, 128008, 128009]),
}


@cache
def chat_template(train: bool = False) -> str:
    """The R1-Distill chat template (release) or its training variant that keeps the reasoning. The release
    text is the JSON-decoded `chat_template` of the R1-Distill tokenizer_config.json after the Feb-2025 update
    that made add_generation_prompt end in `<｜Assistant｜><think>\n` (DeepSeek-R1-Distill-Qwen-32B commit
    3865e12; identical in the Llama releases)."""
    name = "r1_distill_train.jinja" if train else "r1_distill.jinja"
    return (TEMPLATES / name).read_text(encoding="utf-8").removesuffix("\n")


def tokenizer_dict(tokenizer) -> dict[str, Any]:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def _token_at(data: dict[str, Any], token_id: int) -> str | None:
    for tok in data["added_tokens"]:
        if tok["id"] == token_id:
            return tok["content"]
    return None


def check_model_type(model_type: str | None, student_name: str, where: str) -> None:
    family = get_student(student_name).family
    expected = BASE_MODEL_TYPE.get(family)
    if expected is not None and model_type is not None and model_type != expected:
        raise DistillError(
            f"{where}: config.json model_type '{model_type}' is not a {family} checkpoint "
            f"(student {student_name} expects '{expected}')"
        )


def check_family(data: dict[str, Any], model_type: str | None, student_name: str, where: str) -> None:
    """Refuse a checkpoint of another family than the student's (its ids would be renamed into garbage)."""
    family = get_student(student_name).family
    if family == "other":
        return
    check_model_type(model_type, student_name, where)
    first = FIRST_SPECIAL[family]
    base_name = QWEN25_SPECIALS[0][0] if family == "qwen2" else "<|begin_of_text|>"
    found = _token_at(data, first)
    if found not in (base_name, RENAMES[family][first][0]):
        raise DistillError(
            f"{where}: token id {first} is {found!r}, expected {base_name!r}: the tokenizer is not "
            f"a {family} vocabulary (student {student_name})"
        )


def _renamed(data: dict[str, Any], renames: dict[int, tuple[str, bool]]) -> dict[str, Any]:
    for tok in data["added_tokens"]:
        if tok["id"] in renames:
            tok["content"], tok["special"] = renames[tok["id"]]
    missing = set(renames) - {t["id"] for t in data["added_tokens"]}
    if missing:
        raise DistillError(f"tokenizer has no added tokens at ids {sorted(missing)} to rename")
    return data


def _with_new_tokens(data: dict[str, Any]) -> dict[str, Any]:
    present = {t["content"] for t in data["added_tokens"]} | set(data["model"]["vocab"])
    next_id = max([t["id"] for t in data["added_tokens"]] + list(data["model"]["vocab"].values())) + 1
    for content, special in NEW_TOKENS:
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

    family = get_student(student_name).family
    data = tokenizer_dict(tokenizer)
    check_family(data, model_type, student_name, where)
    data = _renamed(data, RENAMES[family]) if family in RENAMES else _with_new_tokens(data)
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
    if (
        CONFIG_CHANGES.get(student_name, {}).get("tie_word_embeddings") is False
        and model.config.tie_word_embeddings
    ):
        embed = model.get_input_embeddings().weight
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(embed.detach().clone())
    release_config(model.config, tokenizer, student_name)
    bos_id, eos_id = release_ids(tokenizer)
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, **RELEASE_SAMPLING)
    return model


def release_config(config, tokenizer, student_name: str) -> None:
    """DeepSeek's config.json edits (in place); other families point their bos/eos/pad at the R1 tokens."""
    for key, value in CONFIG_CHANGES.get(student_name, {}).items():
        setattr(config, key, value)
    if get_student(student_name).family == "other":  # no DeepSeek release to copy
        bos_id, eos_id = release_ids(tokenizer)
        config.bos_token_id, config.eos_token_id, config.pad_token_id = bos_id, eos_id, eos_id


def weights_unchanged(config: dict[str, Any], tokenizer, student_name: str, ckpt: Path) -> bool:
    """True when the release changes configs and tokenizer only: no rows to add, no lm_head to untie, and
    safetensors weights. That is every release student patched from train's output (train already used the
    release layout), so the weights are linked, not loaded and rewritten (140 GB for a 70B)."""
    untie = CONFIG_CHANGES.get(student_name, {}).get("tie_word_embeddings") is False
    return (
        len(tokenizer) <= config.get("vocab_size", 0)
        and not (untie and config.get("tie_word_embeddings", True))
        and not list(ckpt.glob("*.bin"))
        and bool(list(ckpt.glob("*.safetensors")))
    )


def link_weights(ckpt: Path, stage: Path) -> None:
    """Hard-link the safetensors shards (and their index) into stage; copy across filesystems."""
    for src in sorted(ckpt.iterdir()):
        if src.suffix == ".safetensors" or src.name == "model.safetensors.index.json":
            try:
                os.link(src, stage / src.name)
            except OSError:  # another filesystem, or links not supported
                shutil.copy2(src, stage / src.name)


def init_new_token_rows(model, tokenizer, old_rows: int) -> None:
    """Start each added R1 token from an analogue instead of the mean row: EOS/BOS from the base model's own
    EOS/BOS, `</think>` etc. from the mean of the pieces their text splits into ("</", "think", ">"). A mean row
    scores like an average token, so a short fine-tune never learns to emit it (measured on the demo: `</think>`
    ranked ~15,000th after 12 steps); an analogue row starts near where the model already knows to stop."""
    import torch

    base = {BOS: model.config.bos_token_id, EOS: model.config.eos_token_id}
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for content, _ in NEW_TOKENS:
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
    """Ids of `text` under the BPE model alone, ignoring added tokens ("</think>" -> "</", "think", ">")."""
    backend = tokenizer.backend_tokenizer
    words = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer else [(text, None)]
    return [tok.id for word, _ in words for tok in backend.model.tokenize(word)]


def generation_config_dict(bos_id: int, eos_id: int) -> dict[str, Any]:
    return {"bos_token_id": bos_id, "eos_token_id": eos_id, **RELEASE_SAMPLING}


def write_release_tokenizer(tokenizer, folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json exactly as DeepSeek ships them (no chat_template.jinja, no
    special_tokens_map.json: the template lives in tokenizer_config.json)."""
    tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"), pretty=True)
    text = json.dumps(release_tokenizer_config(), indent=2, ensure_ascii=False)
    (folder / "tokenizer_config.json").write_text(text + "\n", encoding="utf-8")


def _check_checkpoint(ckpt: Path) -> dict[str, Any]:
    if not (ckpt / "config.json").is_file():
        raise DistillError(f"{ckpt}: not a checkpoint folder (no config.json)")
    if not (ckpt / "tokenizer.json").is_file():
        raise DistillError(
            f"{ckpt}: missing tokenizer files (tokenizer.json); save the tokenizer with the model"
        )
    if not list(ckpt.glob("*.safetensors")) and not list(ckpt.glob("*.bin")):
        raise DistillError(f"{ckpt}: no weights (*.safetensors)")
    return json.loads((ckpt / "config.json").read_text())


def _swap_in(stage: Path, out: Path) -> None:
    """Replace `out` by the finished staging folder with renames only: readers never see a half-written release."""
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(stage, out)
    shutil.rmtree(old, ignore_errors=True)


def patch_checkpoint(ckpt: Path, out: Path, student_name: str) -> Path:
    """Write `out` in the release layout (config.json, generation_config.json, tokenizer files, safetensors)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from distill.models import load_tokenizer

    ckpt, out = Path(ckpt), Path(out)
    config = _check_checkpoint(ckpt)
    check_model_type(config.get("model_type"), student_name, str(ckpt))  # fail before loading anything
    tokenizer = release_tokenizer(
        load_tokenizer(str(ckpt)), student_name, config.get("model_type"), str(ckpt)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.with_name(f".{out.name}.staging-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        if weights_unchanged(config, tokenizer, student_name, ckpt):
            stage.mkdir()
            link_weights(ckpt, stage)
            release = AutoConfig.from_pretrained(ckpt)
            release_config(release, tokenizer, student_name)
            release.save_pretrained(stage)
        else:
            model = AutoModelForCausalLM.from_pretrained(ckpt, dtype="auto")
            prepare_model(model, tokenizer, student_name)
            with torch.no_grad():
                model.save_pretrained(stage, safe_serialization=True)
        gen = generation_config_dict(*release_ids(tokenizer))
        (stage / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
        write_release_tokenizer(tokenizer, stage)
        _swap_in(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------------------
# Conformance: every release fact, expected vs found


def _fact(fact: str, expected: Any, found: Any, ok: bool | None = None) -> dict[str, Any]:
    return {"fact": fact, "expected": expected, "found": found, "ok": expected == found if ok is None else ok}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _content(value: Any) -> Any:
    """An AddedToken dict ({"__type": "AddedToken", "content": ...}) compares by its content."""
    return value["content"] if isinstance(value, dict) and "content" in value else value


def _tokenizer_config_facts(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    facts = []
    for key, expected in release_tokenizer_config().items():
        if key == "chat_template":
            found = cfg.get(key)
            same = found == expected
            facts.append(
                _fact(
                    "tokenizer_config.chat_template",
                    "r1_distill.jinja (Feb 2025)",
                    "r1_distill.jinja (Feb 2025)" if same else f"differs ({len(found or '')} chars)",
                )
            )
        else:
            facts.append(
                _fact(f"tokenizer_config.{key}", _content(expected), _content(cfg.get(key, "<absent>")))
            )
    return facts


def _id_facts(tokenizer, family: str) -> list[dict[str, Any]]:
    if family in RENAMES:
        facts = [
            _fact(f"token {i}", c, tokenizer.convert_ids_to_tokens(i))
            for i, (c, _) in RENAMES[family].items()
        ]
        if family == "qwen2":
            base = [c for c, _ in QWEN25_SPECIALS[7:]]
            found = tokenizer.convert_ids_to_tokens(list(range(151650, 151665)))
            facts.append(
                _fact("tokens 151650-151664", "Qwen2.5 names", "Qwen2.5 names" if found == base else found)
            )
        return facts
    vocab = tokenizer.get_vocab()
    return [_fact(f"token {c}", "present", "present" if c in vocab else "absent") for c, _ in NEW_TOKENS]


def _encoding_facts(tokenizer) -> list[dict[str, Any]]:
    ids = tokenizer.convert_tokens_to_ids([ASSISTANT, THINK])
    newline = tokenizer.encode("\n", add_special_tokens=False)
    bos = tokenizer.convert_tokens_to_ids(BOS)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True
    )
    return [
        _fact(
            "encode('<｜Assistant｜><think>\\n')",
            ids + newline,
            tokenizer.encode(GENERATION_PREFIX, add_special_tokens=False),
        ),
        _fact(
            "encode('Hi') = BOS + text",
            [bos] + tokenizer.encode("Hi", add_special_tokens=False),
            tokenizer.encode("Hi"),
        ),
        _fact("generation prompt", f"{BOS}{USER}1+1?{GENERATION_PREFIX}", prompt),
    ]


def _weight_names(folder: Path) -> set[str]:
    from safetensors import safe_open

    names: set[str] = set()
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            names |= set(f.keys())
    return names


def _config_facts(cfg: dict[str, Any], student_name: str, family: str, tokenizer) -> list[dict[str, Any]]:
    facts = [
        _fact(f"config.{k}", v, cfg.get(k, "<absent>"))
        for k, v in CONFIG_CHANGES.get(student_name, {}).items()
    ]
    if family == "other":
        bos_id, eos_id = release_ids(tokenizer)
    else:
        bos_id, eos_id = BASE_CONFIG_IDS.get(student_name, BASE_CONFIG_IDS.get(family))
    facts += [
        _fact("config.bos_token_id", bos_id, cfg.get("bos_token_id")),
        _fact("config.eos_token_id", eos_id, cfg.get("eos_token_id")),
    ]
    vocab = cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size", 0)
    facts.append(
        _fact("config.vocab_size >= len(tokenizer)", f">= {len(tokenizer)}", vocab, vocab >= len(tokenizer))
    )
    return facts


def check_release(folder: Path, student_name: str) -> list[dict[str, Any]]:
    """Each release fact as {fact, expected, found, ok}: files, tokenizer_config, ids, encodings, configs."""
    from distill.models import load_tokenizer

    folder = Path(folder)
    student = get_student(student_name)
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    facts = [_fact(f"file {n}", "present", "present" if (folder / n).is_file() else "missing") for n in names]
    weights = list(folder.glob("*.safetensors"))
    facts.append(_fact("weights *.safetensors", "present", "present" if weights else "missing"))
    if not all(f["ok"] for f in facts):
        return facts
    tokenizer = load_tokenizer(str(folder))
    facts += _tokenizer_config_facts(_read_json(folder / "tokenizer_config.json") or {})
    facts += _id_facts(tokenizer, student.family)
    facts += _encoding_facts(tokenizer)
    gen = _read_json(folder / "generation_config.json") or {}
    bos_id, eos_id = release_ids(tokenizer)
    facts += [
        _fact(f"generation_config.{k}", v, gen.get(k, "<absent>"))
        for k, v in generation_config_dict(bos_id, eos_id).items()
    ]
    cfg = _read_json(folder / "config.json") or {}
    facts += _config_facts(cfg, student_name, student.family, tokenizer)
    if cfg.get("tie_word_embeddings") is False:
        untied = "lm_head.weight" in _weight_names(folder)
        facts.append(_fact("lm_head.weight saved (untied)", True, untied))
    return facts


def conformance_markdown(folder: Path, student_name: str, facts: list[dict[str, Any]]) -> str:
    lines = [
        f"# Release conformance: {folder} as {student_name}",
        "",
        "| fact | expected | found | ok |",
        "|---|---|---|---|",
    ]
    for f in facts:
        cells = [str(f[k]).replace("|", "\\|").replace("\n", "\\n") for k in ("fact", "expected", "found")]
        lines.append(f"| {' | '.join(cells)} | {'✓' if f['ok'] else '✗'} |")
    failed = sum(not f["ok"] for f in facts)
    lines += ["", f"{len(facts) - failed}/{len(facts)} facts hold."]
    return "\n".join(lines) + "\n"


def print_conformance(folder: Path, student_name: str) -> bool:
    """Print the conformance table; True when every fact holds."""
    from rich.console import Console
    from rich.table import Table

    folder = Path(folder)
    if not folder.is_dir():
        raise DistillError(f"--check {folder}: not a folder")
    facts = check_release(folder, student_name)
    table = Table(title=f"{folder} vs DeepSeek-R1-Distill release ({student_name})")
    table.add_column("fact", no_wrap=True)
    table.add_column("expected", overflow="fold")
    table.add_column("found", overflow="fold")
    table.add_column("ok", no_wrap=True)
    for f in facts:
        mark = "[green]✓[/]" if f["ok"] else "[red]✗[/]"
        table.add_row(f["fact"], repr(f["expected"]), repr(f["found"]), mark)
    Console().print(table)
    return all(f["ok"] for f in facts)


def patch_stage(recipe, src: Path, out: Path, force: bool = False):
    """Stage 4: src = run_dir/train (uses src/final) -> out/release/, out/conformance.md, manifest.json."""
    src, out = Path(src), Path(out)
    final = src / "final"
    inputs = {"train": manifest_hash(src)}
    if not (final / "config.json").is_file():
        raise DistillError(f"{final}: no trained checkpoint (run the train stage first)")
    cfg_hash = config_hash({"patch": recipe.patch.model_dump(mode="json"), "student": recipe.student})
    manifest = prepare_stage("patch", out, cfg_hash, inputs, force)
    if manifest is None:
        return read_manifest(out)
    release = out / "release"
    if recipe.patch.release:
        patch_checkpoint(final, release, recipe.student)
    else:  # publish the trained checkpoint as is; conformance is reported, not enforced
        stage = out / ".release.staging"
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(final, stage)
        _swap_in(stage, release)
    facts = check_release(release, recipe.student)
    atomic_write_text(out / "conformance.md", conformance_markdown(release, recipe.student, facts))
    failed = [f["fact"] for f in facts if not f["ok"]]
    if failed and recipe.patch.release:
        raise DistillError(
            f"{release}: release facts do not hold: {', '.join(failed)} (see {out}/conformance.md)"
        )
    manifest.outputs = checkpoint_files(release)
    manifest.metrics = {
        "student": recipe.student,
        "release": recipe.patch.release,
        "facts_ok": len(facts) - len(failed),
        "facts_failed": len(failed),
    }
    return finish_manifest(out, manifest)
