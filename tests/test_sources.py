"""Public trace sets: each adapter on a few rows in its set's real layout (column names and nesting as the dataset
cards give them), imported by the generate stage into generate-schema shards; bad input is one DistillError
naming the set, the column and the row, with nothing written; mixtures take weights and limits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from public_rows import SETS, snapshot, write_file

from distill.config import recipe_from_dict
from distill.errors import DistillError
from distill.generate.run import generate, row_schema
from distill.release import END_THINK, THINK
from distill.sources import ADAPTERS, drawn

R1_TEXT = (
    f"{THINK}\nLet x = 2. Then 2x = 4.\n{END_THINK}\n\nThe answer is $\\boxed{{4}}$."  # MOT_EDGES' first
)


def published(name: str) -> list[dict]:
    """The rows of a set's first published file (tests/public_rows.py: written after its card and viewer)."""
    return next(iter(SETS[name]().values()))


def openr1_math_rows() -> list[dict]:
    return published("openr1-math")


def mot_rows() -> list[dict]:
    return published("mixture-of-thoughts")


def s1k_rows() -> list[dict]:
    return published("s1k")


def limo_rows() -> list[dict]:
    return published("limo")


FIXTURES = {  # adapter -> (its published rows, the file type the test writes them as)
    "openr1-math": (openr1_math_rows, "parquet"),
    "mixture-of-thoughts": (mot_rows, "parquet"),
    "openthoughts": (lambda: published("openthoughts"), "parquet"),
    "bespoke-stratos": (lambda: published("bespoke-stratos"), "jsonl"),
    "openthoughts3": (lambda: published("openthoughts3"), "parquet"),
    "s1k": (s1k_rows, "parquet"),
    "limo": (limo_rows, "jsonl"),
    "am-r1": (lambda: published("am-r1"), "jsonl"),
}


