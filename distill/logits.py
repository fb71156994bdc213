"""Teacher log-probs in generate rows: the compact columns (≈ 6·K + 6 bytes per token) and their codec.

generate.logprobs: K adds, per completion token t of a sample (T tokens, the teacher's own ids):
  completion_token_ids   list<int32> [T]   the sampled ids (training uses them as is: no re-tokenisation drift)
  teacher_token_logprobs binary  fp16 [T]  log p_teacher(sampled token)
  teacher_top_ids        binary int32 [T, K] the teacher's top-K ids at t, padded with -1
  teacher_top_logprobs   binary  fp16 [T, K] their log-probs, padded with -inf
At K = 20 that is 4 + 2 + 80 + 40 = 126 bytes per token before zstd (the issue's goal: ≤ 128). fp16 keeps log-probs
to ~3 significant digits (|lp| < 16: error ≤ 0.008 nats), ample for a training target. Rows without log-probs
(K = 0, or an imported data set) leave all four null.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLUMNS = ("completion_token_ids", "teacher_token_logprobs", "teacher_top_ids", "teacher_top_logprobs")
PAD_ID = -1


@dataclass
class TokenLogprobs:
    """One sample's teacher signal, as arrays."""

    token_ids: np.ndarray  # int32 [T]
    token_logprobs: np.ndarray  # float32 [T]
    top_ids: np.ndarray  # int32 [T, K], PAD_ID where the teacher gave fewer than K
    top_logprobs: np.ndarray  # float32 [T, K], -inf at pads


def from_lists(
    token_ids: list[int], token_logprobs: list[float], tops: list[list[tuple[int, float]]], k: int
):
    """Build from per-token lists; `tops[t]` holds (id, logprob) pairs, best first, at most k kept."""
    n = len(token_ids)
    top_ids = np.full((n, k), PAD_ID, dtype=np.int32)
    top_lp = np.full((n, k), -np.inf, dtype=np.float32)
    for t, pairs in enumerate(tops):
        pairs = sorted(pairs, key=lambda p: -p[1])[:k]
        top_ids[t, : len(pairs)] = [p[0] for p in pairs]
        top_lp[t, : len(pairs)] = [p[1] for p in pairs]
    return TokenLogprobs(
        np.asarray(token_ids, dtype=np.int32), np.asarray(token_logprobs, dtype=np.float32), top_ids, top_lp
    )


# column -> (Arrow type name, encoder); a sample without log-probs (None) gets nulls
CODECS = {
    "completion_token_ids": ("int32s", lambda lp: lp.token_ids.astype(np.int32).tolist()),
    "teacher_token_logprobs": ("binary", lambda lp: lp.token_logprobs.astype("<f2").tobytes()),
    "teacher_top_ids": ("binary", lambda lp: lp.top_ids.astype("<i4").tobytes()),
    "teacher_top_logprobs": ("binary", lambda lp: lp.top_logprobs.astype("<f2").tobytes()),
}


def encode_column(name: str, lp: TokenLogprobs | None):
    return None if lp is None else CODECS[name][1](lp)


def encode(lp: TokenLogprobs | None) -> dict:
    """The four row columns (all None without log-probs)."""
    return {name: encode_column(name, lp) for name in COLUMNS}


def decode(row: dict) -> TokenLogprobs | None:
    """A row's teacher signal, or None when it has none."""
    if row.get("teacher_top_ids") is None:
        return None
    ids = np.asarray(row["completion_token_ids"], dtype=np.int32)
    n = len(ids)
    top_ids = np.frombuffer(row["teacher_top_ids"], dtype="<i4")
    k = top_ids.size // n if n else 0
    return TokenLogprobs(
        ids,
        np.frombuffer(row["teacher_token_logprobs"], dtype="<f2").astype(np.float32),
        top_ids.reshape(n, k).astype(np.int32),
        np.frombuffer(row["teacher_top_logprobs"], dtype="<f2").astype(np.float32).reshape(n, k),
    )


def as_sampled(top_logprobs: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """[T, K] raw top-K log-probs -> the distribution the sample was drawn from, on the same ids: divided by the
    sampling temperature, renormalised, then cut to the top-p nucleus and renormalised (vLLM's sampler order and
    rule, `apply_top_k_top_p_pytorch`). What lies outside the top K is one lumped entry, so the renormaliser is
    exact on the K ids and approximate for the rest (an upper bound on its share when temperature < 1); a nucleus
    that ends inside the top K leaves the rest at 0. Cut entries get -inf, as padding does. temperature 0
    (greedy): all mass on the top id."""
    coarse = _with_tail(top_logprobs.astype(np.float64))
    if temperature <= 1e-5:  # vLLM samples greedily below its epsilon
        top = coarse == coarse.max(axis=-1, keepdims=True)
        return np.where(top, 0.0, -np.inf)[:, :-1].astype(np.float32)
    x = _log_normalise(coarse / temperature)
    x = _log_normalise(np.where(_outside_nucleus(x, top_p), -np.inf, x))
    return x[:, :-1].astype(np.float32)


def _with_tail(lp: np.ndarray) -> np.ndarray:
    """[T, K] log-probs -> [T, K + 1]: the last column is log(1 - the top K's mass), everything else."""
    mass = np.exp(np.logaddexp.reduce(lp, axis=-1, keepdims=True)).clip(max=1 - 1e-7)
    return np.concatenate([lp, np.log1p(-mass)], axis=-1)


def _log_normalise(x: np.ndarray) -> np.ndarray:
    return x - np.logaddexp.reduce(x, axis=-1, keepdims=True)


def _outside_nucleus(logp: np.ndarray, top_p: float) -> np.ndarray:
    """vLLM's top-p mask: sorted ascending, an entry whose cumulative probability is <= 1 - top_p is cut; the
    largest always stays."""
    order = np.argsort(logp, axis=-1, kind="stable")
    cut = np.cumsum(np.exp(np.take_along_axis(logp, order, axis=-1)), axis=-1) <= 1 - top_p
    cut[:, -1] = False
    mask = np.zeros_like(cut)
    np.put_along_axis(mask, order, cut, axis=-1)
    return mask
