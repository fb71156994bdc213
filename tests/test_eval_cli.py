"""`distill eval MODEL` without a recipe: bad input, DeepSeek's published numbers beside a release's score, the
problems split over data-parallel replicas, and pass@1 over k samples as an estimate that does not move with k."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from fractions import Fraction

import pytest
from typer.testing import CliRunner

from cli.main import app
from distill.engines.backends import Completion
from distill.eval.metrics import pass1_mean_se, pass_at_k


def cli(*args: str):
    return CliRunner().invoke(app, ["eval", *args])


@pytest.mark.parametrize(
    "args, line",
    [
        (["--benchmarks", "aime2024:k=4"], "error: --benchmarks aime2024:k=4: unknown data set 'aime2024'"),
        (["--benchmarks", "math500:k=0"], "error: --benchmarks math500:k=0: k must be >= 1 (got 0)"),
        (["--benchmarks", "math500:k=-2"], "error: --benchmarks math500:k=-2: k must be >= 1 (got -2)"),
        (
            ["--release", "DeepSeek-R1-Distill-Qwen-3B"],
            "error: unknown release 'DeepSeek-R1-Distill-Qwen-3B'",
        ),
        (["--data-parallel-size", "0"], "error: eval.engine.data_parallel_size must be >= 1 (got 0)"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(smollm2_path, tmp_path, args, line):
    out = tmp_path / "out"
    result = cli(str(smollm2_path), *args, "--out", str(out))
    assert result.exit_code == 2
    assert result.stderr.startswith(line) and result.stderr.count("\n") == 1
    assert not out.exists()


def test_model_folder_without_tokenizer_is_refused(smollm2_path, tmp_path):
    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    shutil.copy(smollm2_path / "config.json", folder / "config.json")
    result = cli(str(folder), "--benchmarks", "math500:k=1", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"error: {folder}: no tokenizer in the model folder (tokenizer.json, tokenizer.model or vocab.json)\n"
    )
    assert not (tmp_path / "out").exists()


def test_recipe_form_refuses_model_only_flags(tmp_path):
    result = cli("pipelines/demo-cpu.yaml", "--seed", "3")
    assert result.exit_code == 2
    assert result.stderr == "error: --seed: for `distill eval MODEL`; with a recipe use --set eval.…\n"


class Scripted:
    """A backend that answers from a script keyed by the problem in the prompt: sample j of the problem whose text
    the prompt holds is script[problem][j]. Records which prompts it was sent (data-parallel tests)."""

    def __init__(self, script: dict[str, list[str]]):
        self.script, self.seen = script, []

    def generate(self, requests, sampling, on_done=None):
        outs = []
        for req in requests:
            problem = next(p for p in self.script if p in req.prompt_text)
            self.seen.append((problem, req.seed))
            texts = self.script[problem][: sampling.n]
            outs.append([Completion(t, "stop", 10, 10) for t in texts])
            if on_done:
                on_done(1, 10 * sampling.n)
        return outs

    def close(self):
        pass


def boxed(answer: str) -> str:
    return f"Let me think.\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."


@pytest.fixture
def release_model(tiny_qwen2, tmp_path):
    """tiny_qwen2 patched to DeepSeek-R1-Distill-Qwen-1.5B's release layout, in a folder of the release's name."""
    from distill.patch import patch_checkpoint

    return patch_checkpoint(tiny_qwen2, tmp_path / "DeepSeek-R1-Distill-Qwen-1.5B", "qwen-1.5b")


def script_for(problems: dict[str, list[dict]]) -> dict[str, list[str]]:
    """AIME 2024's first two problems: 2/2 and 1/2 right; MATH-500's: 2/2 and 0/2; GSM8K's first: 1/1."""
    aime, math500, gsm = problems["aime24"], problems["math500"], problems["gsm8k"]
    return {
        aime[0]["problem"]: [boxed(aime[0]["reference"])] * 2,
        aime[1]["problem"]: [boxed(aime[1]["reference"]), boxed("7")],
        math500[0]["problem"]: [boxed(math500[0]["reference"])] * 2,
        math500[1]["problem"]: [boxed("p + q"), "no answer"],
        gsm[0]["problem"]: [boxed(gsm[0]["reference"])],
    }


