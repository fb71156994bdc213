"""Release spec: no R1 token literal outside distill/release.py; release configs as edits of the real base files."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

import distill
from distill.patch import check_release, patch_checkpoint
from distill.release_files import release_config, release_generation_config, release_tokenizer
from distill.vocab import base_tokenizer

PACKAGE = Path(distill.__file__).resolve().parent
BASES = Path(__file__).parent / "golden" / "base"  # the Hub repos' files (main), copied as data
BASE_OF = {
    "qwen-1.5b": "Qwen2.5-Math-1.5B",
    "qwen-7b": "Qwen2.5-Math-7B",
    "llama-8b": "Llama-3.1-8B",
    "qwen-14b": "Qwen2.5-14B",
    "qwen-32b": "Qwen2.5-32B",
    "llama-70b": "Llama-3.3-70B-Instruct",
}
R1_TOKENS = ("<｜", "<think>", "</think>")
# Keys the release files hold that an edit of the base cannot reproduce, on purpose: transformers_version
# records which transformers wrote the file (we keep the base's: no transformers re-wrote it), and
# _from_model_config is transformers' internal marker of a generation config derived from config.json.
NOT_REPRODUCED = ("transformers_version", "_from_model_config")


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef)]
    first = [n.body[0] for n in nodes if n.body and isinstance(n.body[0], ast.Expr)]
    return {id(e.value) for e in first if isinstance(e.value, ast.Constant)}


def r1_literals(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """String constants (docstrings excepted; f-string parts included) that spell an R1 token."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    return [
        f"{path.relative_to(root)}:{n.lineno}: {n.value[:50]!r}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
        if any(t in n.value for t in R1_TOKENS)
    ]


def test_no_r1_token_literal_outside_the_release_spec():
    found = [hit for p in sorted(PACKAGE.rglob("*.py")) if p.name != "release.py" for hit in r1_literals(p)]
    assert found == []
    assert r1_literals(PACKAGE / "release.py")  # the scan does see the spec's own strings


def test_the_scan_sees_literals_but_not_docstrings(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('"""Splits at </think>."""\nX = "a" + "</think>"\ndef f(t):\n    return f"{t}<think>"\n')
    assert [h.split(": ", 1)[1] for h in r1_literals(src, tmp_path)] == ["'</think>'", "'<think>'"]


# The DeepSeek-R1-Distill-* config.json files (Hub, main): written out here, not taken from distill's facts.
RELEASE_CONFIG = {
    "qwen-1.5b": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "hidden_act": "silu",
        "hidden_size": 1536,
        "initializer_range": 0.02,
        "intermediate_size": 8960,
        "max_position_embeddings": 131072,
        "max_window_layers": 21,
        "model_type": "qwen2",
        "num_attention_heads": 12,
        "num_hidden_layers": 28,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000,
        "sliding_window": 4096,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.44.0",
        "use_cache": True,
        "use_mrope": False,
        "use_sliding_window": False,
        "vocab_size": 151936,
    },
    "qwen-7b": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "hidden_act": "silu",
        "hidden_size": 3584,
        "initializer_range": 0.02,
        "intermediate_size": 18944,
        "max_position_embeddings": 131072,
        "max_window_layers": 28,
        "model_type": "qwen2",
        "num_attention_heads": 28,
        "num_hidden_layers": 28,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06,
        "rope_theta": 10000,
        "sliding_window": 4096,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.44.0",
        "use_cache": True,
        "use_mrope": False,
        "use_sliding_window": False,
        "vocab_size": 152064,
    },
    "qwen-14b": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "hidden_act": "silu",
        "hidden_size": 5120,
        "initializer_range": 0.02,
        "intermediate_size": 13824,
        "max_position_embeddings": 131072,
        "max_window_layers": 48,
        "model_type": "qwen2",
        "num_attention_heads": 40,
        "num_hidden_layers": 48,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 152064,
    },
    "qwen-32b": {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "hidden_act": "silu",
        "hidden_size": 5120,
        "initializer_range": 0.02,
        "intermediate_size": 27648,
        "max_position_embeddings": 131072,
        "max_window_layers": 64,
        "model_type": "qwen2",
        "num_attention_heads": 40,
        "num_hidden_layers": 64,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-05,
        "rope_theta": 1000000.0,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.43.1",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 152064,
    },
    "llama-8b": {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "hidden_act": "silu",
        "hidden_size": 4096,
        "initializer_range": 0.02,
        "intermediate_size": 14336,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 32,
        "num_hidden_layers": 32,
        "num_key_value_heads": 8,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.43.0.dev0",
        "use_cache": True,
        "vocab_size": 128256,
    },
    "llama-70b": {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 128000,
        "eos_token_id": [128001, 128008, 128009],
        "hidden_act": "silu",
        "hidden_size": 8192,
        "initializer_range": 0.02,
        "intermediate_size": 28672,
        "max_position_embeddings": 131072,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 64,
        "num_hidden_layers": 80,
        "num_key_value_heads": 8,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.47.0.dev0",
        "use_cache": True,
        "vocab_size": 128256,
    },
}
# Their generation_config.json files.
RELEASE_GENERATION = {
    "qwen-1.5b": {
        "_from_model_config": True,
        "bos_token_id": 151646,
        "eos_token_id": 151643,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "transformers_version": "4.39.3",
    },
    "qwen-7b": {
        "_from_model_config": True,
        "bos_token_id": 151646,
        "eos_token_id": 151643,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "transformers_version": "4.39.3",
    },
    "qwen-14b": {
        "_from_model_config": True,
        "bos_token_id": 151646,
        "eos_token_id": 151643,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "transformers_version": "4.39.3",
    },
    "qwen-32b": {
        "_from_model_config": True,
        "bos_token_id": 151646,
        "eos_token_id": 151643,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "transformers_version": "4.39.3",
    },
    "llama-8b": {
        "_from_model_config": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "transformers_version": "4.39.3",
    },
    "llama-70b": {
        "_from_model_config": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.95,
        "transformers_version": "4.47.0.dev0",
    },
}


