"""Decontamination: word n-gram overlap of training prompts (and optionally traces) with the benchmark registry.

Texts are lower-cased and split into runs of letters and digits (punctuation and LaTeX braces drop out), each
word hashed once, and each window of n words combined into one 64-bit hash with numpy; membership is a
`searchsorted` into the sorted benchmark hashes. Worked example with n = 3:

    benchmark  "Find the value of $x$ if $2x = 6$."  -> find the value | the value of | value of x | ...
    prompt     "Compute the value of x."             -> compute the value | the value of | value of x
    shared     "the value of", "value of x"          -> contaminated, unless the n-gram is boilerplate

Boilerplate never counts: an n-gram found in more than max(max_corpus_df x N, 5) of the N checked texts
(distinct groups: traces count once per prompt) is common phrasing of the training corpus ("express your
answer as a common fraction"; run after prompt dedup, a copied problem appears once), and one in 3 or more benchmark
items is phrasing too ("m and n are relatively prime positive integers"). Benchmark n-grams with fewer than
half content words (2+ characters, not numbers: "0 1 2 3 4 5 6 7", "a sqrt 2 b sqrt 3 c sqrt") are not
indexed: they are notation, not a problem's wording. A verbatim copy (the same word sequence) of a benchmark
item always counts, however short or notation-heavy it is. The index records each benchmark's item count and a content hash, so a
report says exactly which benchmark version it was checked against.
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# punctuation, LaTeX braces and backslashes separate words: "\\frac{1}{2}" -> frac 1 2
SEPARATORS = str.maketrans(
    {
        c: " "
        for c in string.punctuation + "，。：；？！、（）《》「」“”‘’—…"
        "\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
        "\u200a\u2028\u2029\u202f\u205f\u3000"
    }
)  # and Unicode spaces
DOC_SEP = "\x00"  # joins the texts of a batch; removed from the texts themselves first
BASE = 0x100000001B3  # odd: the word hash's polynomial base (FNV-64 prime)
_SPACE = np.zeros(256, bool)
_SPACE[[0, 9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # what str.split() splits on, in ASCII, and DOC_SEP
BITMAP_BITS = 22  # 4 MiB of bools: at ~100k benchmark n-grams ~2% of lookups reach the binary search


def _splitmix64(i: int) -> int:
    z = (i * 0x9E3779B97F4A7C15) % 2**64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


# one random odd multiplier per window position: the window hash depends on word order. They must be
# unrelated: with an arithmetic progression "a b b a" and "b a a b" would collide.
_MULT = [_splitmix64(i + 1) | 1 for i in range(256)]
BOILERPLATE_MIN_DOCS = 5
TEMPLATE_MIN_ITEMS = 3
EXAMPLES = 3  # per benchmark in the report
BATCH_CHARS = 1 << 20  # characters per tokenised batch: ~30 MB of numpy temporaries


def words(text: str) -> list[str]:
    return text.lower().translate(SEPARATORS).split()


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads a summed hash over all 64 bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass
class Tokens:
    """The words of a batch of texts as byte ranges of one UTF-8 buffer, hashed without a Python object per
    word: word hash = sum (byte_j + 1) B^(j - start) mod 2^64, from one prefix sum over the buffer."""

    raw: np.ndarray  # uint8: the lower-cased texts joined by DOC_SEP, separators turned into spaces
    starts: np.ndarray  # byte offset of each word
    ends: np.ndarray  # byte offset after each word
    hashes: np.ndarray  # uint64 per word
    doc: np.ndarray  # document of each word
    n_docs: int

    def text(self, first: int, last: int) -> str:
        """Words first..last (inclusive) as text, single-spaced."""
        return " ".join(
            bytes(self.raw[self.starts[first] : self.ends[last]]).decode(errors="replace").split()
        )


_POWERS: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]  # B^i and B^-i, grown on demand


def _powers(length: int) -> tuple[np.ndarray, np.ndarray]:
    if len(_POWERS[0]) < length:
        size = max(length, 2 * len(_POWERS[0]), 2 * BATCH_CHARS)
        for k, base in enumerate((BASE, pow(BASE, -1, 2**64))):  # B is odd, so invertible mod 2^64
            arr = np.empty(size, np.uint64)
            arr[0], filled = 1, 1
            while filled < size:  # doubling: B^(f..2f-1) = B^(0..f-1) * B^f, in vectorised steps
                step = min(filled, size - filled)
                arr[filled : filled + step] = arr[:step] * np.uint64(pow(base, filled, 2**64))
                filled += step
            _POWERS[k] = arr
    return _POWERS[0][:length], _POWERS[1][:length]


def tokenize(texts: list[str]) -> Tokens:
    clean = [t.replace(DOC_SEP, " ") if DOC_SEP in t else t for t in texts]
    raw = np.frombuffer(DOC_SEP.join(clean).lower().translate(SEPARATORS).encode(), np.uint8)
    space = _SPACE[raw]
    edge = np.diff(space.view(np.int8), prepend=np.int8(1), append=np.int8(1))
    starts, ends = np.flatnonzero(edge == -1), np.flatnonzero(edge == 1)
    pw, inv = _powers(len(raw))
    prefix = np.zeros(len(raw) + 1, np.uint64)
    np.cumsum((raw.astype(np.uint64) + np.uint64(1)) * pw, out=prefix[1:])
    hashes = _mix((prefix[ends] - prefix[starts]) * inv[starts])
    doc = np.searchsorted(np.flatnonzero(raw == ord(DOC_SEP)), starts)  # separators before each word
    return Tokens(raw, starts, ends, hashes, doc, len(texts))


def ngram_hashes(tok: Tokens, n: int, min_content: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hash, doc, first word) of every n-word window inside one document with at least `min_content`
    content words (2+ bytes, not all digits)."""
    w, doc = tok.hashes, tok.doc
    m = len(w) - n + 1
    if m <= 0:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
    g = np.zeros(m, np.uint64)
    for t in range(n):
        g += w[t : t + m] * np.uint64(_MULT[t])  # uint64 arithmetic wraps mod 2^64, as intended
    keep = doc[:m] == doc[n - 1 :]
    if min_content:
        digits = np.concatenate([[0], np.cumsum((tok.raw >= ord("0")) & (tok.raw <= ord("9")))])
        length = tok.ends - tok.starts
        content = (length > 1) & (digits[tok.ends] - digits[tok.starts] < length)
        csum = np.concatenate([[0], np.cumsum(content)])
        keep &= (csum[n:] - csum[:m]) >= min_content
    return _mix(g[keep]), doc[:m][keep], np.flatnonzero(keep)


