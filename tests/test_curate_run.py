"""`distill curate` end to end on inline generate rows: every row's fate, the manifest, the card, resume, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import distill.curate.run as run_mod
from distill.artifacts import (
    Manifest,
    finish_manifest,
    read_manifest,
    read_shards,
    start_manifest,
    write_parquet,
)
from distill.config import CurateConfig, DecontamConfig, DedupConfig, Recipe, SelectConfig, VerifyConfig
from distill.curate.run import curate
from distill.errors import DistillError

ROOT = Path(__file__).resolve().parent.parent
APPLES = "Tom has 3 apples and buys 4 more. How many apples does Tom have now?"
AIME = (
    "Every morning Aya goes for a $9$-kilometer-long walk and stops at a coffee shop afterwards. When she "
    "walks at a constant speed of $s$ kilometers per hour, the walk takes her 4 hours."
)
MBPP_REF = json.dumps(
    {"format": "mbpp", "setup": "", "tests": ["assert double(2) == 4", "assert double(0) == 0"]}
)


def gen_row(
    pid: str,
    k: int,
    problem: str,
    reference: str | None,
    answer: str,
    domain: str = "math",
    reasoning: str | None = None,
    **kw,
) -> dict:
    """One generate-stage row (design.md schema), as the generate stage writes it."""
    reasoning = reasoning if reasoning is not None else f"Sample {k} of {pid}: let me work it out.\nDone."
    row = {
        "prompt_id": pid,
        "domain": domain,
        "problem": problem,
        "reference": reference,
        "source": "gsm8k",
        "license": "MIT",
        "sample_index": k,
        "messages": [{"role": "user", "content": problem}],
        "prompt_text": problem,
        "completion": f"{reasoning}</think>{answer}",
        "reasoning": reasoning,
        "answer": answer,
        "finish_reason": "stop",
        "prompt_tokens": 20,
        "completion_tokens": 100 + 10 * k,
        "flags": [],
        "teacher": "smollm2-135m",
        "sampling": json.dumps({"n": 4, "temperature": 0.6}),
        "seed": k,
    }
    return {**row, **kw}


def write_generate(src: Path, shards: list[list[dict]]) -> Path:
    for i, rows in enumerate(shards):
        write_parquet(rows, src / f"part-{i:05d}.parquet")
    manifest = start_manifest("generate", "test")
    manifest.metrics = {
        "teacher": "smollm2-135m",
        "n": 4,
        "prompts": 12,
        "truncated_rate": 0.0625,
        "malformed_rate": 0.0625,
        "template_default_system": "You are a helpful AI assistant",
    }
    finish_manifest(src, manifest)
    return src


# (row, expected fate: "kept" or the drop reason) -- two shards, in this order; no code rows: this runs
# wherever the suite does, the sandbox's rows are CODE_TABLE
TABLE = [
    (gen_row("apples", 0, APPLES, "7", "So \\boxed{7}."), "kept"),
    (gen_row("apples", 1, APPLES, "7", "So \\boxed{8}."), "wrong"),
    (
        gen_row(
            "apples",
            2,
            APPLES,
            "7",
            "So \\boxed{7}.",
            reasoning="Sample 0 of apples: let me work it out.\nDone.",
        ),
        "duplicate_sample",
    ),  # the same trace as sample 0
    (gen_row("apples", 3, APPLES, "7", "The answer is 7."), "unparseable"),
    (gen_row("apples-copy", 0, APPLES.upper(), "7", "\\boxed{7}"), "duplicate_prompt"),
    (gen_row("aime", 0, AIME, "204", "\\boxed{204}"), "contaminated"),
    (gen_row("noref", 0, "What is 2+2?", None, "\\boxed{4}"), "no_reference"),
    (gen_row("badref", 0, "What is 3+3?", "\\frac{", "\\boxed{6}"), "bad_reference"),
    (
        gen_row("cut", 0, "What is 4+4?", "8", "", flags=["truncated", "malformed"], finish_reason="length"),
        "truncated",
    ),
    (
        gen_row(
            "mixed",
            0,
            "What is 5*5?",
            "25",
            "\\boxed{25}",
            reasoning="五乘以五等于二十五，这很简单，答案是二十五。",
        ),
        "mixed_language",
    ),
    (
        gen_row("codeblock", 0, "What is 6*6?", "36", "\\boxed{36}", reasoning="```python\nprint(6*6)\n```"),
        "code_in_reasoning",
    ),
    (gen_row("mcq", 0, "Pick the even one.\nA) 1\nB) 2\nC) 3\nD) 5", "B", "Answer: B", domain="mcq"), "kept"),
    (
        gen_row("mcq", 1, "Pick the even one.\nA) 1\nB) 2\nC) 3\nD) 5", "B", "Answer: C", domain="mcq"),
        "wrong",
    ),
    (gen_row("chat", 0, "Say hello.", None, "Hello!", domain="general"), "unverified"),
]

# rows only the sandbox can grade (running their tests)
CODE_TABLE = [
    (
        gen_row(
            "code",
            0,
            "Write double(x).",
            MBPP_REF,
            "```python\ndef double(x):\n    return 2 * x\n```",
            domain="code",
        ),
        "kept",
    ),
    (
        gen_row(
            "code",
            1,
            "Write double(x).",
            MBPP_REF,
            "```python\ndef double(x):\n    while True:\n        pass\n```",
            domain="code",
        ),
        "timeout",
    ),
]


def recipe(tmp_path: Path, **curate_kw) -> Recipe:
    kw = {"verify": VerifyConfig(code_timeout_s=2, timeout_s=10), **curate_kw}
    return Recipe(name="curate-test", run_dir=str(tmp_path / "run"), curate=CurateConfig(**kw))


@pytest.fixture(autouse=True)
def cards(tmp_path, monkeypatch) -> Path:
    """The repository copy of each card goes here, not into the checkout's data_cards/."""
    monkeypatch.setenv("DISTILL_CARDS_DIR", str(tmp_path / "data_cards"))
    return tmp_path / "data_cards"


