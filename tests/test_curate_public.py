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


def curated(tmp_path: Path, adapter: str, curate_cfg: dict, subset: str | None = None, force: bool = False):
    """One set's published rows imported and curated with `curate_cfg` (no decontamination); the manifest."""
    root = snapshot(adapter, tmp_path / "hub" / adapter)
    dataset = {"adapter": adapter, "path": str(root), **({"subset": subset} if subset else {})}
    recipe = recipe_from_dict(
        {
            "name": "public",
            "run_dir": str(tmp_path / "run"),
            "generate": {"source": "dataset", "datasets": [dataset]},
            "curate": {"decontaminate": {"benchmarks": []}, "verify": {"workers": 1}, **curate_cfg},
        }
    )
    generate(recipe, None, tmp_path / "run" / "generate")
    return curate(recipe, tmp_path / "run" / "generate", tmp_path / "run" / "curate", force)


@pytest.mark.parametrize(
    ("curate_cfg", "dropped"),
    [
        # verification on (the default): math and code rows need a gold answer OpenThoughts3 does not carry
        ({}, {"no_reference": 2, "malformed": 1, "unverified": 1}),
        # off, as for a set verified upstream: nothing to grade, so no row needs a reference
        (
            {
                "verify": {"math": False, "code": False, "mcq": False},
                "select": {"keep_unverified_domains": True},
            },
            {"malformed": 1},
        ),
        # math off, code on: only the code row needs one
        (
            {"verify": {"math": False}, "select": {"keep_unverified_domains": True}},
            {"no_reference": 1, "malformed": 1},
        ),
    ],
)
def test_a_row_needs_a_reference_only_where_the_recipe_grades_it(tmp_path, curate_cfg, dropped):
    """OpenThoughts3's published rows (math, code, two science; one cut off) under three verify settings."""
    manifest = curated(tmp_path, "openthoughts3", curate_cfg)
    assert manifest.dropped == dropped and manifest.rows_in == 4


@pytest.mark.parametrize(("trust", "dropped"), [(True, {"wrong": 1}), (False, {"no_reference": 2})])
def test_trusting_the_sets_verdicts_needs_no_reference(tmp_path, monkeypatch, trust, dropped):
    """OpenR1-Math's extended row with its answer blanked: with trust_source_flags its generations keep the set's
    verdicts (one correct by the judge, one wrong) and need no reference; without, math grading needs one."""
    import public_rows

    rows = public_rows.openr1_math()["extended/train-00000-of-00011.parquet"]
    monkeypatch.setitem(
        public_rows.SETS, "openr1-math", lambda: {"extended/train-0.parquet": [{**rows[0], "answer": ""}]}
    )
    manifest = curated(
        tmp_path, "openr1-math", {"verify": {"trust_source_flags": trust, "workers": 1}}, "extended"
    )
    assert manifest.dropped == dropped and manifest.rows_out == (1 if trust else 0)


def test_an_empty_answer_is_dropped_unless_the_recipe_keeps_it(tmp_path):
    """Mixture-of-Thoughts' math row whose </think> is followed by nothing: its own reason by default."""
    off = {"verify": {"math": False}, "select": {"keep_unverified_domains": True}}
    assert curated(tmp_path / "a", "mixture-of-thoughts", off, subset="math").dropped == {"empty_answer": 1}
    keep = {**off, "filters": {"drop_empty_answer": False}}
    manifest = curated(tmp_path / "b", "mixture-of-thoughts", keep, subset="math")
    assert manifest.dropped == {} and manifest.rows_out == 3


def test_a_rerun_leaves_the_repository_card_alone(tmp_path, monkeypatch):
    """The data_cards/ copy is rewritten only when its content changed (not its stamp line) or on --force; the
    run's own card.md is rewritten on every run."""
    cards = tmp_path / "cards"
    monkeypatch.setenv("DISTILL_CARDS_DIR", str(cards))
    off = {"verify": {"math": False}, "select": {"keep_unverified_domains": True}}
    curated(tmp_path, "mixture-of-thoughts", off, subset="math")
    first = (cards / "public.md").read_bytes()
    run_card = tmp_path / "run" / "curate" / "card.md"
    (tmp_path / "run" / "generate" / "manifest.json").unlink()  # a new import: a new generate manifest hash
    curated(tmp_path, "mixture-of-thoughts", off, subset="math")
    assert (cards / "public.md").read_bytes() == first  # same content, new stamp: left alone
    assert run_card.read_text() != first.decode()  # the run's copy carries this run's stamp
    curated(tmp_path, "mixture-of-thoughts", off, subset="math", force=True)
    assert (cards / "public.md").read_text() == run_card.read_text().replace(
        "lengths.png", "public-lengths.png"
    )
    assert (cards / "public.md").read_bytes() != first  # --force: rewritten
    before = (cards / "public.md").read_text()
    curated(tmp_path, "mixture-of-thoughts", {**off, "filters": {"drop_empty_answer": False}}, subset="math")
    assert (cards / "public.md").read_text() != before and "3 kept" in (cards / "public.md").read_text()
