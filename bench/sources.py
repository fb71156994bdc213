"""Bench: importing a public trace set (generate.source: dataset) vs a naive datasets.load_dataset + to_pandas pass.

    .venv/bin/python bench/sources.py [--rows 20000] [--files N] [--tokens 6000] [--codecs zstd,lz4]

Synthetic rows in Mixture-of-Thoughts' layout (messages [{role, content}] with <think> inside the assistant turn,
num_tokens, source) of R1 lengths: assistant text ~`--tokens` x 4 characters on average (uniform 0.5x-1.5x),
written as `--files` Parquet files (default: one per 50k rows, at least 4). Each side runs in its own child
process (peak RSS = its VmHWM):
  column-wise   the generate stage's import: record batches in, Arrow kernels, shards out in row groups
  record path   the same import with the column-wise adapter switched off (per-record dicts, as before)
  <codec>       (--codecs) the column-wise import writing shards with another codec: bytes/row, CPU
  baseline      datasets.load_dataset("parquet", ...) then .to_pandas() (the whole set in memory; no conversion)
Prints rows/s (wall) and rows per CPU-second, peak RSS, shard bytes/row, the ratios (of rows/s: the sides may
read different row counts), and the load average (the machine is shared: wall rows/s falls with load). The
record path runs up to --record-max-rows; the baseline reads the first files, up to --naive-max-rows rows.
Synthetic data is built before any timed side starts.
Goals (issue 13): >= 20k rows/s and peak RSS <= 2 GB for 1M rows on 2 cores; memory must not grow with --rows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POOL_CHARS = 1 << 25  # 32 M characters rows are cut from: far beyond zstd's window, so no row repeats another
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
    """Random words: ~1.6 bits/char of entropy, so zstd meets text about as compressible as R1's (~4x)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array([w + sep for w in WORDS for sep in (" ", " ", " ", "\n")])
    return "".join(words[rng.integers(0, len(words), chars // 4)])


def write_rows(folder: Path, rows: int, files: int, tokens: int) -> int:
    """The synthetic set, built and written a row group (1,024 rows) at a time, as Arrow arrays (bounded memory
    at any --rows); returns its total text characters."""
    import pyarrow.parquet as pq

    mean = tokens * 4
    pool = text_pool(POOL_CHARS)
    rng = random.Random(1)
    total = 0
    per = -(-rows // files)
    for f in range(files):
        rows_f = range(f * per, min(rows, (f + 1) * per))
        with pq.ParquetWriter(folder / f"train-{f:05d}.parquet", SCHEMA(), compression="zstd") as w:
            for start in range(rows_f.start, rows_f.stop, 1024):
                table, chars = row_group(range(start, min(start + 1024, rows_f.stop)), pool, mean, rng)
                w.write_table(table)
                total += chars
    return total


def SCHEMA():  # noqa: N802 (a constant built on first use: pyarrow loads only in the bench)
    import pyarrow as pa

    turn = pa.struct([("content", pa.string()), ("role", pa.string())])
    return pa.schema([("messages", pa.list_(turn)), ("num_tokens", pa.int64()), ("source", pa.string())])


def row_group(ids: range, pool: str, mean: int, rng: random.Random) -> tuple[object, int]:
    """Mixture-of-Thoughts rows: a user problem and an R1 completion of ~mean characters (uniform 0.5x-1.5x)."""
    import pyarrow as pa

    from distill.release import END_THINK, THINK

    texts, tokens = [], []
    for i in ids:
        n = rng.randint(mean // 2, mean * 3 // 2)
        start = rng.randint(0, len(pool) - n)
        texts += [
            f"Problem {i}: find the value.",
            f"{THINK}\n{pool[start : start + n]}\n{END_THINK}\n\nSo $\\boxed{{{i}}}$.",
        ]
        tokens.append(n // 4)
    turns = pa.StructArray.from_arrays(
        [pa.array(texts), pa.array(["user", "assistant"] * len(ids))], names=["content", "role"]
    )
    messages = pa.ListArray.from_arrays(pa.array(range(0, 2 * len(ids) + 1, 2), pa.int32()), turns)
    source = pa.array(["open-r1/OpenR1-Math-220k"] * len(ids))
    table = pa.Table.from_arrays([messages, pa.array(tokens, pa.int64()), source], schema=SCHEMA())
    return table, sum(map(len, texts))


# A child's peak RSS: VmHWM, this process's own high-water mark. Not ru_maxrss: after fork + exec it starts
# from the parent's peak (here the parent built the whole data set), which hid the children's own memory.
PEAK = """
def peak_mb():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024
"""

DISTILL_CHILD = """
import sys, time, json, resource
from pathlib import Path
PEAK
from distill.config import recipe_from_dict
from distill.generate.run import generate
data, out = sys.argv[1], Path(sys.argv[2])
if sys.argv[3] not in ("columns", "records"):  # another shard codec: the bytes/row and write cost it saves
    import distill.generate.run
    distill.generate.run.SHARD_CODEC = sys.argv[3]
if sys.argv[3] == "records":  # the per-record path (what every batch took before the column-wise one)
    import dataclasses
    from distill import sources
    ad = sources.ADAPTERS["mixture-of-thoughts"]
    sources.ADAPTERS["mixture-of-thoughts"] = dataclasses.replace(ad, columnar=None)
recipe = recipe_from_dict({"name": "bench", "generate": {"source": "dataset", "shard_size": 1024,
    "datasets": [{"adapter": "mixture-of-thoughts", "path": data, "subset": "math"}]}})
t, cpu = time.perf_counter(), sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
m = generate(recipe, None, out, force=True)
print(json.dumps({"seconds": time.perf_counter() - t, "rows": m.rows_out,
    "out_bytes": sum(p.stat().st_size for p in out.glob("part-*.parquet")),
    "rss_mb": peak_mb(),
    "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu}))  # imports not counted
"""

BASELINE_CHILD = """
import sys, time, json, resource
PEAK
import datasets
datasets.disable_progress_bars()
t, cpu = time.perf_counter(), sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
ds = datasets.load_dataset("parquet", data_files=sys.argv[3:], split="train", cache_dir=sys.argv[2])
df = ds.to_pandas()
print(json.dumps({"seconds": time.perf_counter() - t, "rows": len(df),
    "rss_mb": peak_mb(),
    "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu}))  # imports not counted
"""


def child(code: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code.replace("PEAK", PEAK), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000, help="synthetic rows")
    ap.add_argument(
        "--files", type=int, help="Parquet files they are split into (default: one per 50k rows, >= 4)"
    )
    ap.add_argument("--tokens", type=int, default=6000, help="mean assistant tokens per row (x4 characters)")
    ap.add_argument("--record-max-rows", type=int, default=20_000,
                    help="above this, skip the record path (~10x slower than the column-wise one)")  # fmt: skip
    ap.add_argument(
        "--codecs", default="", help="also import with shards of these codecs (comma-separated: zstd,lz4)"
    )
    ap.add_argument("--naive-max-rows", type=int, default=200_000,
                    help="the load_dataset baseline reads the first files up to this many rows (it keeps them all "
                         "in memory: ~25 KB/row as Arrow, more as pandas objects)")  # fmt: skip
    args = ap.parse_args()
    files = args.files or max(4, -(-args.rows // 50_000))
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp:
        data, tmp = Path(tmp) / "data", Path(tmp)
        data.mkdir()
        t = time.perf_counter()
        chars = write_rows(data, args.rows, files, args.tokens)
        size = sum(p.stat().st_size for p in data.iterdir())
        print(f"data: {args.rows:,} rows, {chars / 1e9:.2f} G chars ({chars / args.rows / 4:,.0f} tokens/row "
              f"at 4 chars/token), {size / 1e9:.2f} GB Parquet in {files} files, made in "
              f"{time.perf_counter() - t:.0f} s")  # fmt: skip
        load = os.getloadavg()
        results = {"distill import, column-wise": child(DISTILL_CHILD, str(data), str(tmp / "a"), "columns")}
        shutil.rmtree(tmp / "a")  # disk: at 1M rows the shards are ~12 GB
        for codec in filter(None, args.codecs.split(",")):
            results[f"column-wise, {codec} shards"] = child(DISTILL_CHILD, str(data), str(tmp / "z"), codec)
            shutil.rmtree(tmp / "z")
        if args.rows <= args.record_max_rows:
            results["distill import, record path"] = child(
                DISTILL_CHILD, str(data), str(tmp / "b"), "records"
            )
        first = sorted(data.iterdir())[: args.naive_max_rows // -(-args.rows // files)]
        if first:  # the first files, up to --naive-max-rows rows
            results["load_dataset+to_pandas"] = child(
                BASELINE_CHILD, str(data), str(tmp / "hf-cache"), *first
            )
        load_after = os.getloadavg()
    report(results, load, load_after)


def report(results: dict[str, dict], load: tuple, load_after: tuple) -> None:
    for name, r in results.items():
        print(f"{name:>28}: {r['rows']:,} rows in {r['seconds']:.1f} s = {r['rows'] / r['seconds']:,.0f} rows/s, "
              f"peak RSS {r['rss_mb']:,.0f} MB; CPU {r['cpu_s']:.1f} s = {r['rows'] / r['cpu_s']:,.0f} rows per "
              f"CPU-second" + (f"; shards {r['out_bytes'] / 1e9:.2f} GB = {r['out_bytes'] / r['rows']:,.0f} B/row"
              if "out_bytes" in r else ""))  # fmt: skip
    ours = results["distill import, column-wise"]
    for name, r in list(results.items())[1:]:
        print(f"column-wise vs {name}: {rate(ours, 'seconds') / rate(r, 'seconds'):.2f}x the rows/s, "
              f"{rate(ours, 'cpu_s') / rate(r, 'cpu_s'):.2f}x the rows per CPU-second, "
              f"{ours['rss_mb'] / r['rss_mb']:.2f}x the peak RSS ({ours['rows']:,} vs {r['rows']:,} rows)")  # fmt: skip
    if "load_dataset+to_pandas" not in results:
        print("load_dataset baseline skipped: --naive-max-rows is below one file's rows")
    print(f"load average (1/5/15 min) before: {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}, "
          f"after: {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} on {os.cpu_count()} cores")  # fmt: skip


def rate(r: dict, per: str) -> float:
    return r["rows"] / r[per]


if __name__ == "__main__":
    main()
