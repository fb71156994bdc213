"""Curation benchmarks, each against a baseline measured in the same run:

    flock /tmp/distill-heavy.lock .venv/bin/python bench/curate.py            # all three, default sizes
    .venv/bin/python bench/curate.py --only decontam --traces 10000            # a quick look

(a) decontam  n-gram decontamination of synthetic traces against every registry benchmark: rows/s of
              distill.curate.decontam vs an open-r1 style pure-Python 8-gram check (goal >= 3x).
(b) neardup   near-duplicate prompts with MinHash-LSH: wall time and peak RSS over --prompts (goal <= 10 min
              for 1M on 2 cores) of distill vs the previous rensa RMinHashLSH version (each in a fresh process,
              outputs compared), and the ratio vs datasketch's pure-Python MinHash + MinHashLSH on a subset.
(c) verify    verification throughput: math-verify items/s in-process vs the process pool (1 and 2
              workers); sandboxed HumanEval programs/s with 1 and 2 workers.
Needs DISTILL_DATA_DIR (the benchmark files). Synthetic data is seeded: reruns measure the same work.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import time
from collections import defaultdict

# reasoning-flavoured filler words for synthetic traces
WORDS = (  # noqa: SIM905 (one string reads better than 53 quoted words)
    "the of and to a in is that for it as with was on be by this are or find value number sum triangle area let "
    "suppose integer real positive prime probability circle square root equation solve compute therefore so we "
    "get check again wait hmm maybe answer total each then first second"
).split()


def synthetic_traces(n: int, words: int, bench_texts: list[str], planted: float, seed: int = 0) -> list[str]:
    """Random reasoning-like texts; a `planted` share quotes 12 words of a benchmark problem."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = [rng.choice(WORDS) if rng.random() < 0.8 else str(rng.randint(0, 999)) for _ in range(words)]
        if rng.random() < planted:
            src = rng.choice(bench_texts).split()
            start = rng.randint(0, max(0, len(src) - 12))
            at = rng.randint(0, words)
            text[at:at] = src[start : start + 12]
        out.append(" ".join(text))
    return out


def openr1_baseline(bench_texts: list[str], texts: list[str], n: int = 8) -> list[bool]:
    """open-r1 scripts/decontaminate.py: lower-case, split on whitespace, " ".join n-grams, set lookups."""

    def normalize_string(text: str) -> str:
        return " ".join(text.lower().strip().split())

    def word_ngrams(text: str, n: int) -> list[str]:
        words = text.split()
        return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]

    lookup: dict[str, set[int]] = defaultdict(set)
    for doc_id, doc in enumerate(bench_texts):
        for ngram in word_ngrams(normalize_string(doc), n):
            lookup[ngram].add(doc_id)
    return [any(g in lookup for g in set(word_ngrams(normalize_string(t), n))) for t in texts]


def bench_decontam(args) -> None:
    from distill.curate import decontam
    from distill.data import BENCHMARKS, data_dir, load_prompts

    root = data_dir()  # a benchmark without a local copy (livecodebench) is left out, not fetched
    benchmarks = {
        name: load_prompts(name, "test") for name in BENCHMARKS if root is None or (root / name).is_dir()
    }
    bench_texts = [r["problem"] for rows in benchmarks.values() for r in rows]
    texts = synthetic_traces(args.traces, args.words, bench_texts, planted=0.01)
    print(
        f"(a) decontamination: {len(texts)} traces x {args.words} words vs {len(benchmarks)} benchmarks "
        f"({len(bench_texts)} items, 8-grams)"
    )
    start = time.perf_counter()
    index = decontam.build_index(benchmarks, 8)
    found, boiler = decontam.find_contamination(texts, index, max_corpus_df=0.001)
    fast = time.perf_counter() - start
    ours = sum(f is not None for f in found)
    start = time.perf_counter()
    flags = openr1_baseline(bench_texts, texts)
    slow = time.perf_counter() - start
    print(
        f"    distill.curate.decontam: {fast:7.1f} s  {len(texts) / fast:9,.0f} rows/s  contaminated {ours}"
        f"  (boilerplate n-grams ignored: {boiler})"
    )
    print(
        f"    open-r1 style baseline:  {slow:7.1f} s  {len(texts) / slow:9,.0f} rows/s  contaminated {sum(flags)}"
    )
    print(f"    speed-up: {slow / fast:.1f}x (goal >= 3x)")
    ours_set = {i for i, f in enumerate(found) if f is not None}
    theirs_set = {i for i, flag in enumerate(flags) if flag}
    print(
        f"    agreement: both {len(ours_set & theirs_set)}, only distill {len(ours_set - theirs_set)}, only "
        f"baseline {len(theirs_set - ours_set)} (distill splits punctuation and skips template/notation n-grams)"
    )