def full_text_hashes(tok: Tokens) -> np.ndarray:
    """One hash per document of its whole word sequence (0 for a document without words)."""
    starts = np.searchsorted(tok.doc, np.arange(tok.n_docs))
    pos = np.arange(len(tok.hashes)) - starts[tok.doc]  # position of each word in its document
    terms = _mix(tok.hashes ^ _mix(pos.astype(np.uint64) + np.uint64(_MULT[0])))
    out = np.zeros(tok.n_docs, np.uint64)
    nonempty = np.bincount(tok.doc, minlength=tok.n_docs) > 0
    if nonempty.any():
        out[nonempty] = np.add.reduceat(
            terms, starts[nonempty]
        )  # words are in document order; wraps mod 2^64
    return out


@dataclass
class BenchIndex:
    n: int
    hashes: np.ndarray  # sorted unique n-gram hashes of all benchmarks
    owners: np.ndarray  # for each hash, the index of one item that holds it
    bitmap: np.ndarray  # bool[2^BITMAP_BITS]: top bits of every hash, a cheap first membership test
    items: list[tuple[str, str]]  # (benchmark, prompt_id)
    full: dict[int, int] = field(default_factory=dict)  # whole-text hash -> item (verbatim copies)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    template_ngrams: int = 0


def build_index(benchmarks: dict[str, list[dict[str, Any]]], n: int) -> BenchIndex:
    """Index benchmark prompt rows ({name: rows with prompt_id, problem}) by n-gram hash."""
    items = [(name, r["prompt_id"]) for name, rows in benchmarks.items() for r in rows]
    tok = tokenize([r["problem"] for rows in benchmarks.values() for r in rows])
    full = {}
    for i, fh in enumerate(full_text_hashes(tok).tolist()):
        full.setdefault(fh, i)
    full.pop(0, None)  # items without words
    h, doc, _ = ngram_hashes(tok, n, min_content=(n + 1) // 2)
    pairs = np.unique(np.stack([h, doc.astype(np.uint64)]), axis=1)  # one entry per (n-gram, item)
    hashes, first, df = np.unique(pairs[0], return_index=True, return_counts=True)
    keep = df < TEMPLATE_MIN_ITEMS  # in 3+ items (any benchmarks): phrasing, not a problem
    hashes, owners = hashes[keep], pairs[1][first][keep].astype(np.int64)
    bitmap = np.zeros(1 << BITMAP_BITS, bool)
    bitmap[(hashes >> np.uint64(64 - BITMAP_BITS)).astype(np.int64)] = True
    versions, owner_names = {}, np.array([name for name, _ in items])[owners] if len(owners) else np.array([])
    for name, rows in benchmarks.items():
        digest = hashlib.sha256("\n".join(r["prompt_id"] + "\t" + r["problem"] for r in rows).encode())
        versions[name] = {
            "items": len(rows),
            "ngrams": int((owner_names == name).sum()),
            "sha256": digest.hexdigest()[:16],
        }
    return BenchIndex(n, hashes, owners, bitmap, items, full, versions, int((~keep).sum()))


def benchmarks_digest(names: list[str]) -> str:
    """One hash over the benchmark items decontamination reads: a new benchmark version reruns curation."""
    from distill.data import load_prompts, split_spec

    h = hashlib.sha256()
    for name in names:
        for row in load_prompts(split_spec(name)[0], split_spec(name)[1] or "test"):
            h.update(f"{name}\t{row['prompt_id']}\t{row['problem']}\n".encode())
    return h.hexdigest()[:16]


def load_index(names: list[str], n: int) -> BenchIndex:
    """Benchmarks through the data-source registry (DISTILL_DATA_DIR or the Hub): a registry benchmark's test
    split, or any source's held-out split named inline ("gsm8k:test")."""
    from distill.data import get_source, load_prompts, split_spec
    from distill.errors import DistillError

    for name in names:
        base, split = split_spec(name)
        if split is None and not get_source(base).benchmark:
            raise DistillError(
                f"decontaminate.benchmarks: '{name}' is a training source; name a held-out split ('{name}:test')"
            )
    return build_index(
        {name: load_prompts(split_spec(name)[0], split_spec(name)[1] or "test") for name in names}, n
    )


def _lookup(index: BenchIndex, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices into h of the hits, owning item of each)."""
    if len(index.hashes) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    cand = np.flatnonzero(index.bitmap[(h >> np.uint64(64 - BITMAP_BITS)).astype(np.int64)])
    pos = np.minimum(np.searchsorted(index.hashes, h[cand]), len(index.hashes) - 1)
    hit = index.hashes[pos] == h[cand]
    return cand[hit], index.owners[pos[hit]]


Hit = tuple[int, int, int, str]  # (text index, n-gram hash, benchmark item, the n-gram's words)


def scan(batches: Iterable[list[str]], index: BenchIndex) -> tuple[list[Hit], dict[int, dict[str, Any]], int]:
    """Stream texts batch by batch: every n-gram hit, verbatim copies of benchmark items, and the text count."""
    hits: list[Hit] = []
    exact: dict[int, dict[str, Any]] = {}
    seen = 0
    for texts in batches:
        tok = tokenize(texts)
        h, doc, start = ngram_hashes(tok, index.n)
        where, owner = _lookup(index, h)
        for i, o in zip(where.tolist(), owner.tolist(), strict=True):
            first = int(start[i])
            hits.append((seen + int(doc[i]), int(h[i]), o, tok.text(first, first + index.n - 1)))
        for d, fh in enumerate(full_text_hashes(tok).tolist()):
            if fh and (item := index.full.get(fh)) is not None:
                exact[seen + d] = _hit(index, item, " ".join(words(texts[d])[: index.n]))
        seen += len(texts)
    return hits, exact, seen


def decide(
    hits: list[Hit],
    exact: dict[int, dict[str, Any]],
    n_texts: int,
    index: BenchIndex,
    max_corpus_df: float,
    groups: list[str] | None = None,
) -> tuple[dict[int, dict[str, Any]], int]:
    """{text index: first non-boilerplate hit}, and how many benchmark n-grams were boilerplate here.
    `groups` (e.g. the prompt of each trace): document frequency counts distinct groups, not texts."""
    key = (lambda d: groups[d]) if groups is not None else (lambda d: d)
    df = Counter(h for _, h in {(key(d), h) for d, h, _, _ in hits})
    n_docs = len(set(groups)) if groups is not None else n_texts
    limit = max(max_corpus_df * n_docs, BOILERPLATE_MIN_DOCS)
    boiler = {h for h, count in df.items() if count > limit}
    found = dict(exact)
    for d, h, owner, ngram in hits:
        if h not in boiler and d not in found:
            found[d] = _hit(index, owner, ngram)
    return found, len(boiler)


def batched(texts: Iterable[str], chars: int = BATCH_CHARS) -> Iterator[list[str]]:
    """Consecutive runs of texts of about `chars` characters: the unit one numpy pass handles."""
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text) + 1
        if size >= chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def find_contamination(
    texts: list[str], index: BenchIndex, max_corpus_df: float
) -> tuple[list[dict[str, Any] | None], int]:
    """For each text: None, or {benchmark, item, ngram} of its first non-boilerplate hit; and the number of
    benchmark n-grams ignored as corpus boilerplate."""
    found, boilerplate = decide(*scan(batched(texts), index), index, max_corpus_df)
    return [found.get(i) for i in range(len(texts))], boilerplate


def _hit(index: BenchIndex, item: int, ngram: str) -> dict[str, Any]:
    name, prompt_id = index.items[item]
    return {"benchmark": name, "item": prompt_id, "ngram": ngram}


def report(
    found: list[dict[str, Any] | None], ids: list[str], index: BenchIndex, boilerplate: int
) -> dict[str, Any]:
    """Hits per benchmark with a few examples, plus the index versions: the data card's table."""
    per: dict[str, dict[str, Any]] = {
        name: {**v, "hits": 0, "examples": []} for name, v in index.versions.items()
    }
    for rid, hit in zip(ids, found, strict=True):
        if hit is None:
            continue
        entry = per[hit["benchmark"]]
        entry["hits"] += 1
        if len(entry["examples"]) < EXAMPLES:
            entry["examples"].append({"id": rid, "item": hit["item"], "ngram": hit["ngram"]})
    return {
        "ngram": index.n,
        "checked": len(ids),
        "contaminated": sum(h is not None for h in found),
        "boilerplate_ngrams_ignored": boilerplate,
        "template_ngrams_dropped": index.template_ngrams,
        "benchmarks": per,
    }