@pytest.fixture
def src(tmp_path) -> Path:
    rows = [r for r, _ in TABLE]
    return write_generate(tmp_path / "run" / "generate", [rows[:8], rows[8:]])


def fates(out: Path) -> dict[tuple[str, int], str]:
    got = {(r["prompt_id"], r["sample_index"]): "kept" for r in read_shards(out / "kept")}
    got.update({(r["prompt_id"], r["sample_index"]): r["drop_reason"] for r in read_shards(out / "dropped")})
    return got


def run_curate(recipe: Recipe, src: Path, out: Path) -> Manifest:
    """curate(), then the accounting every run must satisfy (every test here curates through this)."""
    manifest = curate(recipe, src, out)
    assert_accounted(src, out, manifest)
    return manifest


def assert_accounted(src: Path, out: Path, m: Manifest) -> None:
    """rows_in - rows_out == sum(dropped), on disk as in the manifest; each drop reason is a step of the chain,
    counted in the manifest and in the card's yields table, in chain order."""
    dropped = Counter(r["drop_reason"] for r in read_shards(out / "dropped"))
    assert m.rows_in == sum(1 for _ in read_shards(src))
    assert m.rows_out == sum(1 for _ in read_shards(out / "kept"))
    assert m.rows_in - m.rows_out == sum(m.dropped.values()) == sum(dropped.values())
    assert m.dropped == dict(dropped) == read_manifest(out).dropped
    chain = [reason for reason, _ in run_mod.STEPS]
    assert list(m.dropped) == [r for r in chain if r in m.dropped]
    card = (out / "card.md").read_text()
    rows = [card.index(f"| {reason} | {n} |") for reason, n in m.dropped.items()]
    assert rows == sorted(rows)