def write_rows(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def import_run(tmp_path: Path, datasets: list[dict], force: bool = False, **generate_cfg) -> Path:
    recipe = recipe_from_dict(
        {"name": "imp", "generate": {"source": "dataset", "datasets": datasets, **generate_cfg}}
    )
    out = tmp_path / "run" / "generate"
    generate(recipe, None, out, force)
    return out


def shard_rows(out: Path) -> list[dict]:
    """The shards' rows as curate reads them: reasoning and answer as text (trace_texts)."""
    from distill.sources import trace_texts

    return [r for p in sorted(out.glob("part-*.parquet")) for r in trace_texts(pq.read_table(p)).to_pylist()]


# adapter -> (traces of its first published file, the first trace's problem start, reasoning and answer parts)
FIRST = {
    "openr1-math": (5, "Example 1. If $x = 2$", "2x = 4 when x = 2.", "The answer is $\\boxed{4}$."),
    "mixture-of-thoughts": (3, "Please reason step by step", "2x = 4.", "$\\boxed{4}$"),
    "openthoughts": (1, "Return your final response", "x is 2, so 2x is 4.", "$\\boxed{4}$"),
    "bespoke-stratos": (1, "Return your final response", "x is 2, so 2x is 4.", "$\\boxed{4}$"),
    "openthoughts3": (4, "What is $2x$ if $x = 2$?", "2x = 4.", "$\\boxed{4}$"),
    "s1k": (1, "What is 2x if x = 2?", "Let x = 2. Then 2x = 4.", "$\\boxed{4}$"),
    "limo": (1, "What is 2x if x = 2?", "Let x = 2.\n\nThen 2x = 4.", "**Final Answer**\n\\boxed{4}"),
    "am-r1": (2, "Find the integral of", "Okay, let's see. Split the integral.",
              "\\(-e^{-x} - \\frac{1}{2}e^{-2x} + C\\)"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_adapter_imports_its_real_layout(tmp_path, name):
    build, ext = FIXTURES[name]
    path = write_rows(build(), tmp_path / "data" / f"train.{ext}")
    out = import_run(tmp_path, [{"adapter": name, "path": str(path)}])
    rows = shard_rows(out)
    traces, problem, reasoning, answer = FIRST[name]
    assert len(rows) == traces
    first = rows[0]
    assert first["problem"].startswith(problem)
    assert (first["reasoning"], first["answer"]) == (reasoning, answer)
    assert first["prompt_id"].startswith(f"{name}/")
    assert first["license"] == ADAPTERS[name].license
    # the generate schema, plus the set's own verdict and the text spans
    table = pq.read_table(sorted(out.glob("part-*.parquet"))[0])
    assert table.schema.names == [*row_schema().names, "source_verified", "trace_spans"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows_out"] == len(rows)
    assert manifest["metrics"]["mixture"][str(path)]["traces"] == len(rows)


def test_openr1_math_keeps_per_generation_flags(tmp_path):
    """The card's rule per generation: correct when math-verify or the Llama judge said so; a null judge list is
    no verdict; finish_reasons when given, else is_reasoning_complete."""
    path = write_rows(openr1_math_rows(), tmp_path / "d" / "x.parquet")
    rows = shard_rows(import_run(tmp_path, [{"adapter": "openr1-math", "path": str(path)}]))
    assert [(r["sample_index"], r["source_verified"], r["finish_reason"]) for r in rows] == [
        (0, True, "stop"),
        (1, False, "length"),  # is_reasoning_complete false, no finish_reasons
        (0, True, "stop"),
        (1, False, "stop"),
        (2, False, "stop"),  # math-verify false, the judge null
    ]
    assert rows[0]["flags"] == [] and rows[1]["flags"] == ["truncated", "malformed"]
    assert rows[0]["reference"] == "4" and rows[0]["domain"] == "math"
    assert rows[0]["prompt_id"] == rows[1]["prompt_id"] == "openr1-math/c1a8f7e2-6a0e-5d8c-9a4b-3f2e1d0c9b8a"
    assert rows[2]["problem"].startswith("Задача 3.") and rows[4]["answer"] == ""


def test_s1k_grade_and_mot_tokens(tmp_path):
    s1 = write_rows(s1k_rows(), tmp_path / "s1" / "a.parquet")
    mot = write_rows(mot_rows(), tmp_path / "mot" / "a.parquet")
    datasets = [
        {"adapter": "s1k", "path": str(s1)},
        {"adapter": "mixture-of-thoughts", "path": str(mot), "subset": "math"},
    ]
    rows = shard_rows(import_run(tmp_path, datasets))
    assert rows[0]["source_verified"] is False and rows[0]["reference"] == "4"  # deepseek_grade "No"
    assert rows[1]["completion_tokens"] == 812 and rows[1]["domain"] == "math"
    assert rows[1]["source_verified"] is None and rows[1]["teacher"] == "deepseek-ai/DeepSeek-R1"


def test_column_mapping(tmp_path):
    path = write_rows(
        [{"q": "What is 1+1?", "think": "1+1 is 2", "final": "\\boxed{2}", "gold": "2", "ok": True}],
        tmp_path / "d" / "x.jsonl",
    )
    cols = {"problem": "q", "reasoning": "think", "answer": "final", "reference": "gold", "verified": "ok"}
    rows = shard_rows(
        import_run(tmp_path, [{"adapter": "columns", "path": str(path), "columns": cols, "domain": "math"}])
    )
    assert rows[0]["reasoning"] == "1+1 is 2" and rows[0]["answer"] == "\\boxed{2}"
    assert rows[0]["completion"] == f"1+1 is 2\n{END_THINK}\n\n\\boxed{{2}}"
    assert rows[0]["domain"] == "math" and rows[0]["source_verified"] is True


BAD_ROWS = [
    (
        "openr1-math",
        lambda r: r.pop("generations"),
        "dataset 'openr1-math': {file}: row 2: column 'generations' is missing",
    ),
    (
        "openr1-math",
        lambda r: r.update(generations="x"),
        "row 2: column 'generations': expected list, got str",
    ),
    (
        "s1k",
        lambda r: r.pop("deepseek_attempt"),
        "dataset 's1k': {file}: row 2: column 'deepseek_attempt' is missing",
    ),
    (
        "limo",
        lambda r: r.update(solution=None),
        "dataset 'limo': {file}: row 2: column 'solution' is missing",
    ),
    (
        "openthoughts",
        lambda r: r["conversations"][1].update(value="no tags"),
        "row 2: column 'conversations'",
    ),
    ("am-r1", lambda r: r["messages"][1]["info"].pop("think_content"), "info.think_content is missing"),
]


@pytest.mark.parametrize(("name", "spoil", "message"), BAD_ROWS)
def test_missing_or_mistyped_column_names_set_column_row(tmp_path, name, spoil, message):
    build, _ = FIXTURES[name]
    good, bad = build()[0], build()[0]
    spoil(bad)
    path = write_rows([good, bad], tmp_path / "d" / "x.jsonl")  # JSONL: a column of two types can be written
    out = tmp_path / "run" / "generate"
    with pytest.raises(DistillError, match=re.escape(message.replace("{file}", str(path)))):
        import_run(tmp_path, [{"adapter": name, "path": str(path)}], shard_size=1)
    assert not list(out.glob("part-*")) and not (out / "manifest.json").exists()  # nothing written


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"adapter": "openr2"}, "generate.datasets[0].adapter: unknown adapter 'openr2'"),
        ({"adapter": "limo", "weight": 0}, r"generate.datasets\[0\].weight: 0.0 is not in \(0, 1\]"),
        ({"adapter": "limo", "weight": -1}, r"weight: -1.0 is not in"),
        ({"adapter": "limo", "limit": 0}, r"generate.datasets\[0\].limit: 0 must be >= 1"),
        (
            {"adapter": "columns", "path": "x.jsonl", "columns": {"problem": "q"}},
            "map 'problem' and 'completion'",
        ),
    ],
)
def test_bad_settings(tmp_path, dataset, message):
    with pytest.raises(
        DistillError,
        match=message.replace("[", r"\[").replace("]", r"\]") if "\\" not in message else message,
    ):
        import_run(tmp_path, [dataset])
    assert not (tmp_path / "run" / "generate" / "manifest.json").exists()


def test_cli_bad_adapter_exits_2(tmp_path):
    import subprocess
    import sys

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: r\nrun_dir: {tmp_path / 'run'}\ngenerate: {{source: dataset, datasets: [{{adapter: nope}}]}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "generate", str(recipe)], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "unknown adapter 'nope'" in done.stderr + done.stdout
    assert not (tmp_path / "run" / "generate" / "manifest.json").exists()


