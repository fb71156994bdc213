"""Deduplication: exact (normalised-text hash) and near-duplicate (MinHash-LSH, rensa) prompts; identical traces.

Greedy, in input order: the first of a group is kept and the later ones name it.

    "What is 2+2?" / "what is  2 + 2 ?"          -> exact duplicates (normalised text equal)
    two statements differing in one word of 40    -> near duplicates when their 5-word-shingle Jaccard >= 0.8

Near-duplicates: each prompt's set of `shingle`-word windows gets a `num_perm` MinHash (rensa, Rust); an LSH
index proposes candidates among the prompts kept so far and a candidate counts only if the estimated Jaccard
reaches the threshold. The banding is chosen so a pair at the threshold is proposed with >= 90% probability
(the check then discards the false candidates).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

SPACE_RE = re.compile(r"\s+")
PUNCT_SPACE_RE = re.compile(r"\s*([^\w\s])\s*")
CHUNK = 20_000  # prompts hashed per rensa call (bounds memory)


def normalize(text: str) -> str:
    """NFKC, lower case, no space around punctuation, single spaces: formatting differences vanish."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    return SPACE_RE.sub(" ", PUNCT_SPACE_RE.sub(r"\1", text)).strip()


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
    return [" ".join(ws[i : i + k]) for i in range(len(ws) - k + 1)]


def lsh_bands(threshold: float, num_perm: int, recall: float = 0.9) -> int:
    """Fewest bands (longest rows) whose candidate probability at `threshold` reaches `recall`."""
    for bands in sorted(b for b in range(1, num_perm + 1) if num_perm % b == 0):
        rows = num_perm // bands
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands
    return num_perm


def near_duplicates(
    texts: list[str], threshold: float, num_perm: int = 128, shingle: int = 5, seed: int = 0
) -> list[int | None]:
    """For each text, the index of an earlier kept text with estimated Jaccard >= threshold, or None."""
    from rensa import RMinHash, RMinHashLSH

    lsh = RMinHashLSH(threshold, num_perm, lsh_bands(threshold, num_perm))
    kept: dict[int, RMinHash] = {}
    out: list[int | None] = []
    for start in range(0, len(texts), CHUNK):
        token_sets = [shingles(t, shingle) for t in texts[start : start + CHUNK]]
        for offset, mh in enumerate(RMinHash.from_token_sets(token_sets, num_perm, seed)):
            i = start + offset
            match = next((c for c in sorted(lsh.query(mh)) if mh.jaccard(kept[c]) >= threshold), None)
            out.append(match)
            if match is None:
                lsh.insert(i, mh)
                kept[i] = mh
    return out