def synthetic_prompts(n: int, dup_share: float, seed: int = 1) -> tuple[list[str], int]:
    """Word-problem-like prompts; `dup_share` of them repeat an earlier prompt with its last word changed
    (Jaccard of 5-word shingles ~0.94: a near-duplicate at threshold 0.8). Returns (prompts, edited copies)."""
    rng = random.Random(seed)
    planted = 0
    names = [f"name{i}" for i in range(5000)]
    things = [f"item{i}" for i in range(5000)]
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < dup_share:
            words = rng.choice(out).split()
            words[-1] = f"week {rng.randint(10, 99)}?"
            out.append(" ".join(words))
            planted += 1
            continue
        a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 9)
        out.append(
            f"{rng.choice(names)} has {a} {rng.choice(things)} and buys {b} more {rng.choice(things)} at "
            f"the {rng.choice(things)} market every {rng.choice(things)} for {c} weeks while "
            f"{rng.choice(names)} gives away {rng.randint(1, a)} of them to {rng.choice(names)} each "
            f"{rng.choice(things)}; how many {rng.choice(things)} are left at the end of week {c}?"
        )
    return out, planted


def datasketch_baseline(texts: list[str], threshold: float, num_perm: int, shingle: int) -> int:
    """The usual pure-Python datasketch loop: MinHash.update per shingle, LSH query then insert."""
    from datasketch import MinHash, MinHashLSH

    from distill.curate.dedup import lsh_bands, shingles

    bands = lsh_bands(threshold, num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, num_perm // bands))
    kept, dups = {}, 0
    for i, text in enumerate(texts):
        m = MinHash(num_perm=num_perm)
        for s in shingles(text, shingle):
            m.update(s.encode())
        if any(m.jaccard(kept[c]) >= threshold for c in lsh.query(m)):
            dups += 1
            continue
        lsh.insert(i, m)
        kept[i] = m
    return dups


def rensa_lsh_baseline(texts: list[str], threshold: float, num_perm: int, shingle: int) -> list[int | None]:
    """The previous distill implementation: rensa's RMinHashLSH index plus a dict of the kept RMinHash."""
    from rensa import RMinHash, RMinHashLSH

    from distill.curate.dedup import CHUNK, lsh_bands, shingles

    lsh = RMinHashLSH(threshold, num_perm, lsh_bands(threshold, num_perm))
    kept: dict[int, RMinHash] = {}
    out: list[int | None] = []
    for start in range(0, len(texts), CHUNK):
        token_sets = [shingles(t, shingle) for t in texts[start : start + CHUNK]]
        for offset, mh in enumerate(RMinHash.from_token_sets(token_sets, num_perm, 0)):
            match = next((c for c in sorted(lsh.query(mh)) if mh.jaccard(kept[c]) >= threshold), None)
            out.append(match)
            if match is None:
                lsh.insert(start + offset, mh)
                kept[start + offset] = mh
    return out


def neardup_worker(impl: str, prompts: int) -> None:
    """One implementation in a fresh process, so its peak RSS is its own: prints a JSON line."""
    import hashlib
    import json

    from distill.curate.dedup import near_duplicates

    texts, planted = synthetic_prompts(prompts, dup_share=0.05)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB (ru_maxrss is in KB on Linux)
    fn = near_duplicates if impl == "distill" else rensa_lsh_baseline
    start = time.perf_counter()
    out = fn(texts, 0.8, 128, 5)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = hashlib.blake2b(repr(out).encode(), digest_size=8).hexdigest()
    dups = sum(m is not None for m in out)
    print(
        json.dumps(
            {
                "wall": wall,
                "texts_mb": before,
                "peak_mb": peak,
                "dups": dups,
                "planted": planted,
                "digest": digest,
            }
        )
    )


def bench_neardup(args) -> None:
    import json
    import subprocess
    import sys

    texts, planted = synthetic_prompts(args.prompts, dup_share=0.05)
    print(
        f"(b) near-duplicate prompts: {len(texts):,} prompts (~{sum(map(len, texts)) // len(texts)} chars), "
        f"threshold 0.8, 128 permutations, 5-word shingles, {os.cpu_count()} cores"
    )
    runs = {}
    for impl, label in [("rensa-lsh", "previous (rensa RMinHashLSH)"), ("distill", "distill (numpy bands)")]:
        cmd = [sys.executable, __file__, "--neardup-worker", impl, "--prompts", str(args.prompts)]
        runs[impl] = r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"    {label:29s} {r['wall']:6.1f} s ({len(texts) / r['wall']:8,.0f} prompts/s), peak RSS "
            f"{r['peak_mb']:6,.0f} MB = texts {r['texts_mb']:,.0f} MB + {r['peak_mb'] - r['texts_mb']:,.0f} MB; "
            f"{r['dups']:,} near-dups of {planted:,} planted"
        )
    old, new = runs["rensa-lsh"], runs["distill"]
    print(
        f"    distill vs previous: {old['wall'] / new['wall']:.2f}x speed, peak RSS "
        f"{old['peak_mb'] / new['peak_mb']:.1f}x lower (near-dup's own memory "
        f"{(old['peak_mb'] - old['texts_mb']) / (new['peak_mb'] - new['texts_mb']):.1f}x lower); "
        f"outputs identical: {old['digest'] == new['digest']} (goal <= 600 s for 1M)"
    )
    from distill.curate.dedup import near_duplicates

    sub = texts[: args.baseline_prompts]
    start = time.perf_counter()
    ours = sum(m is not None for m in near_duplicates(sub, 0.8, 128, 5))
    fast = time.perf_counter() - start
    start = time.perf_counter()
    theirs = datasketch_baseline(sub, 0.8, 128, 5)
    slow = time.perf_counter() - start
    print(
        f"    on the first {len(sub):,}: distill {fast:.1f} s ({ours} dups), datasketch pure-Python {slow:.1f} s "
        f"({theirs} dups): {slow / fast:.1f}x"
    )


