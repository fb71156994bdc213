"""The teacher log-prob columns: round trip, padding, bytes per token."""

from __future__ import annotations

import numpy as np

from distill import logits


def test_round_trip_pads_short_rows_and_keeps_fp16_precision():
    tops = [[(5, -0.1), (9, -2.5), (1, -3.0)], [(7, -0.01)]]
    lp = logits.from_lists([5, 7], [-0.1, -0.01], tops, k=3)
    row = logits.encode(lp)
    back = logits.decode(row)
    assert back.token_ids.tolist() == [5, 7]
    assert back.top_ids.tolist() == [[5, 9, 1], [7, -1, -1]]
    assert np.isneginf(back.top_logprobs[1, 1:]).all()
    np.testing.assert_allclose(back.top_logprobs[0], [-0.1, -2.5, -3.0], atol=2e-3)
    np.testing.assert_allclose(back.token_logprobs, [-0.1, -0.01], atol=1e-4)


def test_top_k_keeps_the_best_k_in_order():
    lp = logits.from_lists([3], [-1.0], [[(1, -4.0), (2, -0.5), (3, -1.0)]], k=2)
    assert lp.top_ids.tolist() == [[2, 3]]


def test_bytes_per_token_at_k20_within_128():
    n, k = 1000, 20
    lp = logits.from_lists(list(range(n)), [-1.0] * n, [[(i, -1.0 - i / 10) for i in range(k)]] * n, k)
    row = logits.encode(lp)
    size = 4 * len(row["completion_token_ids"]) + sum(len(row[c]) for c in logits.COLUMNS[1:])
    assert size / n == 126


def test_rows_without_logprobs_decode_to_none():
    assert logits.decode(logits.encode(None)) is None


def _vllm_sampled(raw: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """The distribution vLLM's sampler draws from: logits / temperature, then its top-p mask
    (vllm/v1/sample/ops/topk_topp_sampler.py apply_top_k_top_p_pytorch), as probabilities."""
    import torch
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    logits = torch.tensor(raw, dtype=torch.float64) / temperature
    masked = apply_top_k_top_p_pytorch(logits, None, torch.full((len(raw),), top_p, dtype=torch.float64))
    return masked.softmax(-1).numpy()


def test_as_sampled_is_the_distribution_vllm_samples_from():
    """kd.target: sampled. With every id but one in the top K, the lumped rest is that one id, so the result must
    equal vLLM's own temperature + top-p processing on the full vocabulary."""
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 2.5, size=(64, 12))
    raw -= np.logaddexp.reduce(raw, axis=-1, keepdims=True)  # full-vocabulary log-probs, V = 12
    order = np.argsort(-raw, axis=-1)[:, :11]  # the top K = 11 the teacher returned, best first
    top = np.take_along_axis(raw, order, axis=-1).astype(np.float32)
    for temperature, top_p in [(0.6, 0.95), (1.0, 0.9), (0.3, 0.5), (1.3, 1.0)]:
        want = np.take_along_axis(_vllm_sampled(raw, temperature, top_p), order, axis=-1)
        got = np.exp(logits.as_sampled(top, temperature, top_p))
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_as_sampled_sharpens_and_cuts_a_r1_style_row():
    """At R1's sampling settings (0.6, 0.95) a row of probabilities 0.5, 0.3, 0.15, 0.04 (+ 0.01 elsewhere) becomes
    0.5^(1/0.6) ... renormalised, and the 0.04 id falls outside the nucleus; padding stays -inf; greedy: one-hot."""
    top = np.log(np.array([[0.5, 0.3, 0.15, 0.04]], dtype=np.float32))
    got = np.exp(logits.as_sampled(top, 0.6, 0.95))[0]
    sharp = np.array([0.5, 0.3, 0.15, 0.04, 0.01]) ** (1 / 0.6)
    sharp /= sharp.sum()
    assert sharp[:3].sum() > 0.95 and sharp[3] > 0  # the 0.04 id is cut by top-p, not by tempering
    np.testing.assert_allclose(got, [*sharp[:3] / sharp[:3].sum(), 0.0], atol=1e-6)
    padded = np.array([[np.log(0.7), np.log(0.2), -np.inf]], dtype=np.float32)
    assert np.isneginf(logits.as_sampled(padded, 0.6, 1.0)[0, 2])
    assert np.exp(logits.as_sampled(padded, 0.0, 0.95)).tolist() == [[1.0, 0.0, 0.0]]