def test_mixture_weights_and_limits(tmp_path):
    many = [
        {"question": f"Q{i}?", "solution": f"step {i}\n\n\\boxed{{{i}}}", "answer": str(i)}
        for i in range(400)
    ]
    a = write_rows(many, tmp_path / "a" / "x.jsonl")
    b = write_rows(many[:50], tmp_path / "b" / "x.parquet")
    out = import_run(
        tmp_path,
        [
            {"adapter": "limo", "path": str(a), "weight": 0.25},
            {"adapter": "limo", "path": str(b), "limit": 20},
        ],
    )
    mix = json.loads((out / "manifest.json").read_text())["metrics"]["mixture"]
    expected_a = sum(drawn(str(a), row, 0.25) for row in range(1, 401))  # the stable draw, counted apart
    assert mix[str(a)]["rows_read"] == 400 and mix[str(a)]["rows_taken"] == expected_a
    assert 60 <= expected_a <= 140  # ~100 of 400
    assert mix[str(b)]["rows_taken"] == 20
    assert mix[str(a)]["share"] == round(expected_a / (expected_a + 20), 4)
    assert len(shard_rows(out)) == expected_a + 20
    again = shard_rows(import_run(tmp_path, [{"adapter": "limo", "path": str(a), "weight": 0.25}]))
    assert len(again) == expected_a  # the same draw on a rerun


def test_prompt_source_weights_and_realised_mix():
    from distill.config import GenerateConfig, TeacherConfig
    from distill.generate.run import check_config, load_prompt_set, prompt_mix

    cfg = GenerateConfig(
        prompts=[
            {"source": "arith", "split": "train", "weight": 0.5},
            {"source": "arith", "split": "dev", "limit": 30},
        ]
    )
    prompts, _ = load_prompt_set(cfg)
    half = sum(drawn("arith", i, 0.5) for i in range(1, 513))  # arith train: 512 problems
    assert 200 <= half <= 312 and len(prompts) == half + 30
    mix = prompt_mix(cfg, [prompts[:100], prompts[100:]])
    assert mix["arith"]["prompts"] == half + 30  # one registry name for both splits: counted together
    bad = GenerateConfig(prompts=[{"source": "arith", "weight": 0.0}])
    with pytest.raises(DistillError, match=r"generate.prompts\[0\].weight: 0.0 is not in \(0, 1\]"):
        check_config(TeacherConfig(), bad)


def test_curate_trusts_the_sets_verdicts_only_when_told(tmp_path):
    """openr1-math's cut-off generation is flagged wrong by the set; with trust on, that verdict drops it with no
    grading of its own (its answer is empty, which the graders call unparseable). The Russian problem answered
    in English goes as mixed_language, the closed </think> with nothing after it as empty_answer."""
    from distill.curate.run import curate

    path = write_rows(openr1_math_rows(), tmp_path / "d" / "x.parquet")
    common = {"mixed_language": 1, "empty_answer": 1}
    for trust, dropped in ((True, {**common, "wrong": 2}), (False, {**common, "wrong": 1, "unparseable": 1})):
        recipe = recipe_from_dict(
            {
                "name": "trust",
                "run_dir": str(tmp_path / f"run-{trust}"),
                "generate": {
                    "source": "dataset",
                    "datasets": [{"adapter": "openr1-math", "path": str(path)}],
                },
                "curate": {
                    "decontaminate": {"benchmarks": []},
                    "filters": {"drop_truncated": False, "drop_malformed": False},
                    "verify": {"workers": 1, "trust_source_flags": trust},
                },
            }
        )
        run = recipe.run_path()
        generate(recipe, None, run / "generate")
        manifest = curate(recipe, run / "generate", run / "curate")
        assert manifest.dropped == dropped and manifest.rows_out == 1
        kept = pq.read_table(next((run / "curate" / "kept").glob("*.parquet"))).to_pylist()
        assert kept[0]["grader"] == ("source" if trust else "math-verify")


# ---------------------------------------------------------------- the column-wise import equals the record path

MOT_EDGES = [  # R1 text the column kernels must split exactly as split_think does (Python's str.strip included)
    R1_TEXT,
    f"  \n{THINK}\u3000reason\x1c\n{END_THINK}\u2003answer\x85 ",
    f"{THINK}no closing tag, all reasoning",
    f"no opening tag{END_THINK}answer",
    f"{THINK}a{END_THINK}b{END_THINK}c",
    f"{THINK}{THINK}twice{END_THINK}",
    "",
    f"{THINK}é ünïcode ∑ 数学{END_THINK}\n\nΩ = 4",
    f"{' ' * 56}{THINK}r{END_THINK}a",  # the tag ends at the 63rd character: inside the searched head
    f"{THINK} \n\u2028 {END_THINK} \t ",  # all-whitespace parts strip to empty
    f"{THINK}{END_THINK}",
    f"{THINK}r \u205f{END_THINK}\u3000 a b\u2029",
    f"{THINK}{'x' * 300} \n{END_THINK}{'y' * 300}\u3000",  # parts longer than the bytes read at each end
    f"{THINK}\u3000{'é' * 300}\u2003{END_THINK}\u3000{'数' * 300}\u205f",  # window ends inside characters
]


