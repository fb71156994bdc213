"""Logit objectives refuse a teacher/student pair whose ids mean different tokens, naming the first one."""

from __future__ import annotations

import pytest

from distill.errors import DistillError
from distill.models import load_tokenizer
from distill.vocab_identity import check_same_vocab, first_difference, id_table, table_hash


def test_first_difference_allows_an_extended_student():
    assert first_difference(["a", "b"], ["a", "b", "<think>"]) is None  # student appends: fine
    assert first_difference(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert first_difference(["a", "b", "c"], ["a", "b"]) == 2  # student lacks a teacher id


def test_hash_is_of_the_id_order_not_the_token_set():
    assert table_hash(["a", "b"]) != table_hash(["b", "a"])
    assert table_hash(["ab", ""]) != table_hash(["a", "b"])  # separators: no ambiguity across boundaries
    assert len(table_hash(["a"])) == 16


def test_same_tokenizer_passes_and_records_both_hashes(smollm2_path):
    tok = load_tokenizer(str(smollm2_path))
    got = check_same_vocab(tok, tok, "smollm2", "smollm2")
    assert got["teacher_vocab"] == got["student_vocab"]
    assert len(id_table(tok)) == 49152 and id_table(tok)[2] == "<|im_end|>"


def test_release_student_extends_its_teacher(smollm2_path):
    """The demo student's release tokenizer appends the R1 tokens after SmolLM2's ids: still one vocabulary."""
    from distill.release_files import release_tokenizer

    base = load_tokenizer(str(smollm2_path))
    student = release_tokenizer(base, "smollm2-135m")
    got = check_same_vocab(base, student, "smollm2-135m", "smollm2-135m (release)")
    assert got["teacher_vocab"] != got["student_vocab"]


def test_mismatch_names_both_tokenizers_and_the_first_differing_id(smollm2_path, tiny_qwen2):
    teacher = load_tokenizer(str(tiny_qwen2))
    student = load_tokenizer(str(smollm2_path))
    with pytest.raises(DistillError) as err:
        check_same_vocab(teacher, student, "Qwen2.5-tiny", "SmolLM2-135M")
    msg = str(err.value)
    assert "Qwen2.5-tiny" in msg and "SmolLM2-135M" in msg
    i = first_difference(id_table(teacher), id_table(student))
    assert f"id {i} is" in msg and i == 0  # Qwen's id 0 is "!", SmolLM2's "<|endoftext|>"
