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
