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
    # math_suites.py: published graders' test tables copied verbatim (Math-Verify's cases are R1 completions)
    spec_or_data = {"release.py", "math_suites.py"}
    found = [
        hit for p in sorted(PACKAGE.rglob("*.py")) if p.name not in spec_or_data for hit in r1_literals(p)
    ]
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


def _legacy_tiny_base(folder: Path, student: str = "qwen-1.5b") -> Path:
    """The student's base config.json (transformers 4.x keys: rope_theta, rope_scaling, sliding_window 4096) at
    the tiny fixture's shape: what a fine-tune of it gets back from transformers 5 has rope_parameters instead."""
    config = {**_base(student, "config.json"), "hidden_size": 64, "intermediate_size": 128}
    config.update(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    if "max_window_layers" in config:
        config["max_window_layers"] = 2
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(BASES / BASE_OF[student] / "generation_config.json", folder)
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


# ---------------------------------------------------------------------------------------------------------
# Patch after a real `distill train`: the release JSON is the base's own file, not transformers' re-serialisation

TINY = {"qwen-1.5b": "tiny_qwen2", "llama-8b": "tiny_llama"}
TRAIN_SETS = (
    "train.max_steps=2",
    "train.max_length=96",
    "train.grad_accum=1",
    "train.lr=1e-3",
    "train.warmup_ratio=0.0",
    "train.save_every=1000",
    "train.gradient_checkpointing=false",
    "train.dtype=float32",  # CPU or GPU alike: the saved tensors (and so the release's torch_dtype) are fp32
)


def _kept_rows(n: int) -> list[dict]:
    """curate's kept/ rows: an R1 math prompt, a short reasoning trace, a boxed answer."""
    prompt = "What is {a} + {a}? Please reason step by step, and put your final answer within \\boxed{{}}."
    return [
        {
            "prompt_id": f"p{a}",
            "domain": "math",
            "completion": "",
            "messages": [{"role": "user", "content": prompt.format(a=a)}],
            "reasoning": f"{a} plus {a} is {2 * a}.",
            "answer": f"The answer is \\boxed{{{2 * a}}}.",
        }
        for a in range(1, n + 1)
    ]


@pytest.fixture(scope="module", params=sorted(TINY))
def trained(request, tmp_path_factory):
    """(student, the base's config.json and generation_config.json, train's output) after 2 real training steps
    through the CLI, from a tiny base whose JSON files are the real base's (transformers 4.x keys). The base
    folder is deleted afterwards: train's output is all patch has to go on."""
    from typer.testing import CliRunner

    from cli.main import app
    from distill.artifacts import finish_manifest, start_manifest, write_parquet

    student, root = request.param, tmp_path_factory.mktemp(f"train-{request.param}")
    base = root / "base"
    shutil.copytree(request.getfixturevalue(TINY[student]), base)
    _legacy_tiny_base(base, student)
    legacy = {n: json.loads((base / n).read_text()) for n in ("config.json", "generation_config.json")}
    write_parquet(_kept_rows(4), root / "curate" / "kept" / "part-00000.parquet")
    finish_manifest(root / "curate", start_manifest("curate", "test"))
    args = ["train", "--student", student, "--data", str(root / "curate"), "--out", str(root / "train")]
    sets = [f"train.model={base}", *TRAIN_SETS]
    result = CliRunner().invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    assert (root / "train" / "final" / "base" / "config.json").read_text() == (
        base / "config.json"
    ).read_text()
    shutil.rmtree(base)
    return student, legacy, root / "train"


def _release_changes(student: str) -> dict:
    """The keys DeepSeek's release changed in the real base config.json (both files written out above as data),
    plus the dtype of the tensors train saved."""
    base = _base(student, "config.json")
    changed = {
        k: v for k, v in RELEASE_CONFIG[student].items() if k not in NOT_REPRODUCED and base.get(k) != v
    }
    return {**changed, "torch_dtype": "float32"}


def test_patch_after_real_train_edits_the_base_files(trained, tmp_path):
    """train's final/config.json is transformers' re-serialisation (rope_parameters, no rope_theta); the
    release config.json is still the base's file, key order and values, with only the release's keys changed."""
    from typer.testing import CliRunner

    from cli.main import app

    student, legacy, train = trained
    own = json.loads((train / "final" / "config.json").read_text())
    assert (
        own != legacy["config.json"]
    )  # else this test would not tell a kept base file from a re-serialised one
    release = tmp_path / "release"
    result = CliRunner().invoke(app, ["patch", "--student", student, str(train / "final"), str(release)])
    assert result.exit_code == 0, result.output
    config = json.loads((release / "config.json").read_text())
    assert config == {**legacy["config.json"], **_release_changes(student)}
    assert list(config) == list(legacy["config.json"])
    assert "rope_parameters" not in config and config["rope_theta"] == legacy["config.json"]["rope_theta"]
    if student == "qwen-1.5b":
        assert (config["sliding_window"], config["use_sliding_window"]) == (4096, False)
    else:
        assert config["rope_scaling"] == _base("llama-8b", "config.json")["rope_scaling"]
    generation = json.loads((release / "generation_config.json").read_text())
    assert generation == _release_file(RELEASE_GENERATION[student], legacy["generation_config.json"])
    assert [f["fact"] for f in check_release(release, student, train / "final" / "base") if not f["ok"]] == []
    assert not (release / "base").exists()  # the kept base files are train's, not the release's


def _hub_cache(root: Path, repo_id: str, files: dict[str, dict]) -> Path:
    """A Hugging Face hub cache holding `files` as repo_id's main snapshot (how a downloaded base looks)."""
    from huggingface_hub.file_download import repo_folder_name

    repo = root / repo_folder_name(repo_id=repo_id, repo_type="model")
    sha = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    (repo / "snapshots" / sha).mkdir(parents=True)
    for name, data in files.items():
        (repo / "snapshots" / sha / name).write_text(json.dumps(data, indent=2))
    return root


def test_cli_check_finds_the_base_and_names_a_changed_key(trained, tmp_path, monkeypatch):
    """`distill patch --check` compares the release with the student's base when it is in the local hub cache:
    a key changed away from the base's value is a failed fact named in the table, exit 1."""
    import huggingface_hub.constants
    from typer.testing import CliRunner

    from cli.main import app
    from distill.students import get_student

    student, legacy, train = trained
    runner, release = CliRunner(), tmp_path / "release"
    assert (
        runner.invoke(app, ["patch", "--student", student, str(train / "final"), str(release)]).exit_code == 0
    )
    config = json.loads((release / "config.json").read_text())
    (release / "config.json").write_text(json.dumps({**config, "rope_theta": 1234.0}, indent=2))
    check = ["patch", "--check", str(release), "--student", student]
    # without the base on this machine, only the release's own facts are checked: the change goes unseen
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    result = runner.invoke(app, check)
    assert result.exit_code == 0, result.output
    cache = _hub_cache(tmp_path / "hub", get_student(student).base, legacy)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    result = runner.invoke(app, check)
    assert result.exit_code == 1, result.output
    assert "config.rope_theta" in result.output and "✗" in result.output
    (release / "config.json").write_text(json.dumps(config, indent=2))
    result = runner.invoke(app, check)
    assert result.exit_code == 0, result.output
    assert "✗" not in result.output
