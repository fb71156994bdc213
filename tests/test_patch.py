"""Release patch on the real base vocabularies and tiny random models: ids, encodings, templates, configs, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from distill.artifacts import finish_manifest, read_manifest, start_manifest
from distill.config import recipe_from_dict
from distill.errors import DistillError
from distill.models import load_tokenizer
from distill.patch import check_release, patch_checkpoint, patch_stage
from distill.release import BOS, EOS, GENERATION_PREFIX, chat_template
from distill.release_files import release_tokenizer
from distill.vocab import base_tokenizer

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def released():
    """Release tokenizers built from the real base vocabularies (what training uses too)."""
    return {
        "qwen-7b": release_tokenizer(base_tokenizer("qwen2"), "qwen-7b"),
        "llama-8b": release_tokenizer(base_tokenizer("llama3"), "llama-8b"),
    }


@pytest.mark.parametrize(
    "student, ids",
    [
        (
            "qwen-7b",
            {
                151643: EOS,
                151644: "<｜User｜>",
                151645: "<｜Assistant｜>",
                151646: BOS,
                151647: "<|EOT|>",
                151648: "<think>",
                151649: "</think>",
                151650: "<|quad_start|>",
                151657: "<tool_call>",
                151664: "<|file_sep|>",
            },
        ),
        (
            "llama-8b",
            {
                128000: BOS,
                128001: EOS,
                128011: "<｜User｜>",
                128012: "<｜Assistant｜>",
                128013: "<think>",
                128014: "</think>",
                128009: "<|eot_id|>",
                128015: "<|reserved_special_token_7|>",
            },
        ),
    ],
)
def test_release_ids(released, student, ids):
    tok = released[student]
    assert {i: tok.convert_ids_to_tokens(i) for i in ids} == ids
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.model_max_length) == (BOS, EOS, EOS, 16384)


@pytest.mark.parametrize(
    "student, text, ids",
    [
        ("qwen-7b", GENERATION_PREFIX, [151645, 151648, 198]),  # the fact
        ("llama-8b", GENERATION_PREFIX, [128012, 128013, 198]),
        ("qwen-7b", "Hello world", [9707, 1879]),  # the BPE itself is untouched
        ("llama-8b", "Hello world", [9906, 1917]),
    ],
)
def test_release_encodings(released, student, text, ids):
    tok = released[student]
    assert tok.encode(text, add_special_tokens=False) == ids
    assert tok.encode(text) == [tok.bos_token_id] + ids  # the post-processor prepends BOS, once


@pytest.mark.parametrize("student", ["qwen-7b", "llama-8b"])
def test_decode_keeps_think_tags(released, student):
    tok = released[student]
    ids = tok.encode("<think>\nhmm\n</think>\n\n42" + EOS)
    assert (
        tok.decode(ids, skip_special_tokens=True) == "<think>\nhmm\n</think>\n\n42"
    )  # reasoning parsers need them


@pytest.mark.parametrize("student", ["qwen-7b", "llama-8b"])
def test_release_tokenizer_is_idempotent(released, student):
    once = released[student]
    twice = release_tokenizer(once, student)
    assert twice.added_tokens_decoder == once.added_tokens_decoder
    assert (
        twice.backend_tokenizer.post_processor.__getstate__()
        == once.backend_tokenizer.post_processor.__getstate__()
    )


TOOL_CALLS = [
    {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
]
TOOL_TURNS = [
    {"role": "user", "content": "Weather and time in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": TOOL_CALLS},
    {"role": "tool", "content": "18C"},
    {"role": "tool", "content": "noon"},
]
TOOL_RENDER = (
    BOS + "<｜User｜>Weather and time in Paris?"
    "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
    '{"city": "Paris"}\n```<｜tool▁call▁end｜>'
    "\n<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n"
    '{"tz": "CET"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>'
    "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>18C<｜tool▁output▁end｜>"
    "\n<｜tool▁output▁begin｜>noon<｜tool▁output▁end｜>"
)
TEMPLATE_CASES = [
    # (messages, add_generation_prompt, rendered)
    (
        [{"role": "user", "content": "What is 1+1?"}],
        True,
        BOS + "<｜User｜>What is 1+1?<｜Assistant｜><think>\n",
    ),
    (
        [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        True,
        BOS + "Be terse.<｜User｜>Hi<｜Assistant｜><think>\n",
    ),  # system prompt pasted right after BOS
    (
        [
            {"role": "system", "content": "A"},
            {"role": "system", "content": "B"},
            {"role": "user", "content": "x"},
        ],
        True,
        BOS + "B<｜User｜>x<｜Assistant｜><think>\n",
    ),  # the Distill template keeps the last system message
    (
        [
            {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
            {"role": "user", "content": "times 3?"},
        ],
        True,
        BOS
        + "<｜User｜>2+2?<｜Assistant｜>\n\n4<｜end▁of▁sentence｜><｜User｜>times 3?<｜Assistant｜><think>\n",
    ),
    (
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
        False,
        BOS + "<｜User｜>2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>",
    ),
    (
        TOOL_TURNS,
        True,
        TOOL_RENDER + "<｜tool▁outputs▁end｜>",
    ),  # no generation prompt right after tool output
    (
        TOOL_TURNS + [{"role": "assistant", "content": "18C at noon."}],
        False,
        TOOL_RENDER + "<｜tool▁outputs▁end｜>18C at noon.<｜end▁of▁sentence｜>",
    ),
]


@pytest.mark.parametrize("student", ["qwen-7b", "llama-8b"])
@pytest.mark.parametrize("messages, generation, rendered", TEMPLATE_CASES)
def test_release_chat_template(released, student, messages, generation, rendered):
    tok = released[student]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation) == rendered


def test_train_template_keeps_reasoning(released):
    tok = released["qwen-7b"]
    messages = [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "reasoning_content": "2 plus 2", "content": "\\boxed{4}"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, chat_template=chat_template(train=True))
    assert text == BOS + "<｜User｜>2+2?<｜Assistant｜><think>\n2 plus 2\n</think>\n\n\\boxed{4}" + EOS
    ids = tok.encode(text, add_special_tokens=False)
    assert ids[:2] == [151646, 151644] and ids[-1] == 151643 and 151648 in ids and 151649 in ids
    prompt = tok.apply_chat_template(
        messages[:1], tokenize=False, add_generation_prompt=True, chat_template=chat_template(train=True)
    )
    assert text.startswith(prompt)  # training prompt == inference prompt, token for token


def test_template_files_are_the_release_text():
    release = chat_template()
    assert release.startswith("{% if not add_generation_prompt is defined %}") and "\n" not in release
    assert release.endswith(
        "{{'<｜Assistant｜><think>\\n'}}{% endif %}"
    )  # Feb-2025 revision: <think>\n prefill
    assert "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}" in release


# ---------------------------------------------------------------------------------------------------------
# patch_checkpoint on tiny random models


def _config_diff(base: Path, release: Path, name: str = "config.json") -> dict:
    """Keys whose value differs (every key, transformers_version and dtype too); the key order must not."""
    a, b = (json.loads((p / name).read_text()) for p in (base, release))
    assert [k for k in b if k in a] == list(a)  # the base's keys, in the base's order
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


SAMPLING_DIFF = {"do_sample": (None, True), "temperature": (None, 0.6), "top_p": (None, 0.95)}


@pytest.mark.parametrize(
    "fixture, student, diff, generation",
    [
        (
            "tiny_qwen2",
            "qwen-1.5b",
            {"max_position_embeddings": (4096, 131072), "tie_word_embeddings": (True, False)},
            {"bos_token_id": (151643, 151646), **SAMPLING_DIFF},
        ),
        (
            "tiny_qwen2",
            "qwen-7b",
            {"max_position_embeddings": (4096, 131072)},
            {"bos_token_id": (151643, 151646), **SAMPLING_DIFF},
        ),
        ("tiny_llama", "llama-8b", {}, SAMPLING_DIFF),
    ],
)
def test_patch_checkpoint(request, tmp_path, fixture, student, diff, generation):
    import torch
    from transformers import AutoModelForCausalLM

    base = request.getfixturevalue(fixture)
    out = patch_checkpoint(base, tmp_path / "release", student)

    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    facts = check_release(out, student)
    assert [f for f in facts if not f["ok"]] == []
    assert _config_diff(base, out) == diff
    assert _config_diff(base, out, "generation_config.json") == generation  # the base's file, edited
    assert (out / "tokenizer_config.json").read_text() == (GOLDEN / "tokenizer_config.json").read_text()
    if fixture == "tiny_qwen2":  # added_tokens exactly as in deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
        added = json.loads((out / "tokenizer.json").read_text())["added_tokens"]
        assert added == json.loads((GOLDEN / "qwen2_added_tokens.json").read_text())
    # the patch changes configs and tokenizer only: same weights, same logits (lm_head untied as a copy)
    before = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    after = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 151645 if fixture == "tiny_qwen2" else 128012]])
    with torch.no_grad():
        assert torch.equal(before(ids).logits, after(ids).logits)
    untied = after.lm_head.weight.data_ptr() != after.get_input_embeddings().weight.data_ptr()
    assert untied == (not after.config.tie_word_embeddings)
    # only untying rewrites weights; otherwise the shards are hard links (a 70B is not loaded and re-saved)
    linked = (out / "model.safetensors").samefile(base / "model.safetensors")
    assert linked == ("tie_word_embeddings" not in diff)


def test_other_family_adds_tokens(tmp_path, smollm2_path):
    """The demo's SmolLM2: R1 tokens appended, embeddings resized, config ids pointing at them."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    ckpt = tmp_path / "smol"
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(ckpt)
    load_tokenizer(str(smollm2_path)).save_pretrained(ckpt)
    out = patch_checkpoint(ckpt, tmp_path / "release", "smollm2-135m")

    assert [f for f in check_release(out, "smollm2-135m") if not f["ok"]] == []
    tok = load_tokenizer(str(out))
    new = tok.convert_tokens_to_ids([BOS, EOS, "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"])
    assert new == list(range(49152, 49158))
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["vocab_size"], cfg["bos_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (
        49216,
        49152,
        49153,
        49153,
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.get_input_embeddings().weight.shape == (49216, 64)
    assert tok.encode("Hi") == [49152] + tok.encode("Hi", add_special_tokens=False)
    assert torch.isfinite(model.get_input_embeddings().weight[49152:49158]).all()


@pytest.mark.parametrize(
    "fixture, student, match",
    [
        ("tiny_llama", "qwen-7b", "model_type 'llama' is not a qwen2 checkpoint"),
        ("tiny_qwen2", "llama-8b", "model_type 'qwen2' is not a llama3 checkpoint"),
    ],
)
def test_family_mismatch(request, tmp_path, fixture, student, match):
    with pytest.raises(DistillError, match=match):
        patch_checkpoint(request.getfixturevalue(fixture), tmp_path / "out", student)
    assert not (tmp_path / "out").exists()


def test_vocab_mismatch_with_right_model_type(tmp_path, tiny_llama, tiny_qwen2):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_qwen2, ckpt)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llama / name, ckpt / name)  # a Qwen2 model saved with a Llama-3 tokenizer
    with pytest.raises(DistillError, match="token id 151643 is None.*not a qwen2 vocabulary"):
        patch_checkpoint(ckpt, tmp_path / "out", "qwen-7b")