@pytest.fixture(scope="module")
def tokenizers():
    """Release tokenizers of the real base vocabularies: the ids the generation configs point at."""
    return {
        "qwen": release_tokenizer(base_tokenizer("qwen2"), "qwen-7b"),
        "llama": release_tokenizer(base_tokenizer("llama3"), "llama-8b"),
    }


def _base(student: str, name: str) -> dict:
    return json.loads((BASES / BASE_OF[student] / name).read_text())


def _release_file(expected: dict, base: dict) -> dict:
    """The release file as an edit of the base can write it: the base's transformers_version, no marker."""
    out = {k: v for k, v in expected.items() if k not in NOT_REPRODUCED}
    return {**out, "transformers_version": base["transformers_version"]}


@pytest.mark.parametrize("student", BASE_OF)
def test_release_config_is_the_base_file_edited(tokenizers, student):
    base = _base(student, "config.json")
    got = release_config(base, base, student, tokenizers[student.split("-")[0]])
    assert got == _release_file(RELEASE_CONFIG[student], base)
    assert list(got) == list(RELEASE_CONFIG[student])  # the key order of DeepSeek's file, too


@pytest.mark.parametrize("student", BASE_OF)
def test_release_generation_config_is_the_base_file_edited(tokenizers, student):
    base = _base(student, "generation_config.json")
    got = release_generation_config(base, student, tokenizers[student.split("-")[0]])
    assert got == _release_file(RELEASE_GENERATION[student], base)


def test_weights_dtype_is_the_saved_tensors():
    """A bf16 base trained and saved in fp32 (CPU) says float32, under the base's own key name."""
    base = _base("llama-8b", "config.json")
    got = release_config(base, {**base, "torch_dtype": None, "dtype": "float32"}, "llama-8b", None)
    assert got == {**base, "torch_dtype": "float32"}


def _legacy_tiny_base(folder: Path) -> Path:
    """Qwen2.5-Math-1.5B's own config.json (transformers 4.x keys: rope_theta, sliding_window 4096) at the
    tiny fixture's shape: what a fine-tune of it gets back from transformers 5 has rope_parameters instead."""
    config = {**_base("qwen-1.5b", "config.json"), "hidden_size": 64, "intermediate_size": 128}
    config.update(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_window_layers=2)
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(BASES / BASE_OF["qwen-1.5b"] / "generation_config.json", folder)
    return folder


def test_patch_writes_the_base_files_edited_and_check_flags_a_changed_key(tmp_path, tiny_qwen2):
    base = _legacy_tiny_base(tmp_path / "base")
    out = patch_checkpoint(tiny_qwen2, tmp_path / "release", "qwen-1.5b", base=base)
    legacy = json.loads((base / "config.json").read_text())
    config = json.loads((out / "config.json").read_text())
    changed = {"max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "float32"}
    assert config == {**legacy, **changed} and list(config) == list(legacy)
    assert (config["rope_theta"], config["sliding_window"], "rope_parameters" in config) == (
        10000,
        4096,
        False,
    )
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation == {
        "bos_token_id": 151646,
        "do_sample": True,
        "eos_token_id": 151643,
        "transformers_version": "4.37.0",
        "temperature": 0.6,
        "top_p": 0.95,
    }
    assert [f["fact"] for f in check_release(out, "qwen-1.5b", base) if not f["ok"]] == []
    (out / "config.json").write_text(json.dumps({**config, "rope_theta": 1e6, "sliding_window": None}))
    failed = [f["fact"] for f in check_release(out, "qwen-1.5b", base) if not f["ok"]]
    assert failed == ["config.rope_theta", "config.sliding_window", "config.json = base file + release edits"]
