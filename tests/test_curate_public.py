"""Every shipped public-data recipe (generate.source: dataset) end to end on its sets' published layout: the import
from a snapshot_download copy, then the recipe's own curate block; the rows kept per subset and per domain are the
ones the recipe means to keep (the README's table). Rows: tests/public_rows.py, written after each set's card."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from public_rows import snapshot

from distill.config import recipe_from_dict
from distill.curate.run import curate
from distill.generate.run import generate

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
PUBLIC = sorted(
    p
    for p in PIPELINES.glob("*.yaml")
    if (yaml.safe_load(p.read_text()).get("generate") or {}).get("source") == "dataset"
)

# recipe -> {subset or domain: (rows in, rows kept)}; the drops are named in the rows' comments in public_rows.py
YIELDS = {
    "r1-distill-qwen-7b-mot": {
        "subset": {"math": (3, 2), "code": (2, 2), "science": (2, 1)},  # an empty answer; a trace cut off
        "domain": {"math": (3, 2), "code": (2, 2), "general": (2, 1)},
        "dropped": {"empty_answer": 1, "malformed": 1},
    },
}


# Benchmarks a recipe decontaminates against that the shared data folder lacks (the checkout's data registry has
# no copy of them): the test runs without them and says so, and fails if the list goes stale.
NOT_IN_SHARED_DATA = {"livecodebench"}


def recipe_on_snapshots(path: Path, root: Path, run: Path) -> object:
    """The recipe with each set read from a local snapshot of its published files (path: instead of the Hub)."""
    data = yaml.safe_load(path.read_text())
    for d in data["generate"]["datasets"]:
        d["path"] = str(snapshot(d["adapter"], root / d["adapter"]))
    dc = data["curate"]["decontaminate"]
    here = Path(os.environ["DISTILL_DATA_DIR"])
    assert {b for b in dc["benchmarks"] if not (here / b).is_dir()} == NOT_IN_SHARED_DATA & set(
        dc["benchmarks"]
    )
    dc["benchmarks"] = [b for b in dc["benchmarks"] if b not in NOT_IN_SHARED_DATA]
    return recipe_from_dict({**data, "run_dir": str(run)})


def yields(out: Path) -> dict[str, dict]:
    """(rows in, rows kept) per subset (the source's ':subset') and per domain, and the drop counts."""
    seen: dict[str, Counter] = {"subset": Counter(), "domain": Counter()}
    kept: dict[str, Counter] = {"subset": Counter(), "domain": Counter()}
    dropped: Counter = Counter()
    for side in ("kept", "dropped"):
        for shard in sorted((out / side).glob("part-*.parquet")):
            for row in pq.read_table(
                shard, columns=["source", "domain", *(["drop_reason"] * (side == "dropped"))]
            ).to_pylist():
                keys = {"subset": row["source"].rpartition(":")[2], "domain": row["domain"]}
                for k, v in keys.items():
                    seen[k][v] += 1
                    kept[k][v] += side == "kept"
                dropped[row.get("drop_reason")] += side == "dropped"
    table = {k: {v: (seen[k][v], kept[k][v]) for v in seen[k]} for k in seen}
    return {**table, "dropped": {r: n for r, n in dropped.items() if n}}


def print_yields(name: str, got: dict) -> None:
    """The README's table: `pytest tests/test_curate_public.py -s` prints it."""
    for kind in ("subset", "domain"):
        cells = ", ".join(f"{v} {k}/{n} ({k / n:.0%})" for v, (n, k) in got[kind].items())
        print(f"{name}: per {kind}: {cells}")
    print(f"{name}: dropped {got['dropped']}")


@pytest.mark.parametrize("path", PUBLIC, ids=[p.stem for p in PUBLIC])
def test_public_recipe_keeps_what_it_means_to(tmp_path, path):
    assert path.stem in YIELDS, f"{path.name}: a public-data recipe without expected yields here"
    recipe = recipe_on_snapshots(path, tmp_path / "hub", tmp_path / "run")
    generate(recipe, None, tmp_path / "run" / "generate")
    curate(recipe, tmp_path / "run" / "generate", tmp_path / "run" / "curate")
    got = yields(tmp_path / "run" / "curate")
    print_yields(path.stem, got)
    assert got == YIELDS[path.stem]