def mot_edge_rows() -> list[dict]:
    origins = ["open-r1/codeforces-cots", "Math-Thing", "science", "open-r1/OpenR1-Math-220k"]
    return [
        {
            "messages": [
                {"content": f"  Problem {i}? ", "role": "user"},
                {"content": text, "role": "assistant"},
                *([{"content": "more", "role": "user"}] if i % 2 else []),
            ],
            "num_tokens": 0 if i % 3 == 0 else 100 + i,
            "source": origins[i % len(origins)],
        }
        for i, text in enumerate(MOT_EDGES)
    ]


def record_path_rows(name: str, path: Path, subset: str | None = None) -> list[dict]:
    """The reference: every record through the adapter's per-record convert, then imported_row (make_row over
    ROW), as the import did before it went column-wise."""
    from distill.config import DatasetSource
    from distill.generate.run import GenerateRun, imported_row
    from distill.sources import Record, records

    src = DatasetSource(adapter=name, path=str(path), subset=subset)
    run = GenerateRun(recipe_from_dict({"name": "ref"}), None, path.parent, "k")
    return [
        imported_row(run, t)
        for row, data in enumerate(records(src), 1)
        for t in ADAPTERS[name].convert(Record(data, name, row), src, ADAPTERS[name])
    ]


@pytest.mark.parametrize("name", [*sorted(FIXTURES), "mot-edges", "mot-edges-all", "mot-fallback"])
def test_import_equals_the_record_path(tmp_path, name):
    subset = "all" if name == "mot-edges-all" else None
    if name.startswith("mot-"):
        rows = mot_edge_rows()
        if name == "mot-fallback":  # an assistant turn first: the batch takes the record path
            rows[0]["messages"] = rows[0]["messages"][::-1]
        path, adapter = write_rows(rows, tmp_path / "data" / "x.parquet"), "mixture-of-thoughts"
    else:
        build, ext = FIXTURES[name]
        path, adapter = write_rows(build(), tmp_path / "data" / f"train.{ext}"), name
    dataset = {"adapter": adapter, "path": str(path), **({"subset": subset} if subset else {})}
    out = import_run(tmp_path, [dataset], shard_size=3)
    assert shard_rows(out) == record_path_rows(adapter, path, subset)


def test_mot_batches_take_the_column_path():
    from distill.config import DatasetSource
    from distill.sources import mot_columns

    batch = pa.RecordBatch.from_pylist(mot_edge_rows())
    src, ad = DatasetSource(adapter="mixture-of-thoughts"), ADAPTERS["mixture-of-thoughts"]
    assert mot_columns(batch, src, ad) is not None
    spoiled = mot_edge_rows()
    spoiled[2]["messages"][0]["role"] = None
    assert mot_columns(pa.RecordBatch.from_pylist(spoiled), src, ad) is None
    long_lead = mot_edge_rows()
    long_lead[1]["messages"][1]["content"] = " " * 60 + R1_TEXT  # <think> cut by the head: the record path
    assert mot_columns(pa.RecordBatch.from_pylist(long_lead), src, ad) is None
    long_tail = mot_edge_rows()
    long_tail[1]["messages"][1]["content"] = R1_TEXT + " " * 300  # past the bytes read: may strip further
    assert mot_columns(pa.RecordBatch.from_pylist(long_tail), src, ad) is None


