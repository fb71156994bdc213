"""generate.logprobs: K: the teacher's top-K log-probs per completion token, from the real engine, in the shards."""

from __future__ import annotations

import numpy as np
import pytest

from distill import logits
from distill.artifacts import read_manifest, read_shards
from distill.config import GenerateConfig, TeacherConfig, recipe_from_dict
from distill.engines.backends import SamplingSpec, VLLMBackend, parse_response
from distill.engines.prompts import build_messages, load_teacher_tokenizer, make_request
from distill.errors import DistillError
from distill.generate.run import generate
from distill.vocab_identity import vocab_hash


def _requests(smollm2_path, questions=("What is 3+4?", "Name a colour.")):
    tok = load_teacher_tokenizer(TeacherConfig(model=str(smollm2_path)))
    cfg = GenerateConfig()
    return tok, [
        make_request(tok, build_messages(q, "general", cfg), False, 5 + i) for i, q in enumerate(questions)
    ]


def test_vllm_logprobs_are_the_model_s_own_distribution(vllm_engine, smollm2_path):
    """Top-K ids and log-probs equal a transformers forward pass of the same model on prompt + completion
    (raw log-probs: before temperature / top-p), and the sampled token's log-prob is its entry."""
    import torch
    from transformers import AutoModelForCausalLM

    tok, reqs = _requests(smollm2_path)
    k = 5
    outs = VLLMBackend(vllm_engine).generate(reqs, SamplingSpec(n=2, max_tokens=12, logprobs=k))
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_path), dtype=torch.float32)
    for req, samples in zip(reqs, outs, strict=True):
        for c in samples:
            lp = c.logprobs
            assert lp.top_ids.shape == (c.completion_tokens, k) == lp.top_logprobs.shape
            assert tok.decode(lp.token_ids.tolist()).startswith(c.text[:5])
            ids = torch.tensor([req.prompt_token_ids + lp.token_ids.tolist()])
            with torch.no_grad():
                ref = torch.log_softmax(model(ids).logits[0, len(req.prompt_token_ids) - 1 : -1], -1)
            top_lp, top_ids = ref.topk(k, dim=-1)
            np.testing.assert_allclose(lp.top_logprobs, top_lp.numpy(), atol=2e-3)
            agree = (lp.top_ids == top_ids.numpy()).mean()
            assert agree > 0.95  # near-ties may swap order in fp32
            sampled = ref.gather(-1, torch.tensor(lp.token_ids, dtype=torch.long)[:, None])[:, 0]
            np.testing.assert_allclose(lp.token_logprobs, sampled.numpy(), atol=2e-3)


def test_stage_stores_them_compactly_and_records_k_and_the_vocabulary(tmp_path, smollm2_path, vllm_engine):
    recipe = recipe_from_dict(
        {
            "name": "lp",
            "run_dir": str(tmp_path / "run"),
            "teacher": {
                "model": str(smollm2_path),
                "thinking": False,
                "dtype": "float32",
                "enforce_eager": True,
            },
            "generate": {
                "prompts": [{"source": "gsm8k", "split": "test", "limit": 3, "domain": "general"}],
                "n": 2,
                "max_tokens": 16,
                "force_think": False,
                "logprobs": 20,
            },
        }
    )
    out = tmp_path / "run" / "generate"
    manifest = generate(recipe, None, out, backend=VLLMBackend(vllm_engine))
    rows = list(read_shards(out))
    assert len(rows) == 6
    tok = load_teacher_tokenizer(recipe.teacher)
    for r in rows:
        lp = logits.decode(r)
        assert len(lp.token_ids) == r["completion_tokens"] and lp.top_ids.shape[1] == 20
        assert tok.decode(lp.token_ids.tolist(), skip_special_tokens=True).strip() == r["completion"].strip()
        assert (np.diff(lp.top_logprobs, axis=1) <= 1e-3).all()  # best first
    stored = sum(
        4 * len(r["completion_token_ids"]) + sum(len(r[c]) for c in logits.COLUMNS[1:]) for r in rows
    )
    assert stored / sum(r["completion_tokens"] for r in rows) == 126  # <= 128 B/token at K = 20, before zstd
    assert manifest.metrics["logprobs_k"] == 20
    assert manifest.metrics["teacher_vocab"] == vocab_hash(tok)
    assert '"logprobs": 20' in rows[0]["sampling"]
    assert read_manifest(out) is not None
    _curate_carries_the_columns(recipe, out, rows)


def _curate_carries_the_columns(recipe, src, rows):
    """kept/ (and dropped/) rows keep the teacher's log-prob columns byte for byte: kd trains on kept/."""
    from distill.curate.run import curate

    recipe.curate.decontaminate.benchmarks = []
    recipe.curate.filters.drop_truncated = False  # 16-token samples: keep them, this is about columns
    recipe.curate.select.keep_unverified_domains = True
    manifest = curate(recipe, src, src.parent / "curate")
    by_key = {(r["prompt_id"], r["sample_index"]): r for r in rows}
    kept = list(read_shards(src.parent / "curate" / "kept"))
    assert kept and manifest.rows_out == len(kept)
    for r in kept + list(read_shards(src.parent / "curate" / "dropped")):
        want = by_key[(r["prompt_id"], r["sample_index"])]
        assert all(r[c] == want[c] for c in logits.COLUMNS)


def test_k_beyond_what_backends_return_is_a_clear_error(tmp_path, smollm2_path):
    recipe = recipe_from_dict(
        {
            "name": "lp",
            "run_dir": str(tmp_path / "run"),
            "teacher": {"model": str(smollm2_path), "thinking": False},
            "generate": {
                "prompts": [{"source": "gsm8k", "split": "test", "limit": 1}],
                "force_think": False,
                "logprobs": 21,
            },
        }
    )
    with pytest.raises(DistillError, match=r"generate.logprobs: 21 is outside 0..20"):
        generate(recipe, None, tmp_path / "run" / "generate")
    assert not (tmp_path / "run" / "generate" / "manifest.json").exists()


def test_server_replies_parse_to_ids_for_both_apis_and_text_tokens_are_refused():
    completions = {
        "choices": [
            {
                "text": "ab",
                "finish_reason": "stop",
                "logprobs": {
                    "tokens": ["token_id:7", "token_id:9"],
                    "token_logprobs": [-0.5, -3.0],
                    # the sampled token 9 is not in the top 2 at t=1: the server lists it as a third entry
                    "top_logprobs": [
                        {"token_id:7": -0.5, "token_id:1": -1.2},
                        {"token_id:4": -0.1, "token_id:5": -2.5, "token_id:9": -3.0},
                    ],
                },
            }
        ]
    }
    lp = parse_response(completions, 2).logprobs
    assert lp.token_ids.tolist() == [7, 9] and lp.top_ids.tolist() == [[7, 1], [4, 5]]
    chat = {
        "choices": [
            {
                "message": {"content": "a"},
                "logprobs": {
                    "content": [
                        {
                            "token": "token_id:3",
                            "logprob": -0.2,
                            "top_logprobs": [{"token": "token_id:3", "logprob": -0.2}],
                        }
                    ]
                },
            }
        ]
    }
    assert parse_response(chat, 1).logprobs.top_ids.tolist() == [[3]]
    text_keyed = {
        "choices": [
            {
                "text": "a",
                "logprobs": {"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{"a": -1.0}]},
            }
        ]
    }
    with pytest.raises(DistillError, match="keyed by token text"):
        parse_response(text_keyed, 1)
    assert parse_response(completions, 0).logprobs is None  # not asked for: not parsed
