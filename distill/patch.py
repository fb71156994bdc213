"""Release patch: give a trained checkpoint DeepSeek's R1-Distill tokenizer and configs, and check the result.

distill patch --student qwen-7b runs/x/train/final OUT     # write the release layout
distill patch --check OUT --student qwen-7b                # conformance table, exit 1 on any ✗
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from distill.artifacts import (
    atomic_dir,
    atomic_write_text,
    checkpoint_files,
    finish_manifest,
    manifest_hash,
    prepare_stage,
    read_manifest,
)
from distill.config import config_hash
from distill.errors import DistillError
from distill.release import (
    ASSISTANT,
    BOS,
    EOS,
    GENERATION_PREFIX,
    RELEASE_SAMPLING,
    THINK,
    USER,
    WEIGHT_KEYS,
    chat_template,
    config_changes,
    release_tokenizer_config,
    spec_for,
)
from distill.release_files import (
    BASE_DIR,
    _base_pieces,
    base_folder,
    check_model_type,
    config_edits,
    local_model_folder,
    prepare_model,
    read_json,
    release_config,
    release_generation_config,
    release_ids,
    release_tokenizer,
    write_json,
    write_release_tokenizer,
)
from distill.students import get_student
from distill.vocab import QWEN25_SPECIALS

# Names other modules and benchmarks import from here (the spec itself lives in distill/release.py).
__all__ = ["BOS", "EOS", "USER", "ASSISTANT", "THINK", "chat_template", "prepare_model", "release_tokenizer"]
__all__ += ["_base_pieces", "patch_checkpoint", "patch_stage", "check_release", "print_conformance"]


def weights_unchanged(config: dict[str, Any], tokenizer, student_name: str, ckpt: Path) -> bool:
    """True when the release changes configs and tokenizer only: no rows to add, no lm_head to untie, and
    safetensors weights. That is every release student patched from train's output (train already used the
    release layout), so the weights are linked, not loaded and rewritten (140 GB for a 70B)."""
    untie = config_changes(student_name).get("tie_word_embeddings") is False
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


def write_release_json(
    source: Path, weights: dict[str, Any], student_name: str, tokenizer, stage: Path
) -> None:
    """config.json and generation_config.json as edits of the base model's own files in `source`."""
    base = read_json(source / "config.json")
    if base is None:
        raise DistillError(f"{source / 'config.json'}: missing or not JSON (the base model's config)")
    write_json(stage / "config.json", release_config(base, weights, student_name, tokenizer))
    base_gen = read_json(source / "generation_config.json") or {}
    write_json(stage / "generation_config.json", release_generation_config(base_gen, student_name, tokenizer))


def patch_checkpoint(ckpt: Path, out: Path, student_name: str, base: str | Path | None = None) -> Path:
    """Write `out` in the release layout (config.json, generation_config.json, tokenizer files, safetensors).
    The JSON files are edits of the base model's own (see release_files.base_folder for where it is found)."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill.models import load_tokenizer

    ckpt, out = Path(ckpt), Path(out)
    config = _check_checkpoint(ckpt)
    check_model_type(config.get("model_type"), student_name, str(ckpt))  # fail before loading anything
    tokenizer = release_tokenizer(
        load_tokenizer(str(ckpt)), student_name, config.get("model_type"), str(ckpt)
    )
    source = base_folder(ckpt, student_name, base)
    with atomic_dir(out) as stage:
        if weights_unchanged(config, tokenizer, student_name, ckpt):
            link_weights(ckpt, stage)
            weights = config
        else:
            model = AutoModelForCausalLM.from_pretrained(ckpt, dtype="auto")
            prepare_model(model, tokenizer, student_name)
            with torch.no_grad():
                model.save_pretrained(stage, safe_serialization=True)
            weights = read_json(stage / "config.json") or {}
        write_release_json(source, weights, student_name, tokenizer, stage)
        write_release_tokenizer(tokenizer, stage)
    return out


# ---------------------------------------------------------------------------------------------------------
# Conformance: every release fact, expected vs found


def _fact(fact: str, expected: Any, found: Any, ok: bool | None = None) -> dict[str, Any]:
    return {"fact": fact, "expected": expected, "found": found, "ok": expected == found if ok is None else ok}


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


def _id_facts(tokenizer, student_name: str) -> list[dict[str, Any]]:
    spec = spec_for(student_name)
    if not spec.renames:
        vocab = tokenizer.get_vocab()
        return [
            _fact(f"token {c}", "present", "present" if c in vocab else "absent") for c, _ in spec.new_tokens
        ]
    facts = [_fact(f"token {i}", c, tokenizer.convert_ids_to_tokens(i)) for i, (c, _) in spec.renames.items()]
    if spec.family == "qwen2":
        base = [c for c, _ in QWEN25_SPECIALS[7:]]
        found = tokenizer.convert_ids_to_tokens(list(range(151650, 151665)))
        facts.append(
            _fact("tokens 151650-151664", "Qwen2.5 names", "Qwen2.5 names" if found == base else found)
        )
    return facts


def _encoding_facts(tokenizer) -> list[dict[str, Any]]:
    ids = tokenizer.convert_tokens_to_ids([ASSISTANT, THINK])
    newline = tokenizer.encode("\n", add_special_tokens=False)
    bos = tokenizer.convert_tokens_to_ids(BOS)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True
    )
    return [
        _fact(
            f"encode({GENERATION_PREFIX!r})",
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


def _config_facts(cfg: dict[str, Any], student_name: str, tokenizer) -> list[dict[str, Any]]:
    """The release's own config.json keys: DeepSeek's changes (or R1 token ids), the ids it keeps, the rows."""
    expected = {
        **spec_for(student_name).config_ids.get(student_name, {}),
        **config_edits(student_name, tokenizer),
    }
    facts = [_fact(f"config.{k}", v, cfg.get(k, "<absent>")) for k, v in expected.items()]
    vocab = cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size", 0)
    facts.append(
        _fact("config.vocab_size >= len(tokenizer)", f">= {len(tokenizer)}", vocab, vocab >= len(tokenizer))
    )
    return facts


def _edit_facts(name: str, expected: dict[str, Any], found: dict[str, Any]) -> list[dict[str, Any]]:
    """One failed fact per key where the file is not the base's file with the release's edits (a key
    changed, lost or added), then one line saying whether every key holds."""
    keys = [k for k in {**expected, **found} if k not in WEIGHT_KEYS]
    wrong = [k for k in keys if expected.get(k, "<absent>") != found.get(k, "<absent>")]
    facts = [_fact(f"{name}.{k}", expected.get(k, "<absent>"), found.get(k, "<absent>")) for k in wrong]
    order = [k for k in found if k in expected] == [k for k in expected if k in found]
    holds, same = order and not wrong, "the base's keys, values and order, edited"
    facts.append(_fact(f"{name}.json = base file + release edits", same, same if holds else "differs", holds))
    return facts


def _base_facts(folder: Path, source: Path, student_name: str, tokenizer) -> list[dict[str, Any]]:
    """config.json and generation_config.json compared key by key with the base model's files, edited."""
    base, cfg = read_json(source / "config.json") or {}, read_json(folder / "config.json") or {}
    facts = _edit_facts("config", release_config(base, cfg, student_name, tokenizer), cfg)
    base_gen = read_json(source / "generation_config.json") or {}
    gen = read_json(folder / "generation_config.json") or {}
    return facts + _edit_facts(
        "generation_config", release_generation_config(base_gen, student_name, tokenizer), gen
    )