def test_missing_tokenizer_files(tmp_path, tiny_qwen2):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_qwen2, ckpt, ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(DistillError, match="missing tokenizer files"):
        patch_checkpoint(ckpt, tmp_path / "out", "qwen-7b")
    assert not (tmp_path / "out").exists()


def test_cli_patch_and_check(tmp_path, tiny_qwen2):
    runner = CliRunner()
    out = tmp_path / "release"
    result = runner.invoke(app, ["patch", "--student", "qwen-7b", str(tiny_qwen2), str(out)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["patch", "--check", str(out), "--student", "qwen-7b"])
    assert result.exit_code == 0, result.output
    assert "✓" in result.output and "✗" not in result.output
    # break one fact: the check names it and exits non-zero
    gen = json.loads((out / "generation_config.json").read_text())
    (out / "generation_config.json").write_text(json.dumps({**gen, "temperature": 1.0}))
    result = runner.invoke(app, ["patch", "--check", str(out), "--student", "qwen-7b"])
    assert result.exit_code == 1
    assert "generation_config.temperature" in result.output and "✗" in result.output
    result = runner.invoke(app, ["patch", "--student", "llama-8b", str(tiny_qwen2), str(tmp_path / "x")])
    assert result.exit_code == 2 and "error:" in result.output


def test_patch_stage(tmp_path, tiny_qwen2):
    train = tmp_path / "run" / "train"
    shutil.copytree(tiny_qwen2, train / "final")
    finish_manifest(train, start_manifest("train", "abc", {}))
    # qwen-14b keeps the base config.json: the stage checks the unchanged ids/positions path
    recipe = recipe_from_dict({"name": "t", "student": "qwen-14b", "run_dir": str(tmp_path / "run")})
    out = tmp_path / "run" / "patch"
    manifest = patch_stage(recipe, train, out)

    assert manifest.metrics["facts_failed"] == 0 and manifest.metrics["facts_ok"] > 30
    assert "| generation_config.temperature | 0.6 | 0.6 | ✓ |" in (out / "conformance.md").read_text()
    assert {o["file"] for o in manifest.outputs} >= {"release/model.safetensors", "release/tokenizer.json"}
    assert read_manifest(out).started_at == patch_stage(recipe, train, out).started_at  # fresh: skipped
    bad = recipe_from_dict({"name": "t", "student": "llama-8b", "run_dir": str(tmp_path / "run")})
    with pytest.raises(DistillError, match="not a llama3 checkpoint"):
        patch_stage(bad, train, out)
    assert read_manifest(out) is None  # the failed rerun left no manifest behind


def test_added_r1_tokens_start_from_their_analogues(smollm2_path):
    """New EOS starts as the base EOS row, </think> as the mean of "</", "think", ">": not the mean of the vocab."""
    import torch
    from transformers import AutoModelForCausalLM

    from distill.models import load_tokenizer
    from distill.release_files import _base_pieces, prepare_model, release_tokenizer

    tok = release_tokenizer(load_tokenizer(str(smollm2_path)), "smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(smollm2_path, dtype=torch.float32)
    base_eos = model.config.eos_token_id
    prepare_model(model, tok, "smollm2-135m")
    emb = model.get_input_embeddings().weight
    assert torch.equal(emb[tok.convert_tokens_to_ids("<｜end▁of▁sentence｜>")], emb[base_eos])
    pieces = _base_pieces(tok, "</think>")
    assert [tok.decode([i]) for i in pieces] == ["</", "think", ">"]
    assert torch.allclose(emb[tok.convert_tokens_to_ids("</think>")], emb[pieces].mean(dim=0))
