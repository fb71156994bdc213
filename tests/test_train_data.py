"""SFT data: R1 rendering with the release tokenizer, prompt masking, EOS, overlong handling, BFD packing."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from distill.artifacts import write_parquet
from distill.errors import DistillError
from distill.train.data import (
    ASSISTANT,
    IGNORE,
    build_tokens,
    collate_packed,
    collate_padded,
    encode,
    epoch_micro_batches,
    fit,
    load_tokens,
    pack_bfd,
    prompt_length,
    render,
    step_micro_batches,
    steps_per_epoch,
    token_utilisation,
    training_chat,
    training_template,
    training_units,
)

PROBLEM = "What is 12 + 30? Please reason step by step, and put your final answer within \\boxed{}."
ROW = {
    "messages": [{"role": "user", "content": PROBLEM}],
    "reasoning": "\n12 + 30 = 42.\n",
    "answer": "\n\nThe answer is \\boxed{42}.",
    "completion": "",
    "prompt_id": "p0",
}


def release(student: str, smollm2_path: Path | None = None):
    from distill.models import load_tokenizer
    from distill.release_files import release_tokenizer
    from distill.vocab import base_tokenizer

    family = {"qwen-7b": "qwen2", "llama-8b": "llama3"}.get(student)
    base = base_tokenizer(family) if family else load_tokenizer(str(smollm2_path))
    return release_tokenizer(base, student)


@pytest.fixture(scope="module", params=["qwen-7b", "llama-8b", "smollm2-135m"])
def tokenizer(request):
    path = request.getfixturevalue("smollm2_path") if request.param == "smollm2-135m" else None
    return release(request.param, path)


def encoded(tokenizer, row=ROW):
    ids = encode([render(training_chat(row, "row 0"), tokenizer, training_template())], tokenizer)[0]
    return ids, prompt_length(ids, tokenizer.convert_tokens_to_ids(ASSISTANT), "row 0")


def test_prompt_ids_equal_the_release_inference_prompt(tokenizer):
    ids, n_prompt = encoded(tokenizer)
    chat = [{"role": "user", "content": PROBLEM}]
    inference = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)["input_ids"]
    # inference prompt = bos <｜User｜>problem<｜Assistant｜><think>\n : training ids continue it exactly
    assert ids[: len(inference)] == inference
    assert ids[n_prompt - 1] == tokenizer.convert_tokens_to_ids(ASSISTANT)
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1


def test_only_the_completion_is_trained_and_ends_with_eos(tokenizer):
    ids, n_prompt = encoded(tokenizer)
    target = collate_packed([(np.asarray(ids), n_prompt)])["targets"][0].tolist()
    trained = [t for t in target if t != IGNORE]
    assert target[: n_prompt - 1] == [IGNORE] * (n_prompt - 1)
    assert trained == ids[n_prompt:]
    assert trained[-1] == tokenizer.eos_token_id  # EOS is learned
    text = tokenizer.decode(trained)
    assert text == "<think>\n12 + 30 = 42.\n</think>\n\nThe answer is \\boxed{42}.<｜end▁of▁sentence｜>"


def test_padding_never_masks_eos_even_when_pad_is_eos():
    eos = 2
    samples = [(np.array([1, 5, 6, 7, eos]), 2), (np.array([1, 5, 8, eos, 9, 10, eos]), 2)]
    batch = collate_padded(samples, pad_id=eos)
    assert batch["input_ids"][0].tolist() == [1, 5, 6, 7, eos, eos, eos]
    assert batch["targets"][0].tolist() == [IGNORE, 6, 7, eos, IGNORE, IGNORE, IGNORE]
    assert batch["targets"][1].tolist() == [IGNORE, 8, eos, 9, 10, eos, IGNORE]
    assert batch["attention_mask"].sum().item() == 12


def test_packed_batch_restarts_positions_and_never_predicts_across_samples():
    samples = [(np.array([1, 5, 6, 2]), 2), (np.array([1, 7, 8, 9, 2]), 3)]
    batch = collate_packed(samples)
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
    assert batch["targets"][0].tolist() == [IGNORE, 6, 2, IGNORE, IGNORE, IGNORE, 9, 2, IGNORE]
    assert batch["cu_seq_lens"].tolist() == [0, 4, 9] and batch["max_seq_len"] == 5


@pytest.mark.parametrize(
    ("length", "n_prompt", "overlong", "expected"),
    [
        (8, 3, "truncate", (8, None)),  # fits exactly
        (12, 3, "truncate", (8, "truncated")),  # cut to max_length, loses its EOS
        (12, 3, "drop", (12, "overlong")),
        (12, 8, "truncate", (12, "prompt_too_long")),  # no completion token would remain
    ],
)
def test_fit_max_length(length, n_prompt, overlong, expected):
    ids, reason = fit(list(range(length)), n_prompt, 8, overlong)
    assert (len(ids), reason) == expected


def test_bfd_worked_example_and_invariants():
    assert sorted(map(sorted, pack_bfd([6, 5, 4, 3, 2], 10))) == [[0, 2], [1, 3, 4]]
    rng = random.Random(0)
    lengths = [min(4096, int(rng.lognormvariate(6.5, 0.8))) for _ in range(3000)]
    bins = pack_bfd(lengths, 4096)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert max(sum(lengths[i] for i in b) for b in bins) <= 4096
    assert token_utilisation(np.array(lengths), bins, 4096, packing=True) > 0.99


def test_schedule_gives_every_rank_the_same_number_of_micro_batches():
    units = training_units(np.array([5, 3, 7, 2, 2, 9, 4]), 10, packing=True)
    micro = epoch_micro_batches(units, micro_batch_size=1, seed=0, epoch=0)
    world, accum = 2, 2
    steps = steps_per_epoch(len(micro), world, accum)
    seen = [
        m for s in range(steps) for r in range(world) for m in step_micro_batches(micro, s, world, r, accum)
    ]
    assert len(seen) == steps * world * accum
    assert {tuple(m) for m in seen} == {tuple(m) for m in micro}  # wrap-around only repeats, never skips
    assert epoch_micro_batches(units, 1, seed=0, epoch=1) != micro  # reshuffled per epoch


def test_build_tokens_counts_truncation_and_drops(tmp_path):
    tok = release("qwen-7b")
    long = dict(ROW, reasoning="word " * 400)
    write_parquet([ROW, long, ROW], tmp_path / "kept" / "part-00000.parquet")
    for overlong, samples, dropped, truncated in [("truncate", 3, {}, 1), ("drop", 2, {"overlong": 1}, 0)]:
        build_tokens(tmp_path, tok, 128, overlong, tmp_path / f"tok-{overlong}", key="k")
        data = load_tokens(tmp_path / f"tok-{overlong}")
        assert (len(data), data.stats["dropped"], data.stats["truncated"]) == (samples, dropped, truncated)
        assert data.lengths().max() <= 128 and data.stats["rows_in"] == 3


def test_bad_rows_and_missing_shards_name_the_problem(tmp_path):
    tok = release("qwen-7b")
    with pytest.raises(DistillError, match="no part-"):
        build_tokens(tmp_path, tok, 128, "truncate", tmp_path / "tok", key="k")
    write_parquet([ROW, dict(ROW, messages=[])], tmp_path / "kept" / "part-00000.parquet")
    with pytest.raises(DistillError, match=r"part-00000.parquet: row 1: field 'messages'"):
        build_tokens(tmp_path, tok, 128, "truncate", tmp_path / "tok", key="k")
