"""`distill curate` end to end on inline generate rows: every row's fate, the manifest, the card, resume, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from distill.artifacts import finish_manifest, read_manifest, read_shards, start_manifest, write_parquet
from distill.config import CurateConfig, DecontamConfig, DedupConfig, Recipe, SelectConfig, VerifyConfig
from distill.curate.run import curate
from distill.errors import DistillError
from distill.graders.sandbox import sandbox_available

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


# (row, expected fate: "kept" or the drop reason) -- two shards, in this order
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
    (gen_row("chat", 0, "Say hello.", None, "Hello!", domain="general"), "unverified"),
]


def recipe(tmp_path: Path, **curate_kw) -> Recipe:
    kw = {"verify": VerifyConfig(code_timeout_s=2, timeout_s=10), **curate_kw}
    return Recipe(name="curate-test", run_dir=str(tmp_path / "run"), curate=CurateConfig(**kw))


@pytest.fixture
def src(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)  # data_cards/ is written under the working directory
    rows = [r for r, _ in TABLE]
    return write_generate(tmp_path / "run" / "generate", [rows[:8], rows[8:]])


def fates(out: Path) -> dict[tuple[str, int], str]:
    got = {(r["prompt_id"], r["sample_index"]): "kept" for r in read_shards(out / "kept")}
    got.update({(r["prompt_id"], r["sample_index"]): r["drop_reason"] for r in read_shards(out / "dropped")})
    return got


@pytest.mark.skipif(not sandbox_available(), reason="code rows need the sandbox")
def test_every_row_gets_its_fate(tmp_path, src):
    out = tmp_path / "run" / "curate"
    m = curate(recipe(tmp_path), src, out)
    expected = {(r["prompt_id"], r["sample_index"]): fate for r, fate in TABLE}
    assert fates(out) == expected
    assert (m.rows_in, m.rows_out) == (len(TABLE), 3)
    assert m.dropped == {k: v for k, v in Counter(expected.values()).items() if k != "kept"}
    assert list(m.dropped)[:2] == ["duplicate_prompt", "contaminated"]  # chain order
    kept = {r["prompt_id"]: r for r in read_shards(out / "kept")}
    assert (kept["apples"]["verdict"], kept["apples"]["grader"], kept["apples"]["pred_answer"]) == (
        "correct",
        "math-verify",
        "7",
    )
    assert kept["mcq"]["grader"] == "mcq-letter" and kept["code"]["grader"] == "sandbox"
    dropped = {(r["prompt_id"], r["sample_index"]): r for r in read_shards(out / "dropped")}
    assert dropped[("apples-copy", 0)]["drop_detail"] == "apples"
    assert "aime24" in dropped[("aime", 0)]["drop_detail"]
    assert m.metrics["decontamination"]["benchmarks"]["aime24"]["hits"] == 1
    assert m.metrics["verification"]["math"] == {
        "correct": 1,
        "wrong": 1,
        "unparseable": 1,
        "bad_reference": 1,
    }
    assert m.metrics["verification"]["code"] == {"correct": 1, "timeout": 1}
    assert m.metrics["sources"]["gsm8k"] == {"license": "MIT", "rows_in": len(TABLE), "rows_out": 3}
    assert sorted(p.name for p in out.iterdir()) == [
        "card.md",
        "dropped",
        "kept",
        "lengths.png",
        "manifest.json",
    ]
    card = (tmp_path / "data_cards" / "curate-test.md").read_text()
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
    assert (tmp_path / "data_cards" / "curate-test-lengths.png").read_bytes()[:4] == b"\x89PNG"
    assert read_manifest(out).rows_out == 3
    assert curate(recipe(tmp_path), src, out).started_at == m.started_at  # fresh: skipped


def test_selection_policies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
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
        curate(recipe(tmp_path, select=select, decontaminate=no_bench), src, out)
        got = fates(out)
        assert {k for (p, k), fate in got.items() if p == "q" and fate == "kept"} == kept
        assert {fate for (p, _), fate in got.items() if p == "q"} - {"kept"} <= {"not_selected"}
        assert got[("chat", 0)] == "kept"  # unverified, kept on request, verdict None
        assert [r["verdict"] for r in read_shards(out / "kept") if r["prompt_id"] == "chat"] == [None]


def test_near_duplicate_prompts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
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
        m = curate(
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
    monkeypatch.chdir(tmp_path)
    import distill.curate.run as run_mod

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
    real, calls = run_mod.shard_records, []

    def crash_on_third(shard, *args):
        calls.append(shard.name)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(shard, *args)

    monkeypatch.setattr(run_mod, "shard_records", crash_on_third)
    cfg = recipe(tmp_path, decontaminate=DecontamConfig(benchmarks=[]))
    with pytest.raises(RuntimeError):
        curate(cfg, src, out)
    assert not (out / "manifest.json").exists()
    calls.clear()
    m = curate(cfg, src, out)
    assert calls == ["part-00002.parquet"]  # the first two shards came from the cache
    assert m.rows_out == 6 and not (out / "_work").exists()


def test_bad_input_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = recipe(tmp_path, decontaminate=DecontamConfig(benchmarks=[]))
    src = write_generate(tmp_path / "gen", [[gen_row("a", 0, APPLES, "7", "\\boxed{7}")]] * 2)
    (src / "part-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DistillError, match="part-00001.parquet"):
        curate(cfg, src, tmp_path / "out")
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
    monkeypatch.chdir(tmp_path)
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
    m = curate(
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


def test_cli_curate(tmp_path):
    rows = [gen_row("a", 0, APPLES, "7", "\\boxed{7}"), gen_row("a", 1, APPLES, "7", "\\boxed{6}")]
    write_generate(tmp_path / "runs" / "cli-test" / "generate", [rows])
    (tmp_path / "r.yaml").write_text("name: cli-test\ncurate:\n  decontaminate: {benchmarks: [aime24]}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "curate", "r.yaml", "--set", "curate.select.k=1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "DISTILL_DATA_DIR": str(ROOT.parent / "shared" / "data"),
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data_cards" / "cli-test.md").exists()
    assert read_manifest(tmp_path / "runs" / "cli-test" / "curate").dropped == {"wrong": 1}
    bad = subprocess.run(
        [sys.executable, "-m", "cli.main", "curate", "r.yaml", "--set", "name=other"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )
    assert bad.returncode == 2 and "generate" in bad.stderr and "Traceback" not in bad.stderr


def test_judge_verdicts_survive_a_crash(tmp_path, monkeypatch):
    """The judge is the slow, paid part (DeepSeek-V3 over an API): verdicts are appended to a cache as they
    come, so a rerun after a crash only asks about the rest, and a finished set starts no judge at all."""
    monkeypatch.chdir(tmp_path)  # the data card goes to ./data_cards
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
    curate(r, src, tmp_path / "out")
    assert len(second.prompts) == 2  # one of three was judged before the crash
    kept = {r["sample_index"]: r["grader"] for r in read_shards(tmp_path / "out" / "kept")}
    assert kept == {0: "judge:judge-model", 1: "judge:judge-model"}

    from distill.curate.run import judge_pass

    third = ScriptedJudge(answers)
    monkeypatch.setattr(backends, "make_backend", lambda cfg: third)
    records = [
        [
            {"reason": None, "domain": "math", "verdict": None, "prompt_id": "q", "sample_index": i}
            for i in range(3)
        ]
    ]
    shards, cache = sorted(src.glob("part-*.parquet")), tmp_path / "judge.jsonl"
    first = judge_pass(shards, records, r.curate, cache)
    monkeypatch.setattr(backends, "make_backend", lambda cfg: pytest.fail("a judge was started"))
    assert judge_pass(shards, records, r.curate, cache) == first and len(third.prompts) == 3
