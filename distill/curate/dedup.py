"""Deduplication: exact (normalised-text hash) and near-duplicate (MinHash-LSH, rensa) prompts; identical traces.

Greedy, in input order: the first of a group is kept and the later ones name it.

    "What is 2+2?" / "what is  2 + 2 ?"          -> exact duplicates (normalised text equal)
    two statements differing in one word of 40    -> near duplicates when their 5-word-shingle Jaccard >= 0.8

Near-duplicates: each prompt's set of `shingle`-word windows gets a `num_perm` MinHash (rensa, Rust), kept as
one uint32 [N, num_perm] array (512 MB for 1M prompts x 128). LSH without an index: each band of rows gets a
64-bit key, a stable argsort per band puts equal keys next to each other, and only the texts that share a
band with another text are kept (text, bucket) pairs. Then, in input order, a text's candidates are the kept
texts of its buckets and it names the lowest one whose estimated Jaccard (equal slots / num_perm, as rensa's
RMinHash.jaccard) reaches the threshold: the answer rensa's RMinHashLSH gave, at ~1/5 of its memory. The
banding is chosen so a pair at the threshold is proposed with >= 90% probability (the check then discards
the false candidates).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

import numpy as np

PUNCT_SPACE_RE = re.compile(r" ?([^\w\s]) ?")  # on single-spaced text: the spaces around punctuation
CHUNK = 2000  # prompts hashed per rensa call (bounds the shingle lists: ~60 MB of str at ~40 shingles)
BLOCK = 1024  # candidates compared per numpy call (128 KB of signatures at 128 permutations)


def normalize(text: str) -> str:
    """NFKC, lower case, single spaces, no space around punctuation: formatting differences vanish."""
    text = " ".join(unicodedata.normalize("NFKC", text or "").lower().split())  # str.split: exactly `\s`
    return PUNCT_SPACE_RE.sub(lambda m: m[1], text)  # a callable: ~2x faster than the "\1" template


def text_hash(text: str) -> str:
    return hashlib.blake2b(normalize(text).encode(), digest_size=8).hexdigest()


def exact_duplicates(texts: Iterable[str]) -> list[int | None]:
    """For each text, the index of the earlier text it equals after normalisation, or None."""
    first: dict[str, int] = {}
    out: list[int | None] = []
    for i, text in enumerate(texts):
        key = text_hash(text)
        out.append(first.get(key))
        first.setdefault(key, i)
    return out


def shingles(text: str, k: int) -> list[str]:
    """The k-word windows of the normalised text (the whole text when it is shorter)."""
    ws = normalize(text).split(" ")
    if len(ws) <= k:
        return [" ".join(ws)]
    return list(map(" ".join, zip(*(ws[j:] for j in range(k)), strict=False)))  # shortest: the last window


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.9) -> int:
    """Fewest bands (longest rows) whose candidate probability at `threshold` reaches `recall`."""
    for bands in sorted(b for b in range(1, num_perm + 1) if num_perm % b == 0):
        rows = num_perm // bands
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands
    return num_perm


def signatures(texts: list[str], num_perm: int, shingle: int, seed: int) -> np.ndarray:
    """uint32 [len(texts), num_perm] MinHash signatures (rensa's digests), hashed CHUNK texts at a time."""
    from rensa import RMinHash

    sigs = np.empty((len(texts), num_perm), np.uint32)  # 4 B a slot: 512 MB for 1M texts x 128
    for start in range(0, len(texts), CHUNK):
        token_sets = [shingles(t, shingle) for t in texts[start : start + CHUNK]]
        rows = RMinHash.digest_matrix_from_token_sets(token_sets, num_perm, seed).to_rows()
        sigs[start : start + len(rows)] = np.array(rows, np.int64)  # int64: the fastest list-of-int read
    return sigs


def mix64(h: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser, element-wise on uint64 (wraps mod 2**64 by design)."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def band_keys(band: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of a uint32 [N, rows] band: equal bands, equal keys (and, like rensa's own
    64-bit band hashes, unequal ones collide with probability ~2**-64: a candidate the check then judges)."""
    key = np.full(len(band), 0x9E3779B97F4A7C15, np.uint64)
    for c in range(0, band.shape[1], 2):  # two slots per 64-bit word: lossless, 8 B x N of temporaries
        word = band[:, c].astype(np.uint64) << np.uint64(32)
        if c + 1 < band.shape[1]:
            word |= band[:, c + 1]
        key = mix64(key ^ word)
    return key


def band_buckets(sigs: np.ndarray, bands: int) -> tuple[np.ndarray, np.ndarray]:
    """(text, bucket) pairs, sorted by text, for every text sharing a band with another; buckets are
    numbered across bands. Singleton buckets (most texts, most bands) are never stored."""
    rows = sigs.shape[1] // bands
    texts, buckets, numbered = [], [], 0
    for b in range(bands):
        key = band_keys(sigs[:, b * rows : (b + 1) * rows])
        order = np.argsort(key, kind="stable")  # equal keys: one run, texts ascending
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        sizes = np.diff(np.r_[starts, len(key)])
        shared = np.repeat(sizes >= 2, sizes)
        run = np.repeat(np.cumsum(sizes >= 2) - 1, sizes)  # numbers only the shared runs
        texts.append(order[shared].astype(np.int32))
        buckets.append(run[shared].astype(np.int32) + numbered)
        numbered += int((sizes >= 2).sum())
    text, bucket = np.concatenate(texts), np.concatenate(buckets)
    by_text = np.argsort(text, kind="stable")
    return text[by_text], bucket[by_text]


def first_match(sigs: np.ndarray, i: int, cands: list[int], threshold: float) -> int | None:
    """The lowest candidate whose estimated Jaccard with text i (equal slots / num_perm, exactly rensa's
    RMinHash.jaccard) reaches the threshold; candidates are checked BLOCK at a time so a hit stops early."""
    cands.sort()
    for start in range(0, len(cands), BLOCK):
        block = cands[start : start + BLOCK]
        equal = (sigs[block] == sigs[i]).sum(axis=1)
        hits = np.flatnonzero(equal / sigs.shape[1] >= threshold)
        if len(hits):
            return block[hits[0]]
    return None


def near_duplicates(
    texts: list[str], threshold: float, num_perm: int = 128, shingle: int = 5, seed: int = 0
) -> list[int | None]:
    """For each text, the index of the lowest earlier kept text that shares an LSH band with it and has
    estimated Jaccard >= threshold, or None."""
    if not texts:
        return []
    sigs = signatures(texts, num_perm, shingle, seed)
    text, bucket = band_buckets(sigs, lsh_bands(threshold, num_perm))
    first = [-1] * (int(bucket.max()) + 1 if len(bucket) else 0)  # bucket -> its first kept text
    more: dict[int, list[int]] = {}  # bucket -> its later kept texts (rare: they share a band, J < threshold)
    out: list[int | None] = [None] * len(texts)
    bounds = np.flatnonzero(np.r_[True, text[1:] != text[:-1], True]).tolist() if len(text) else [0]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
        i, mine = int(text[lo]), bucket[lo:hi].tolist()
        cands = {first[b] for b in mine if first[b] >= 0}
        cands.update(c for b in mine if b in more for c in more[b])
        out[i] = first_match(sigs, i, list(cands), threshold) if cands else None
        if out[i] is None:
            for b in mine:
                if first[b] < 0:
                    first[b] = i
                else:
                    more.setdefault(b, []).append(i)
    return out