def check_release(folder: Path, student_name: str, base: Path | None = None) -> list[dict[str, Any]]:
    """Each release fact as {fact, expected, found, ok}: files, tokenizer_config, ids, encodings, configs; with
    `base` (a folder holding the base model's config.json), every key of the configs against the base's."""
    from distill.models import load_tokenizer

    folder = Path(folder)
    names = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
    facts = [_fact(f"file {n}", "present", "present" if (folder / n).is_file() else "missing") for n in names]
    weights = list(folder.glob("*.safetensors"))
    facts.append(_fact("weights *.safetensors", "present", "present" if weights else "missing"))
    if not all(f["ok"] for f in facts):
        return facts
    tokenizer = load_tokenizer(str(folder))
    facts += _tokenizer_config_facts(read_json(folder / "tokenizer_config.json") or {})
    facts += _id_facts(tokenizer, student_name)
    facts += _encoding_facts(tokenizer)
    gen = read_json(folder / "generation_config.json") or {}
    bos_id, eos_id = release_ids(tokenizer)
    sampling = {"bos_token_id": bos_id, "eos_token_id": eos_id, **RELEASE_SAMPLING}
    facts += [_fact(f"generation_config.{k}", v, gen.get(k, "<absent>")) for k, v in sampling.items()]
    cfg = read_json(folder / "config.json") or {}
    facts += _config_facts(cfg, student_name, tokenizer)
    if base is not None:
        facts += _base_facts(folder, Path(base), student_name, tokenizer)
    if cfg.get("tie_word_embeddings") is False:
        untied = "lm_head.weight" in _weight_names(folder)
        facts.append(_fact("lm_head.weight saved (untied)", True, untied))
    return facts


def local_base(folder: Path, student_name: str) -> Path | None:
    """The student's base model folder when it is local and of the release's shape, for --check."""
    source = base_folder(folder, student_name)
    return None if source == Path(folder) else source


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
    facts = check_release(folder, student_name, local_base(folder, student_name))
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


def trained_from(recipe) -> str | None:
    """The model train fine-tuned, when it is on this machine (the source of the release's untouched keys)."""
    model = recipe.train.model or get_student(recipe.student).base
    return model if local_model_folder(model) is not None else None


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
    source = base_folder(final, recipe.student, trained_from(recipe))
    if recipe.patch.release:
        patch_checkpoint(final, release, recipe.student, source)
    else:  # publish the trained checkpoint as is; conformance is reported, not enforced
        with atomic_dir(release) as stage:
            shutil.copytree(final, stage, dirs_exist_ok=True, ignore=shutil.ignore_patterns(BASE_DIR))
    facts = check_release(release, recipe.student, None if source == final else source)
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