def test_every_row_gets_its_fate(tmp_path, src, cards):
    """The whole chain on non-code rows: no sandbox needed (the code rows are test_code_rows_get_their_fate)."""
    out = tmp_path / "run" / "curate"
    m = run_curate(recipe(tmp_path), src, out)
    expected = {(r["prompt_id"], r["sample_index"]): fate for r, fate in TABLE}
    assert fates(out) == expected
    assert (m.rows_in, m.rows_out) == (len(TABLE), 2)
    assert m.dropped == {k: v for k, v in Counter(expected.values()).items() if k != "kept"}
    assert list(m.dropped)[:2] == ["duplicate_prompt", "contaminated"]  # chain order
    kept = {r["prompt_id"]: r for r in read_shards(out / "kept")}
    assert (kept["apples"]["verdict"], kept["apples"]["grader"], kept["apples"]["pred_answer"]) == (
        "correct",
        "math-verify",
        "7",
    )
    assert kept["mcq"]["grader"] == "mcq-letter"
    dropped = {(r["prompt_id"], r["sample_index"]): r for r in read_shards(out / "dropped")}
    assert dropped[("apples-copy", 0)]["drop_detail"] == "apples"
    assert dropped[("apples", 2)]["drop_detail"] == "apples"  # the prompt whose trace came first
    assert "aime24" in dropped[("aime", 0)]["drop_detail"]
    assert (dropped[("badref", 0)]["verdict"], dropped[("badref", 0)]["grader"]) == (None, "math-verify")
    assert m.metrics["decontamination"]["benchmarks"]["aime24"]["hits"] == 1
    assert m.metrics["verification"]["math"] == {
        "correct": 1,
        "wrong": 1,
        "unparseable": 1,
        "bad_reference": 1,
    }
    assert "code" not in m.metrics["verification"]
    assert m.metrics["dedup"] == {
        "prompts": 10,
        "exact_duplicates": 1,
        "near_duplicates": 0,
        "minhash_threshold": 0.8,
    }
    assert m.metrics["sources"]["gsm8k"] == {"license": "MIT", "rows_in": len(TABLE), "rows_out": 2}
    assert sorted(p.name for p in out.iterdir()) == [
        "card.md",
        "dropped",
        "kept",
        "lengths.png",
        "manifest.json",
    ]
    card = (cards / "curate-test.md").read_text()
    assert card == (out / "card.md").read_text().replace("lengths.png", "curate-test-lengths.png")
    for text in (
        "| gsm8k | MIT |",
        "smollm2-135m",
        "| contaminated | 1 |",
        "aime24",
        "unparseable",
        "Disagreements",
        "12 prompts x 4 samples; truncated 6.2%",
        "default system prompt: `You are a helpful AI assistant`",
    ):
        assert text in card
    assert (cards / "curate-test-lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert not (ROOT / "data_cards" / "curate-test.md").exists()  # the checkout's own folder is untouched
    assert read_manifest(out).rows_out == 2
    assert curate(recipe(tmp_path), src, out).started_at == m.started_at  # fresh: skipped


@pytest.mark.sandbox
def test_code_rows_get_their_fate(tmp_path):
    """Code rows are graded by running their tests in the sandbox: a passing program is kept, a hung one is
    dropped as a timeout (never as wrong)."""
    src = write_generate(tmp_path / "gen", [[r for r, _ in CODE_TABLE]])
    out = tmp_path / "out"
    m = run_curate(recipe(tmp_path, decontaminate=DecontamConfig(benchmarks=[])), src, out)
    assert fates(out) == {(r["prompt_id"], r["sample_index"]): fate for r, fate in CODE_TABLE}
    assert [r["grader"] for r in read_shards(out / "kept")] == ["sandbox"]
    assert m.metrics["verification"]["code"] == {"correct": 1, "timeout": 1}
    assert m.metrics["graders"] == {"sandbox": 2}


def test_a_new_step_is_one_list_entry(tmp_path):
    """A difficulty filter (drop prompts every graded sample of which is correct: too easy to teach anything)
    added as one entry of STEPS: its rows are dropped, counted in the manifest and the card, in chain order."""
    rows = [
        gen_row("easy", 0, APPLES, "7", "\\boxed{7}"),
        gen_row("easy", 1, APPLES, "7", "So it is \\boxed{7}."),
        gen_row("hard", 0, "What is 12 * 13?", "156", "\\boxed{156}"),
        gen_row("hard", 1, "What is 12 * 13?", "156", "\\boxed{146}"),
    ]
    src = write_generate(tmp_path / "gen", [rows[:3], rows[3:]])

    def too_easy(run):
        graded: dict[str, list[str]] = {}
        for shard in run.shards:
            for pid, verdict in zip(shard.column("prompt_id"), shard.verdict, strict=True):
                graded.setdefault(pid, []).append(verdict)
        easy = {pid for pid, vs in graded.items() if vs and all(v == "correct" for v in vs)}
        return {
            (s, i): "pass rate 1.0"
            for s, shard in enumerate(run.shards)
            for i in shard.alive()
            if shard.column("prompt_id")[i] in easy
        }

    steps = list(run_mod.STEPS)
    steps.insert(len(steps) - 1, ("too_easy", too_easy))  # before selection
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_mod, "STEPS", steps)
        m = run_curate(recipe(tmp_path, decontaminate=DecontamConfig(benchmarks=[])), src, tmp_path / "out")
    assert m.dropped == {"wrong": 1, "too_easy": 2} and list(m.dropped) == ["wrong", "too_easy"]
    assert fates(tmp_path / "out") == {
        ("easy", 0): "too_easy",
        ("easy", 1): "too_easy",
        ("hard", 0): "kept",
        ("hard", 1): "wrong",
    }
    assert {r["drop_detail"] for r in read_shards(tmp_path / "out" / "dropped")} == {"pass rate 1.0", None}
    assert "| too_easy | 2 | 50.0% | 1 |" in (tmp_path / "out" / "card.md").read_text()