def test_imported_shards_keep_the_text_once_and_curate_reads_it_back(tmp_path):
    """The column-wise import stores each completion once (reasoning and answer as byte spans of it); curate's
    kept and dropped rows have the set's completion and split_think's parts byte for byte."""
    from distill.curate.run import curate
    from distill.sources import split_think

    path = write_rows(mot_edge_rows(), tmp_path / "d" / "x.parquet")
    recipe = recipe_from_dict(
        {
            "name": "once",
            "run_dir": str(tmp_path / "run"),
            "generate": {
                "source": "dataset",
                "datasets": [{"adapter": "mixture-of-thoughts", "path": str(path)}],
            },
            "curate": {
                "decontaminate": {"benchmarks": []},
                "filters": {"drop_truncated": False, "drop_malformed": False},
                "verify": {"workers": 1},
            },
        }
    )
    run = recipe.run_path()
    generate(recipe, None, run / "generate")
    shard = pq.read_table(next((run / "generate").glob("part-*.parquet")))
    assert shard["reasoning"].null_count == shard["answer"].null_count == shard.num_rows
    assert shard["trace_spans"].null_count == 0
    curate(recipe, run / "generate", run / "curate")
    rows = [r for p in sorted((run / "curate").rglob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert sorted(r["completion"] for r in rows) == sorted(
        r["messages"][1]["content"] for r in mot_edge_rows()
    )
    for r in rows:
        reasoning, answer, _ = split_think(r["completion"])
        assert (r["reasoning"].encode(), r["answer"].encode()) == (reasoning.encode(), answer.encode())
        assert "trace_spans" not in r


def test_trace_texts_slices_spans_keeps_text_rows_and_rejects_bad_spans():
    from distill.sources import SPANS, trace_texts

    def table(spans):
        return pa.table(
            {
                "completion": ["ab cd", "é!", "raw"],
                "reasoning": [None, None, "kept"],
                "answer": [None, None, "as is"],
                "trace_spans": pa.array(spans, SPANS()),
            }
        )

    got = trace_texts(table([[0, 2, 3, 5], [0, 2, 2, 3], None])).to_pydict()
    assert got == {
        "completion": ["ab cd", "é!", "raw"],
        "reasoning": ["ab", "é", "kept"],
        "answer": ["cd", "!", "as is"],
    }
    for bad in (
        [[0, 2, 3, 6], [0, 2, 2, 3], None],
        [[0, 2, 3, 5], [0, 1, 2, 3], None],
        [[2, 1, 3, 5], None, None],
    ):
        with pytest.raises(DistillError, match="trace_spans"):
            trace_texts(table(bad))


def test_py_space_is_what_str_strip_strips():
    from distill.sources import PY_SPACE

    assert set(PY_SPACE) == {chr(c) for c in range(0x110000) if chr(c).isspace()}


def test_shards_stream_across_batches_and_hash_what_they_wrote(tmp_path, monkeypatch):
    import hashlib

    from distill import sources

    monkeypatch.setattr(sources, "BATCH_ROWS", 4)  # pieces of 4 records fill shards of 3
    rows = [dict(mot_rows()[0], num_tokens=i + 1) for i in range(10)]
    path = write_rows(rows, tmp_path / "data" / "x.parquet")
    out = import_run(tmp_path, [{"adapter": "mixture-of-thoughts", "path": str(path)}], shard_size=3)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [o["rows"] for o in manifest["outputs"]] == [3, 3, 3, 1]
    for o in manifest["outputs"]:
        assert o["sha256"] == hashlib.sha256((out / o["file"]).read_bytes()).hexdigest()
    assert [r["completion_tokens"] for r in shard_rows(out)] == list(range(1, 11))


def test_plan_counts_the_imported_rows(tmp_path):
    from distill.plan import plan

    a = write_rows([mot_rows()[0]] * 30, tmp_path / "a" / "x.parquet")  # counted from the footer
    b = write_rows(limo_rows() * 12, tmp_path / "b" / "x.jsonl")
    datasets = [
        {"adapter": "mixture-of-thoughts", "path": str(a), "weight": 0.5},
        {"adapter": "limo", "path": str(b), "limit": 5},
    ]
    recipe = recipe_from_dict({"name": "p", "generate": {"source": "dataset", "datasets": datasets}})
    assumptions, source, _ = plan(recipe, [])
    assert (assumptions.prompts, source["prompts"]) == (15 + 5, "recipe: generate.datasets")
    hub = recipe_from_dict(
        {"name": "h", "generate": {"source": "dataset", "datasets": [{"adapter": "limo"}]}}
    )
    with pytest.raises(DistillError, match=r"generate.datasets\[0\]: GAIR/LIMO is read from the Hub"):
        plan(hub, [])


def test_read_ahead_keeps_order_raises_in_place_and_stops_when_dropped():
    import threading
    import time

    from distill.sources import read_ahead

    assert list(read_ahead(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield from (1, 2)
        raise DistillError("x.parquet: cannot read Parquet")

    got = []
    with pytest.raises(DistillError, match="x.parquet: cannot read Parquet"):
        for item in read_ahead(failing()):
            got.append(item)
    assert got == [1, 2]  # the items before the error all arrive first

    made = []

    def endless():
        while True:
            made.append(len(made))
            yield made[-1]

    stream = read_ahead(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # as when a limit ends the loop early
    time.sleep(0.5)  # s: the reader checks for a stop every 0.1 s
    assert len(made) <= 4  # 1 taken + 2 queued + 1 waiting for room: it stopped
    assert not any(t.name.endswith("(pump)") for t in threading.enumerate())


def test_parquet_reading_memory_does_not_grow_with_the_file(tmp_path):
    """Arrow's allocations while streaming a 40-row-group file stay near one row group's worth (a single
    iter_batches over the file kept every group's compressed pages: memory grew with the file)."""
    import random

    from distill.sources import parquet_batches

    rng = random.Random(0)
    path = tmp_path / "x.parquet"
    with pq.ParquetWriter(path, pa.schema([("text", pa.string())]), compression="zstd") as w:
        for _ in range(40):  # ~250 KB of incompressible text per row group
            w.write_table(
                pa.table({"text": ["".join(rng.choices("abcdefghij", k=25_000)) for _ in range(10)]})
            )
    size, base, peak, rows = path.stat().st_size, pa.total_allocated_bytes(), 0, 0
    for batch in parquet_batches(path):
        rows += batch.num_rows
        del batch
        peak = max(peak, pa.total_allocated_bytes() - base)
    assert rows == 400
    assert size > 4_000_000 and peak < size / 4


# ---------------------------------------------------------------- strict types (issue 25: item 2)

OPENR1_SPOILS = [  # row 2 of the published file (3 generations), spoiled one column at a time
    (
        "correctness_math_verify",
        ["false", False, False],
        "item 0: expected bool, got str",
    ),  # "false" is no bool
    ("correctness_math_verify", [1, 0, 0], "item 0: expected bool, got int"),
    ("correctness_math_verify", [True, False], "2 values for 3 generations"),
    ("correctness_llama", [True, False], "2 values for 3 generations"),
    ("correctness_llama", [True, "yes", None], "item 1: expected bool, got str"),
    ("is_reasoning_complete", [True, True, None], "item 2: expected bool, got NoneType"),
    ("finish_reasons", ["stop", "stop", "stop", "length"], "4 values for 3 generations"),
    ("finish_reasons", ["stop", 7, "stop"], "item 1: expected str, got int"),
    ("generations", ["<think>a</think>b", None, "c"], "item 1: expected str, got NoneType"),
    ("correctness_llama", "true", "expected list, got str"),
]


@pytest.mark.parametrize(("column", "value", "message"), OPENR1_SPOILS)
def test_openr1_math_verdicts_and_parallel_lists_are_strict(tmp_path, column, value, message):
    rows = openr1_math_rows()
    rows[1][column] = value
    path = write_rows(rows, tmp_path / "d" / "x.jsonl")  # JSONL: any type can be written
    with pytest.raises(DistillError) as err:
        import_run(tmp_path, [{"adapter": "openr1-math", "path": str(path)}])
    assert str(err.value) == f"dataset 'openr1-math': {path}: row 2: column '{column}': {message}"
    assert not list((tmp_path / "run" / "generate").glob("part-*"))  # nothing written


@pytest.mark.parametrize(
    ("grade", "message"), [("Maybe", "expected Yes or No, got 'Maybe'"), (1, "expected str, got int")]
)
def test_s1k_grade_is_yes_or_no(tmp_path, grade, message):
    path = write_rows([dict(s1k_rows()[0], deepseek_grade=grade)], tmp_path / "d" / "x.jsonl")
    with pytest.raises(DistillError) as err:
        import_run(tmp_path, [{"adapter": "s1k", "path": str(path)}])
    assert str(err.value) == f"dataset 's1k': {path}: row 1: column 'deepseek_grade': {message}"


def test_cli_string_verdict_exits_2_with_one_line(tmp_path):
    import subprocess
    import sys

    rows = openr1_math_rows()
    rows[0]["correctness_math_verify"] = ["false", "false"]
    path = write_rows(rows, tmp_path / "d" / "x.jsonl")
    recipe = tmp_path / "r.yaml"
    sets = f"[{{adapter: openr1-math, path: {path}}}]"
    recipe.write_text(
        f"name: r\nrun_dir: {tmp_path / 'run'}\ngenerate: {{source: dataset, datasets: {sets}}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "generate", str(recipe)], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    want = f"dataset 'openr1-math': {path}: row 1: column 'correctness_math_verify': item 0: expected bool, got str"
    assert want in done.stderr + done.stdout
    assert not list((tmp_path / "run" / "generate").glob("part-*"))


BAD_VALUES = [None, 0, 1.5, True, "x", [], {}, ["x"], [{}], [{"role": 1}], {"a": None}]


def spoiled(row: dict):
    """Every row with one field (top-level, or a key of the first element of a list of objects) replaced by
    each of BAD_VALUES: (what, row)."""
    import copy

    for key, value in row.items():
        for bad in BAD_VALUES:
            yield f"{key}={bad!r}", {**row, key: bad}
        if isinstance(value, list) and value and isinstance(value[0], dict):
            for sub in value[0]:
                for bad in BAD_VALUES:
                    out = copy.deepcopy(row)
                    out[key][0][sub] = bad
                    yield f"{key}[0].{sub}={bad!r}", out
                    if len(value) > 1 and isinstance(value[1], dict) and sub in value[1]:
                        out = copy.deepcopy(row)
                        out[key][1][sub] = bad
                        yield f"{key}[1].{sub}={bad!r}", out


COLUMNS = {
    "problem": "q",
    "completion": "r1",
    "reference": "gold",
    "prompt_id": "id",
    "domain": "d",
    "verified": "ok",
}
MAPPED_ROWS = {
    "mine.jsonl": [
        {"q": "1+1?", "r1": "<think>1+1=2</think>2", "gold": "2", "id": 7, "d": "math", "ok": True}
    ]
}


@pytest.mark.parametrize("name", [*sorted(SETS), "columns"])
def test_no_malformed_row_of_any_adapter_ends_in_a_traceback(name):
    """Each published row of each set (and a row of a `columns` mapping), each field spoiled: the record path
    (what JSONL and mixed-type batches take) gives traces of the trace schema or one DistillError, never another
    exception."""
    from distill.config import DatasetSource
    from distill.sources import chunk_traces

    src = DatasetSource(adapter=name, **({"columns": COLUMNS} if name == "columns" else {}))
    adapter, files = ADAPTERS[name], (MAPPED_ROWS if name == "columns" else SETS[name]())
    cases = 0
    for rows in files.values():
        for what, row in spoiled(rows[0]):
            try:
                chunk_traces([row], [0], 1, src, adapter, "f.jsonl")
            except DistillError as err:
                assert str(err).startswith(f"dataset '{name}': f.jsonl: row 1: column '"), (what, str(err))
            cases += 1
    assert cases >= 30


# ---------------------------------------------------------------- files as published (item 3)


def snapshot_traces(tmp_path: Path, name: str, subset: str | None, path: Path | None = None) -> list[dict]:
    root = path or snapshot(name, tmp_path / "hub" / name)
    dataset = {"adapter": name, "path": str(root), **({"subset": subset} if subset else {})}
    return shard_rows(import_run(tmp_path / (subset or "none"), [dataset]))


@pytest.mark.parametrize(
    ("name", "subset", "traces", "source"),
    [
        ("mixture-of-thoughts", "math", 3, "open-r1/Mixture-of-Thoughts:math"),
        ("mixture-of-thoughts", "code", 2, "open-r1/Mixture-of-Thoughts:code"),
        ("mixture-of-thoughts", "all", 7, "open-r1/Mixture-of-Thoughts:all"),
        ("openr1-math", "default", 5, "open-r1/OpenR1-Math-220k:default"),  # the Hub's default config: data/
        ("openr1-math", "extended", 2, "open-r1/OpenR1-Math-220k:extended"),
        ("am-r1", "am_0.9M", 2, "a-m-team/AM-DeepSeek-R1-Distilled-1.4M:am_0.9M"),  # am_0.9M.jsonl.zst
        ("am-r1", "am_0.5M", 1, "a-m-team/AM-DeepSeek-R1-Distilled-1.4M:am_0.5M"),
        (
            "openthoughts3",
            None,
            4,
            "open-thoughts/OpenThoughts3-1.2M",
        ),  # data/ only; .cache/ and README skipped
    ],
)
def test_a_snapshot_download_folder_reads_by_subset(tmp_path, name, subset, traces, source):
    rows = snapshot_traces(tmp_path, name, subset)
    assert len(rows) == traces and {r["source"] for r in rows} == {source}


def test_am_zst_reads_like_the_plain_file_and_every_format_gives_the_same_traces(tmp_path):
    """AM ships .jsonl.zst: as a folder, as the file, and as .jsonl / .jsonl.gz / .parquet of the same rows, the
    import gives the same traces (the Chinese problem included)."""
    rows = SETS["am-r1"]()["am_0.9M.jsonl.zst"] + SETS["am-r1"]()["am_0.5M.jsonl.zst"]
    got = {}
    for ext in ("jsonl.zst", "jsonl.gz", "jsonl", "parquet"):
        path = write_file(rows, tmp_path / ext / f"am.{ext}")
        out = import_run(tmp_path / f"run-{ext}", [{"adapter": "am-r1", "path": str(path)}])
        got[ext] = [(r["problem"], r["reasoning"], r["answer"], r["reference"]) for r in shard_rows(out)]
    assert got["jsonl.zst"] == got["jsonl.gz"] == got["jsonl"] == got["parquet"]
    assert [p for p, *_ in got["jsonl"]][2] == "写一首关于春天的短诗。"
    assert got["jsonl"][0][3] == "-e^{-x} - \\frac{1}{2}e^{-2x} + C" and got["jsonl"][1][3] is None


def test_the_hub_path_decodes_ams_jsonl_zst(tmp_path):
    """A hub id streams through `datasets` (sources.hub_records), which reads AM's .jsonl.zst through fsspec only
    when the zstandard package is installed (a distill dependency for that reason). The same reader on a local
    file: the rows come back as written."""
    import datasets

    rows = SETS["am-r1"]()["am_0.9M.jsonl.zst"]
    path = write_file(rows, tmp_path / "am_0.9M.jsonl.zst")
    got = list(datasets.load_dataset("json", data_files=str(path), split="train", streaming=True))
    assert [r["messages"] for r in got] == [r["messages"] for r in rows]


def test_bad_files_are_one_error_naming_the_file(tmp_path):
    rows = limo_rows()
    good = write_file(rows * 3, tmp_path / "a" / "x.jsonl.zst")
    cut = tmp_path / "cut" / "x.jsonl.zst"
    cut.parent.mkdir()
    cut.write_bytes(good.read_bytes()[:-8])  # a download cut short
    cases = {
        cut: f"{cut}: row 1: cannot decompress (Truncated compressed stream)",
        write_file([], tmp_path / "e" / "x.jsonl"): "empty file (no records)",
        write_file([], tmp_path / "ez" / "x.jsonl.zst"): "empty file (no records)",
        write_file(rows, tmp_path / "b" / "x.jsonl.gz").rename(tmp_path / "b" / "x.jsonl.bz2"): (
            "unknown compression '.bz2' (distill reads .gz, .zst)"
        ),
        tmp_path / "no-such-folder": "no such file or folder",
    }
    latin = tmp_path / "l" / "x.jsonl"
    latin.parent.mkdir()
    latin.write_bytes('{"question": "caf\xe9"}\n'.encode("latin-1"))
    cases[latin] = f"{latin}: row 1: not UTF-8 text (invalid continuation byte at byte 17)"
    for path, message in cases.items():
        with pytest.raises(DistillError) as err:
            import_run(tmp_path / "run", [{"adapter": "limo", "path": str(path)}])
        assert message in str(err.value) and str(path) in str(err.value), str(err.value)
    mot, am = snapshot("mixture-of-thoughts", tmp_path / "mot"), snapshot("am-r1", tmp_path / "am")
    bare = snapshot(
        "mixture-of-thoughts", tmp_path / "bare", card=False
    )  # a README without the card's configs
    subsets = {
        (mot, "maths"): "mot: no subset 'maths' (the card's configs: all, code, math, science)",
        (
            mot,
            None,
        ): "mot: holds several subsets and no default (the card's configs: all, code, math, science)",
        (
            am,
            None,
        ): "am: holds several subsets and no default (the card's configs: am_0.5M, am_0.9M, am_0.9M_sample_1k)",
        (bare, None): "bare: holds the subsets all, code, math, science: set subset",
        (bare, "maths"): "bare: no subset 'maths' (folders / files: all, code, math, science)",
    }
    for (root, subset), message in subsets.items():
        adapter = "am-r1" if root == am else "mixture-of-thoughts"
        with pytest.raises(DistillError) as err:
            import_run(tmp_path / "run", [{"adapter": adapter, "path": str(root), "subset": subset}])
        assert message in str(err.value), str(err.value)
    assert not list((tmp_path / "run" / "run" / "generate").glob("part-*"))


def test_a_zst_file_streams_in_flat_memory(tmp_path):
    """~40 MB of JSONL in a .zst of a few hundred KB: reading it holds about one READ_BYTES block, not the file."""
    import tracemalloc

    from distill.sources import READ_BYTES, file_records

    row = {"question": "q", "solution": "x" * 4000, "answer": "4"}
    path = write_file([row] * 10_000, tmp_path / "big.jsonl.zst")
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    count = sum(1 for _ in file_records(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 10_000 and peak < 8 * READ_BYTES  # the file decompressed: 40 MB


# ---------------------------------------------------------------- atomic import (item 6)


def shard_set(out: Path) -> list[str]:
    return sorted(p.read_text() for p in out.glob("part-*.parquet"))


@pytest.mark.parametrize("stop_at", range(8))
def test_replace_shards_leaves_one_whole_run_after_a_kill_at_any_step(tmp_path, monkeypatch, stop_at):
    """Each file operation of replace_shards in turn raises (a kill at that point: nothing cleans up after it);
    the next reader (finish_replace, run by prepare_stage, read_shards and curate) then finds the old run's 3
    shards or the new run's 2, never a mix, and the markers go with the old run."""
    import os
    import shutil

    from distill import artifacts

    out, staged = tmp_path / "gen", tmp_path / "gen" / "_import"
    for i in range(3):
        (out / f"part-{i:05d}.parquet").parent.mkdir(parents=True, exist_ok=True)
        (out / f"part-{i:05d}.parquet").write_text(f"old{i}")
    (out / "_done").mkdir()
    (out / "_done" / "part-00000.ok").write_text("")
    staged.mkdir()
    for i in range(2):
        (staged / f"part-{i:05d}.parquet").write_text(f"new{i}")
    calls = {"n": 0}

    def counted(real):
        def op(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == stop_at + 1:
                raise KeyboardInterrupt("killed")
            return real(*args, **kwargs)

        return op

    # the journal's write, 2 shard moves, 1 stale shard + 1 marker unlinked, the staged folder, the journal
    monkeypatch.setattr(os, "replace", counted(os.replace))
    monkeypatch.setattr(Path, "unlink", counted(Path.unlink))
    monkeypatch.setattr(shutil, "rmtree", counted(shutil.rmtree))
    try:
        artifacts.replace_shards(out, staged, markers="_done/*.ok")
        finished = True
    except KeyboardInterrupt:
        finished = False
    monkeypatch.undo()
    assert finished == (stop_at == 7)
    artifacts.finish_replace(out)  # what the next reader runs first
    whole = shard_set(out)
    assert whole in (["old0", "old1", "old2"], ["new0", "new1"]), whole
    assert (
        whole == ["new0", "new1"] if stop_at >= 1 else whole == ["old0", "old1", "old2"]
    )  # 1: journal written
    assert list((out / "_done").glob("*.ok")) == (
        [] if whole[0] == "new0" else [out / "_done" / "part-00000.ok"]
    )
    assert not (out / artifacts.REPLACING).exists()


def test_an_import_killed_after_its_commit_point_is_whole_on_the_next_read(tmp_path, monkeypatch):
    """A second import (fewer shards) killed halfway through moving its shards in: curate's read of the folder
    finishes the move first and sees exactly the second import's rows."""
    import os

    from distill import artifacts
    from distill.curate.run import input_shards

    big = write_file(limo_rows() * 6, tmp_path / "a" / "x.jsonl")
    out = import_run(tmp_path, [{"adapter": "limo", "path": str(big)}], shard_size=2)
    assert len(list(out.glob("part-*.parquet"))) == 3
    small = write_file(mot_rows()[:1], tmp_path / "b" / "x.parquet")
    real, moved = os.replace, []

    def kill_after_one_shard(src, dst):
        if Path(src).parent.name == "_import" and moved:
            raise KeyboardInterrupt("killed")
        moved.append(dst)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", kill_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        import_run(
            tmp_path, [{"adapter": "mixture-of-thoughts", "path": str(small)}], shard_size=2, force=True
        )
    monkeypatch.undo()
    assert (out / artifacts.REPLACING).exists()  # committed, not finished
    assert [p.name for p in input_shards(out)] == ["part-00000.parquet"]
    assert [r["problem"] for r in shard_rows(out)] == [mot_rows()[0]["messages"][0]["content"]]
