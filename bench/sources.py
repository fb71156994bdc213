"""Bench: importing a public trace set (generate.source: dataset) vs a naive datasets.load_dataset + to_pandas pass.

    .venv/bin/python bench/sources.py [--rows 20000] [--files 4] [--tokens 6000]

Synthetic rows in Mixture-of-Thoughts' layout (messages [{role, content}] with <think> inside the assistant turn,
num_tokens, source) of R1 lengths: assistant text ~`--tokens` x 4 characters on average (uniform 0.5x-1.5x),
written as `--files` Parquet files. Each side runs in its own child process (peak RSS = its ru_maxrss):
  distill   the generate stage's import: stream record batches, adapt, write generate-schema shards + manifest
  baseline  datasets.load_dataset("parquet", ...) then .to_pandas() (the whole set in memory; no conversion)
Prints rows/s and peak RSS of both and the ratios, and the machine's load average (the machine is shared).
Goals (issue 13): >= 20k rows/s and peak RSS <= 2 GB for 1M rows on 2 cores; memory must not grow with --rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "we",
    "so",
    "let",
    "x",
    "y",
    "n",
    "be",
    "sum",
    "then",
    "it",
    "for",
    "this",
    "with",
    "as",
    "now",
    "check",
    "prime",
]


def text_pool(chars: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    out, size = [], 0
    while size < chars:
        word = rng.choice(WORDS) + rng.choice(" \n  ")
        out.append(word)
        size += len(word)
    return "".join(out)


def write_rows(folder: Path, rows: int, files: int, tokens: int) -> int:
    """The synthetic set; returns its total text characters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from distill.release import END_THINK, THINK

    mean = tokens * 4
    pool = text_pool(mean * 4)
    rng = random.Random(1)
    total = 0
    per = -(-rows // files)
    for f in range(files):
        batch = []
        for i in range(f * per, min(rows, (f + 1) * per)):
            n = rng.randint(mean // 2, mean * 3 // 2)
            start = rng.randint(0, len(pool) - n)
            thought = pool[start : start + n]
            content = f"{THINK}\n{thought}\n{END_THINK}\n\nSo the answer is $\\boxed{{{i}}}$."
            problem = f"Problem {i}: find the value."
            batch.append(
                {
                    "messages": [
                        {"content": problem, "role": "user"},
                        {"content": content, "role": "assistant"},
                    ],
                    "num_tokens": n // 4,
                    "source": "open-r1/OpenR1-Math-220k",
                }
            )
            total += len(content) + len(problem)
        pq.write_table(pa.Table.from_pylist(batch), folder / f"train-{f:05d}.parquet", row_group_size=1024)
    return total


DISTILL_CHILD = """
import sys, time, json, resource
from pathlib import Path
from distill.config import recipe_from_dict
from distill.generate.run import generate
data, out = sys.argv[1], Path(sys.argv[2])
recipe = recipe_from_dict({"name": "bench", "generate": {"source": "dataset", "shard_size": 1024,
    "datasets": [{"adapter": "mixture-of-thoughts", "path": data, "subset": "math"}]}})
t = time.perf_counter()
m = generate(recipe, None, out, force=True)
print(json.dumps({"seconds": time.perf_counter() - t, "rows": m.rows_out,
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}))
"""

BASELINE_CHILD = """
import sys, time, json, resource
import datasets
datasets.disable_progress_bars()
t = time.perf_counter()
ds = datasets.load_dataset("parquet", data_files=sys.argv[1] + "/*.parquet", split="train", cache_dir=sys.argv[2])
df = ds.to_pandas()
print(json.dumps({"seconds": time.perf_counter() - t, "rows": len(df),
    "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2])}))
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env={**os.environ}
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="synthetic rows")
    ap.add_argument("--files", type=int, default=4, help="Parquet files they are split into")
    ap.add_argument("--tokens", type=int, default=6000, help="mean assistant tokens per row (x4 characters)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp:
        data, tmp = Path(tmp) / "data", Path(tmp)
        data.mkdir()
        t = time.perf_counter()
        chars = write_rows(data, args.rows, args.files, args.tokens)
        size = sum(p.stat().st_size for p in data.iterdir())
        print(f"data: {args.rows:,} rows, {chars / 1e9:.2f} G chars ({chars / args.rows / 4:,.0f} tokens/row "
              f"at 4 chars/token), {size / 1e9:.2f} GB Parquet, made in {time.perf_counter() - t:.0f} s")  # fmt: skip
        load = os.getloadavg()
        ours = child(DISTILL_CHILD, str(data), str(tmp / "out"))
        base = child(BASELINE_CHILD, str(data), str(tmp / "hf-cache"))
        load_after = os.getloadavg()
    for name, r in (("distill import", ours), ("load_dataset+to_pandas", base)):
        print(f"{name:>24}: {r['rows']:,} rows in {r['seconds']:.1f} s = {r['rows'] / r['seconds']:,.0f} rows/s, "
              f"peak RSS {r['rss_mb']:,.0f} MB; CPU {r['cpu_s']:.1f} s = {r['rows'] / r['cpu_s']:,.0f} rows per "
              "CPU-second")  # fmt: skip
    print(f"ratio (baseline s / distill s): {base['seconds'] / ours['seconds']:.2f}x; "
          f"peak RSS baseline / distill: {base['rss_mb'] / ours['rss_mb']:.2f}x")  # fmt: skip
    print(f"load average (1/5/15 min) before: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
          f"after: {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} on {os.cpu_count()} cores")  # fmt: skip


if __name__ == "__main__":
    main()