def test_a_row_dropped_outside_the_chain_stops_the_manifest(tmp_path, src):
    """The invariant guards write_outputs: a drop reason no step names would be left out of manifest.dropped,
    so the stage fails instead of writing counts that do not add up."""
    run = run_mod.Run(CurateConfig(), [run_mod.read_shard(p) for p in run_mod.input_shards(src)], tmp_path)
    run.shards[0].reason[0] = "not_a_step"
    with pytest.raises(RuntimeError, match="lost count"):
        run_mod.write_outputs(run, tmp_path / "out", start_manifest("curate", "x"))


def test_the_chain_order():
    """The order a row's first reason is decided in (and the card's yields table follows)."""
    assert run_mod.REASONS == (
        "duplicate_prompt",
        "near_duplicate_prompt",
        "contaminated",
        "difficulty",
        "no_reference",
        "truncated",
        "malformed",
        "empty_answer",
        "too_short",
        "too_long",
        "mixed_language",
        "long_paragraph",
        "code_in_reasoning",
        "repetition",
        "duplicate_sample",
        "duplicate_trace",
        "contaminated_trace",
        "bad_reference",
        "wrong",
        "unparseable",
        "timeout",
        "unverified",
        "not_selected",
    )


def test_selection_policies(tmp_path):
    rows = [
        gen_row("q", k, APPLES, "7", "\\boxed{7}", completion_tokens=tok)
        for k, tok in enumerate([300, 120, 200])
    ]
    rows.append(gen_row("chat", 0, "Say hello.", None, "Hello!", domain="general"))
    src = write_generate(tmp_path / "gen", [rows])
    no_bench = DecontamConfig(benchmarks=[])
    for policy, kept in [("all_correct", {0, 1, 2}), ("max_k", {0, 1}), ("shortest", {1})]:
        select = SelectConfig(policy=policy, k=2, keep_unverified_domains=True)
        out = tmp_path / policy
        run_curate(recipe(tmp_path, select=select, decontaminate=no_bench), src, out)
        got = fates(out)
        assert {k for (p, k), fate in got.items() if p == "q" and fate == "kept"} == kept
        assert {fate for (p, _), fate in got.items() if p == "q"} - {"kept"} <= {"not_selected"}
        assert got[("chat", 0)] == "kept"  # unverified, kept on request, verdict None
        assert [r["verdict"] for r in read_shards(out / "kept") if r["prompt_id"] == "chat"] == [None]


def test_near_duplicate_prompts(tmp_path):
    long = (
        "A farmer has 12 cows and 30 chickens on a small farm near the river, and every cow eats two bales "
        "of hay per day while every chicken eats a cup of grain; how many bales of hay are eaten in a week"
    )
    rows = [
        gen_row("a", 0, long, "168", "\\boxed{168}"),
        gen_row("b", 0, long.replace("small", "tiny"), "168", "\\boxed{168}"),
    ]
    src = write_generate(tmp_path / "gen", [rows])
    for threshold, fate in [(0.7, "near_duplicate_prompt"), (None, "kept")]:
        out = tmp_path / f"out-{threshold}"
        m = run_curate(
            recipe(
                tmp_path,
                dedup=DedupConfig(minhash_threshold=threshold),
                decontaminate=DecontamConfig(benchmarks=[]),
            ),
            src,
            out,
        )
        assert fates(out)[("b", 0)] == fate
        assert m.metrics["dedup"]["near_duplicates"] == (fate != "kept")