def test_release_model_gets_deepseeks_numbers_beside_its_own(release_model, tmp_path, capsys):
    """A model named as a release is scored and compared with the card: (ours - DeepSeek's) / our SE, the notes for
    a benchmark the card does not report, and this run's protocol differences (k, max tokens, template, TP, dtype)."""
    from distill.data import load_prompts
    from distill.eval.run import evaluate_model

    problems = {b: load_prompts(b, "test", 2) for b in ("aime24", "math500", "gsm8k")}
    spec = "aime24:k=2:limit=2,math500:k=2:limit=2,gsm8k:test:k=1:limit=1"
    out = tmp_path / "eval"
    evaluate_model(str(release_model), out, spec, backend=Scripted(script_for(problems)), max_tokens=64)
    payload = json.loads((out / "results.json").read_text())
    ref = payload["reference"]
    assert ref["release"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    rows = {(r["benchmark"], r["metric"]): r for r in ref["rows"]}
    assert list(rows) == [("aime24", "pass@1"), ("aime24", "cons@2 (card: cons@64)"), ("math500", "pass@1")]
    aime = rows[("aime24", "pass@1")]  # per problem 2/2, 1/2: 75.0 ± 25.0 against the card's 28.9
    assert (aime["ours"], aime["se"], aime["deepseek"]) == (pytest.approx(75.0), pytest.approx(25.0), 28.9)
    assert aime["diff_se"] == pytest.approx((75.0 - 28.9) / 25.0)
    assert rows[("aime24", "cons@2 (card: cons@64)")]["ours"] == pytest.approx(100.0)
    math_row = rows[("math500", "pass@1")]  # 2/2, 0/2: 50.0 ± 50.0 against 83.9
    assert (math_row["ours"], math_row["se"], math_row["deepseek"]) == (50.0, 50.0, 83.9)
    assert ref["notes"] == ["gsm8k:test: no published DeepSeek number for DeepSeek-R1-Distill-Qwen-1.5B"]
    gaps = "\n".join(ref["protocol"])
    assert (
        "k: 1, 2 samples per problem (DeepSeek: 64)" in gaps and "max tokens: 64 (DeepSeek: 32,768)" in gaps
    )
    assert "the model's own template ends with it" in gaps  # the patched release template prefills <think>\n
    assert "tensor_parallel_size 1, dtype auto" in gaps
    table = (out / "table.md").read_text()
    assert "| aime24 | pass@1 | 75.0 ± 25.0 (k=2, n=2) | 28.9 | +46.1 | +1.8 |" in table
    assert "| math500 | pass@1 | 50.0 ± 50.0 (k=2, n=2) | 83.9 | -33.9 | -0.7 |" in table
    printed = capsys.readouterr().out
    assert "DeepSeek-R1-Distill-Qwen-1.5B: ours vs DeepSeek's published" in printed and "+1.8" in printed
    assert payload["benchmarks"]["aime24"]["verdicts"] == {"correct": 3, "wrong": 1}


def test_a_model_that_is_not_a_release_gets_no_reference(smollm2_path, tmp_path):
    from distill.data import load_prompts
    from distill.eval.run import evaluate_model

    gsm = load_prompts("gsm8k", "test", 1)[0]
    out = tmp_path / "eval"
    evaluate_model(
        str(smollm2_path), out, "gsm8k:test:k=1:limit=1", backend=Scripted({gsm["problem"]: [boxed("1")]})
    )
    payload = json.loads((out / "results.json").read_text())
    assert "reference" not in payload and payload["benchmarks"]["gsm8k:test"]["pass@1"] == 0.0
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "results.json",
        "samples.parquet",
        "table.md",
    ]