def bench_verify(args) -> None:
    import json

    from distill.config import VerifyConfig
    from distill.data import load_prompts, raw_records
    from distill.graders import VerifierPool, verify_batch, verify_row
    from distill.graders.sandbox import sandbox_available

    rows = load_prompts("math500", "test")
    rng = random.Random(2)
    items = []
    for _ in range(args.math_items):
        r = rng.choice(rows)
        answer = r["reference"] if rng.random() < 0.5 else str(rng.randint(0, 999))
        items.append(("math", r["reference"], f"So the answer is $\\boxed{{{answer}}}$."))
    print(f"(c) verification: {len(items)} MATH-500 answers (math-verify), per-item timeout 5 s")
    cfg = VerifyConfig(timeout_s=5.0)
    start = time.perf_counter()
    serial = [verify_row(*item, cfg) for item in items]
    base = time.perf_counter() - start
    print(f"    in-process serial:      {len(items) / base:7.0f} items/s")
    for workers in (1, 2):
        with VerifierPool(VerifyConfig(timeout_s=5.0, workers=workers)) as pool:
            start = time.perf_counter()
            pool.map(items[:workers])  # starts the workers (each imports sympy)
            started = time.perf_counter()
            pooled = pool.map(items)
            wall = time.perf_counter() - started
        same = sum(a.verdict == b.verdict for a, b in zip(serial, pooled, strict=True))
        print(
            f"    pool, {workers} worker(s):     {len(items) / wall:7.0f} items/s  ({base / wall:.2f}x serial; "
            f"start-up {started - start:.1f} s; {same}/{len(items)} verdicts equal)"
        )
    if not sandbox_available():
        print("    sandbox unavailable here: code throughput skipped")
        return
    recs = raw_records("humaneval", "test")[: args.code_items]
    code = [
        (
            "code",
            json.dumps(
                {
                    "format": "humaneval",
                    "prompt": r["prompt"],
                    "test": r["test"],
                    "entry_point": r["entry_point"],
                }
            ),
            f"```python\n{r['prompt']}{r['canonical_solution']}\n```",
        )
        for r in recs
    ]
    print(f"    {len(code)} HumanEval canonical solutions in the sandbox:")
    for workers in (1, 2):
        start = time.perf_counter()
        verdicts = verify_batch(code, VerifyConfig(workers=workers))
        wall = time.perf_counter() - start
        ok = sum(v.verdict == "correct" for v in verdicts)
        print(
            f"    pool, {workers} worker(s):     {len(code) / wall:7.1f} programs/s  ({ok}/{len(code)} correct)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["decontam", "neardup", "verify"], help="run one benchmark")
    parser.add_argument("--traces", type=int, default=100_000, help="synthetic traces to decontaminate")
    parser.add_argument("--words", type=int, default=300, help="words per synthetic trace")
    parser.add_argument("--prompts", type=int, default=1_000_000, help="synthetic prompts for near-dup")
    parser.add_argument(
        "--baseline-prompts",
        type=int,
        default=20_000,
        help="prompts the (slow) datasketch baseline and the same-size rensa run get",
    )
    parser.add_argument("--math-items", type=int, default=2000, help="math answers to verify")
    parser.add_argument("--code-items", type=int, default=40, help="HumanEval programs to run in the sandbox")
    parser.add_argument("--neardup-worker", choices=["distill", "rensa-lsh"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.neardup_worker:
        neardup_worker(args.neardup_worker, args.prompts)
        return
    for name, fn in [("decontam", bench_decontam), ("neardup", bench_neardup), ("verify", bench_verify)]:
        if args.only in (None, name):
            fn(args)


if __name__ == "__main__":
    main()