def test_resume_after_a_crash_reuses_finished_shards(tmp_path, monkeypatch):
    shards = [
        [
            gen_row(
                f"p{s}",
                k,
                f"What is {s} + {k} plus one hundred?",
                str(s + k + 100),
                f"\\boxed{{{s + k + 100}}}",
            )
            for k in range(2)
        ]
        for s in range(3)
    ]
    src = write_generate(tmp_path / "gen", shards)
    out = tmp_path / "out"
    real, calls = run_mod.grade_shard, []

    def crash_on_third(shard, *args):
        calls.append(shard.name)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(shard, *args)

    monkeypatch.setattr(run_mod, "grade_shard", crash_on_third)
    cfg = recipe(tmp_path, decontaminate=DecontamConfig(benchmarks=[]))
    with pytest.raises(RuntimeError):
        curate(cfg, src, out)
    assert not (out / "manifest.json").exists()
    calls.clear()
    m = run_curate(cfg, src, out)
    assert calls == ["part-00002.parquet"]  # the first two shards came from the cache
    assert m.rows_out == 6 and not (out / "_work").exists()


def test_bad_input_is_named(tmp_path):
    cfg = recipe(tmp_path, decontaminate=DecontamConfig(benchmarks=[]))
    src = write_generate(tmp_path / "gen", [[gen_row("a", 0, APPLES, "7", "\\boxed{7}")]] * 2)
    (src / "part-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DistillError, match="part-00001.parquet: cannot read Parquet"):
        curate(cfg, src, tmp_path / "out")
    assert not (tmp_path / "out" / "kept").exists() and not (tmp_path / "out" / "manifest.json").exists()
    row = gen_row("a", 0, APPLES, "7", "\\boxed{7}")
    del row["reasoning"]
    src2 = write_generate(tmp_path / "gen2", [[row]])
    with pytest.raises(DistillError, match="part-00000.parquet: missing column.*reasoning"):
        curate(cfg, src2, tmp_path / "out2")
    finish_manifest(tmp_path / "empty", start_manifest("generate", "x"))  # finished, but no shards
    with pytest.raises(DistillError, match="no part-"):
        curate(cfg, tmp_path / "empty", tmp_path / "out3")


class ScriptedJudge:
    """A Backend (generate.backends Protocol) that answers from a script: it stands in for the judge model
    so the routing (who is asked, who decides, disagreements) is checked without starting an engine."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.prompts = answers, []

    def generate(self, requests, sampling, on_done=None):
        from distill.engines.backends import Completion

        self.prompts += [r.messages[0]["content"] for r in requests]
        return [
            [
                Completion(
                    next(v for k, v in self.answers.items() if k in r.messages[0]["content"]), "stop", 0, 0
                )
            ]
            for r in requests
        ]

    def close(self):
        pass


def test_llm_judge_decides_unparseable_and_disagreements_are_counted(tmp_path, monkeypatch):
    import distill.engines.backends as backends
    from distill.config import TeacherConfig

    rows = [
        gen_row("q", 0, APPLES, "7", "So \\boxed{7}."),  # rule: correct, judge: INCORRECT -> disagreement
        gen_row("q", 1, APPLES, "7", "Tom ends up with seven apples."),  # rule: unparseable, judge decides
        gen_row("q", 2, APPLES, "7", "So \\boxed{9}."),
    ]  # rule: wrong, judge agrees
    src = write_generate(tmp_path / "gen", [rows])
    judge = ScriptedJudge(
        {
            "\\boxed{7}": "INCORRECT",
            "seven apples": "<think>7 = seven</think> CORRECT",
            "\\boxed{9}": "INCORRECT",
        }
    )
    monkeypatch.setattr(backends, "make_backend", lambda cfg: judge)
    teacher = TeacherConfig(model="judge-model", backend="openai", base_url="http://127.0.0.1:9/v1")
    out = tmp_path / "out"
    m = run_curate(
        recipe(
            tmp_path,
            verify=VerifyConfig(judge=teacher, judge_sample=1.0),
            decontaminate=DecontamConfig(benchmarks=[]),
        ),
        src,
        out,
    )
    kept = {r["sample_index"]: r for r in read_shards(out / "kept")}
    assert set(kept) == {0, 1}
    assert (kept[1]["verdict"], kept[1]["grader"], kept[1]["judge_verdict"]) == (
        "correct",
        "judge:judge-model",
        "correct",
    )
    assert (kept[0]["grader"], kept[0]["judge_verdict"]) == ("math-verify", "wrong")  # the rule decides
    assert m.metrics["judge"]["disagreements"] == 1 and m.metrics["judge"]["both_graded"] == 2
    assert "Reference answer:\n7" in judge.prompts[0]
    assert "disagreed on 1" in (out / "card.md").read_text()


def test_cli_curate_writes_the_card_into_the_repository_of_the_package(tmp_path):
    """Run from a folder outside the checkout, the CLI puts the card into the data_cards/ of the checkout the
    package is imported from (a copy of this one here, so the real data_cards/ stays untouched), never ./"""
    repo, cwd = tmp_path / "repo", tmp_path / "elsewhere"
    for part in ("distill", "cli"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    rows = [gen_row("a", 0, APPLES, "7", "\\boxed{7}"), gen_row("a", 1, APPLES, "7", "\\boxed{6}")]
    src = write_generate(cwd / "runs" / "cli-test" / "generate", [rows])
    (cwd / "r.yaml").write_text("name: cli-test\ncurate:\n  decontaminate: {benchmarks: [aime24]}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "curate", "r.yaml", "--set", "curate.select.k=1"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(repo),
            "DISTILL_DATA_DIR": str(ROOT.parent / "shared" / "data"),
        },
    )
    assert proc.returncode == 0, proc.stderr
    out = cwd / "runs" / "cli-test" / "curate"
    assert_accounted(src, out, read_manifest(out))
    assert read_manifest(out).dropped == {"wrong": 1}
    card = (repo / "data_cards" / "cli-test.md").read_text()
    assert card == (out / "card.md").read_text().replace("lengths.png", "cli-test-lengths.png")
    assert (repo / "data_cards" / "cli-test-lengths.png").exists()
    assert not (cwd / "data_cards").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "cli.main", "curate", "r.yaml", "--set", "name=other"],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert bad.returncode == 2 and "generate" in bad.stderr and "Traceback" not in bad.stderr


def test_judge_verdicts_survive_a_crash(tmp_path, monkeypatch):
    """The judge is the slow, paid part (DeepSeek-V3 over an API): verdicts are appended to a cache as they
    come, so a rerun after a crash only asks about the rest, and a finished set starts no judge at all."""
    import distill.engines.backends as backends
    import distill.graders.judge as judge_mod
    from distill.config import TeacherConfig

    rows = [
        gen_row("q", i, APPLES, "7", f"Tom has {w} apples.") for i, w in enumerate(["seven", "7-ish", "9"])
    ]
    src = write_generate(tmp_path / "gen", [rows])
    answers = {"seven": "CORRECT", "7-ish": "CORRECT", "Tom has 9": "INCORRECT"}

    class CrashingJudge(ScriptedJudge):
        def generate(self, requests, sampling, on_done=None):
            if len(self.prompts) >= 1:
                raise RuntimeError("judge server went away")
            return super().generate(requests, sampling, on_done)

    monkeypatch.setattr(judge_mod, "CACHE_BATCH", 1)
    monkeypatch.setattr(backends, "make_backend", lambda cfg: CrashingJudge(answers))
    teacher = TeacherConfig(model="judge-model", backend="openai", base_url="http://127.0.0.1:9/v1")
    r = recipe(tmp_path, verify=VerifyConfig(judge=teacher), decontaminate=DecontamConfig(benchmarks=[]))
    with pytest.raises(RuntimeError, match="went away"):
        curate(r, src, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.json").exists()

    second = ScriptedJudge(answers)
    monkeypatch.setattr(backends, "make_backend", lambda cfg: second)
    run_curate(r, src, tmp_path / "out")
    assert len(second.prompts) == 2  # one of three was judged before the crash
    kept = {r["sample_index"]: r["grader"] for r in read_shards(tmp_path / "out" / "kept")}
    assert kept == {0: "judge:judge-model", 1: "judge:judge-model"}

    third = ScriptedJudge(answers)
    monkeypatch.setattr(backends, "make_backend", lambda cfg: third)
    shards = [run_mod.read_shard(p) for p in run_mod.input_shards(src)]  # no verdicts yet: all asked
    run = run_mod.Run(r.curate, shards, tmp_path)  # its judge.jsonl: tmp_path / "judge.jsonl"
    first = run_mod.judge_pass(run, skip={})
    monkeypatch.setattr(backends, "make_backend", lambda cfg: pytest.fail("a judge was started"))
    assert run_mod.judge_pass(run, skip={}) == first and len(third.prompts) == 3
    assert first == {(0, 0): "correct", (0, 1): "correct", (0, 2): "wrong"}