def test_problems_are_split_over_replicas_in_order(smollm2_path, tmp_path):
    """Two replicas: the first gets problems 0-1, the second 2; each problem keeps its seed (eval.seed + 1000 i), so
    results.json is the one-replica results.json."""
    from distill.data import load_prompts
    from distill.eval.run import evaluate_model

    gsm = load_prompts("gsm8k", "test", 3)
    script = {p["problem"]: [boxed(p["reference"]), boxed("0")] for p in gsm}
    one, two = Scripted(script), [Scripted(script), Scripted(script)]
    for backend, out in ((one, tmp_path / "one"), (two, tmp_path / "two")):
        evaluate_model(str(smollm2_path), out, "gsm8k:test:k=2:limit=3", backend=backend, seed=5)
    assert [s for _, s in two[0].seen] == [5, 1005] and [s for _, s in two[1].seen] == [2005]
    assert one.seen == two[0].seen + two[1].seen
    results = [json.loads((tmp_path / o / "results.json").read_text())["benchmarks"] for o in ("one", "two")]
    for r in results:
        r["gsm8k:test"].pop("tokens_per_s")  # wall-clock
    assert results[0] == results[1] and results[0]["gsm8k:test"]["pass@1"] == 0.5


def test_pass1_from_k_samples_is_unbiased_whatever_k():
    """lighteval #771 / open-r1 #655: `pass@1:4_samples` 0.283 and `pass@1:64_samples` 0.318 on one model looked
    like pass@1 depending on k. It does not: on a fixed table of 8 samples for each of 3 problems, the mean of
    pass@1 over every k-subset of each problem's samples is the full table's pass@1 for every k (exactly, in
    fractions); what k changes is the spread (the SE we report), not the centre. pass@k (any of k right) does rise
    with k, and the Chen et al. estimator of pass@1 from n samples is c/n."""
    table = [
        [True, True, True, False, True, False, True, True],  # 6/8
        [False, False, True, False, False, False, False, False],  # 1/8
        [True, False, False, True, False, True, False, False],  # 3/8
    ]
    full = Fraction(6 + 1 + 3, 24)  # 10/24 = 0.41667
    spreads = []
    for k in (1, 2, 4, 8):
        per_problem = [[Fraction(sum(s), k) for s in itertools.combinations(row, k)] for row in table]
        expected = sum(Fraction(sum(v), len(v)) for v in per_problem) / 3
        assert expected == full, k  # unbiased: the same centre at every k
        spreads.append(max(max(v) - min(v) for v in per_problem))
        for row in table:
            assert pass_at_k(8, sum(row), 1) == pytest.approx(sum(row) / 8)
    assert spreads == [1, 1, Fraction(3, 4), 0]  # what k buys: less noise per problem
    assert [pass_at_k(8, 1, k) for k in (1, 2, 4, 8)] == pytest.approx(
        [1 / 8, 2 / 8, 4 / 8, 1.0]
    )  # pass@k rises
    mean, se = pass1_mean_se(table)
    assert mean == pytest.approx(10 / 24)
    per = [6 / 8, 1 / 8, 3 / 8]
    assert se == pytest.approx(math.sqrt(sum((p - 10 / 24) ** 2 for p in per) / 2 / 3))  # SE over problems


def test_two_engines_sample_what_one_engine_samples(vllm_engine, smollm2_path, tmp_path):
    """Data-parallel eval on two real vLLM CPU engines (the suite's engine and a second, in-process one): every
    sample's text and verdict, and results.json, equal one engine's for the same seeds."""
    from distill.artifacts import read_parquet
    from distill.config import TeacherConfig
    from distill.engines.backends import VLLMBackend
    from distill.eval.run import evaluate_model

    teacher = TeacherConfig(
        model=str(smollm2_path), dtype="float32", enforce_eager=True, max_model_len=2048, in_process=True
    )
    second = VLLMBackend.start(teacher)
    spec, runs = "gsm8k:test:k=2:limit=4", {}
    try:
        for name, backend in (("one", VLLMBackend(vllm_engine)), ("two", [VLLMBackend(vllm_engine), second])):
            evaluate_model(str(smollm2_path), tmp_path / name, spec, backend=backend, max_tokens=48)
            samples = read_parquet(tmp_path / name / "samples.parquet")
            results = json.loads((tmp_path / name / "results.json").read_text())["benchmarks"]["gsm8k:test"]
            results.pop("tokens_per_s")  # wall-clock
            runs[name] = ([(s["prompt_id"], s["completion"], s["verdict"]) for s in samples], results)
    finally:
        second.close()
    assert len(runs["one"][0]) == 8 and len({text for _, text, _ in runs["one"][0]}) > 1
    assert runs["two"] == runs["one"]
