"""End to end through the CLI, asserting on what each stage wrote: (a) the CPU demo recipe users run first
(pipelines/demo-cpu.yaml, sizes reduced with --set), and (b) the R1 path (thinking on, the `<think>` prefill, math
verification, release tokens) with a scripted teacher and student served over the OpenAI HTTP API. Both run in two
halves with --until / --from, the second half never redoing the first; the demo then reruns with every stage
skipped, is pushed (dry run) by run dir and shown."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
# R1's token strings as literals (DeepSeek-R1-Distill's tokenizer_config.json), not read from distill
BOS, EOS, USER, ASSISTANT, THINK = (
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
)
R1_TOKENS = [BOS, EOS, USER, ASSISTANT, THINK, "</think>"]
R1_MATH = (
    "Please reason step by step, and put your final answer within \\boxed{}."  # DeepSeek-R1's usage notes
)
STAGES = ["generate", "curate", "train", "patch", "eval", "push"]


def distill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=1500
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def rows(folder: Path) -> list[dict]:
    return [r for f in sorted(folder.glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]


def manifests(run: Path) -> dict[str, bytes]:
    return {
        s: (run / s / "manifest.json").read_bytes() for s in STAGES if (run / s / "manifest.json").exists()
    }


def manifest(run: Path, stage: str) -> dict:
    return json.loads((run / stage / "manifest.json").read_text())


def assert_git_sha(run: Path) -> None:
    """Every manifest names a commit of this checkout (HEAD may move on meanwhile: others commit too)."""
    for stage in manifests(run):
        sha = manifest(run, stage)["git_sha"]
        assert re.fullmatch(r"[0-9a-f]{40}", sha or ""), (stage, sha)
        check = ["git", "merge-base", "--is-ancestor", sha, "HEAD"]
        assert subprocess.run(check, cwd=ROOT, capture_output=True).returncode == 0, (stage, sha)


def assert_trained(run: Path, base: Path) -> None:
    """train's final weights moved away from the base model's; its metrics logged a finite loss per step."""
    from safetensors.torch import load_file

    trained, before = (
        {k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(f).items()}
        for d in (run / "train" / "final", base)
    )
    name = "model.layers.0.self_attn.q_proj.weight"
    assert trained[name].shape == before[name].shape and not (trained[name] == before[name]).all()
    steps = [json.loads(line) for line in (run / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    assert len(losses) == 2 and all(0 < x < 100 for x in losses), steps


def assert_release_tokens(release: Path) -> None:
    """The release speaks R1: its tokenizer knows the R1 tokens and its template ends in the <think> prefill."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(release)
    vocab = tok.get_vocab()
    assert [t for t in R1_TOKENS if t not in vocab] == []
    config = json.loads((release / "tokenizer_config.json").read_text())
    # as in DeepSeek's release: AddedToken entries
    assert (config["bos_token"]["content"], config["eos_token"]["content"]) == (BOS, EOS)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == f"{BOS}{USER}1+1?{ASSISTANT}{THINK}\n"


def assert_card_matches_results(run: Path) -> None:
    """The model card's row for this model shows results.json's numbers (in %, one decimal)."""
    results = json.loads((run / "eval" / "results.json").read_text())["benchmarks"]
    card = (run / "push" / "model_card.md").read_text()
    repo = yaml.safe_load((run / "recipe.resolved.yaml").read_text())["push"]["repo"].split("/")[-1]
    row = next(line for line in card.splitlines() if line.startswith(f"| {repo} (this model) |"))
    expected = []
    for r in results.values():
        expected.append(f"{100 * r['pass@1']:.1f} ± {100 * r['pass@1_se']:.1f}")
        expected += [f"{100 * r['cons@k']:.1f}"] if r["k"] > 1 else []
    assert [c.strip() for c in row.strip("|").split("|")][1:] == expected


# ---------------------------------------------------------------- (a) the demo recipe, reduced


DEMO_SETS = [  # sizes only: the recipe's own choices (arith, answer-phrase grading, baseline: base) stay
    "generate.prompts=[{source: arith, split: train, limit: 16}]",
    "generate.max_tokens=96",
    "generate.shard_size=32",
    "train.max_steps=2",
    "train.save_every=2",
    "eval.benchmarks={'arith:test': {k: 2, limit: 3}, gsm8k: {k: 1, limit: 2}}",
    "eval.max_tokens=32",
]
ANSWER_PHRASE = r"answer is:?\s*\$?\s*{}\b"


def number(text: str | None) -> float | None:
    try:
        return float((text or "").replace(",", ""))
    except ValueError:
        return None


def test_demo_recipe_end_to_end(tmp_path, smollm2_path, cards_dir):
    recipe_args = [str(ROOT / "pipelines" / "demo-cpu.yaml"), *[a for s in DEMO_SETS for a in ("--set", s)]]
    printed = distill("run", *recipe_args, "--until", "train", cwd=tmp_path).stdout
    for table in ["generate: summary", "curate: summary", "train: summary"]:  # one summary a stage, yields
        assert table in printed, table
    assert "kept" in printed and "dropped: " in printed and "train/loss.png" in printed
    run = tmp_path / "runs" / "demo-cpu"
    assert list(manifests(run)) == ["generate", "curate", "train"]  # --until train stops there
    first = manifests(run)
    printed = distill("run", *recipe_args, "--from", "patch", "--until", "push", cwd=tmp_path).stdout
    assert "patch: summary" in printed and "release facts" in printed
    assert "card in runs/demo-cpu/push/model_card.md" in printed and "## How it was made" not in printed
    assert {s: b for s, b in manifests(run).items() if s in first} == first  # --from patch redid nothing
    assert_demo_outputs(run, smollm2_path, cards_dir)
    assert not (run / "push" / "manifest.json").exists()  # a dry run uploads nothing, so it never looks done
    done = manifests(run)
    distill("run", *recipe_args, "--until", "eval", cwd=tmp_path)
    assert manifests(run) == done  # a rerun recomputes nothing: every manifest byte-identical
    listed = distill("push", str(run), "--repo", "me/other", "--dry-run", cwd=tmp_path).stdout  # by run dir
    assert "me/other" in listed and "model.safetensors" in listed
    shown = distill("show", str(run), cwd=tmp_path).stdout
    assert all(stage in shown for stage in STAGES) and "done" in shown and "dry run" in shown
    assert "facts ok, 0 failed" in shown and "held out)" in shown


def assert_demo_outputs(run: Path, smollm2_path: Path, cards_dir: Path) -> None:
    recipe = yaml.safe_load((run / "recipe.resolved.yaml").read_text())
    assert recipe["eval"]["baseline"] == "base" and recipe["curate"]["verify"]["math_answer_phrase"] is True

    generated = rows(run / "generate")
    gen = json.loads((run / "generate" / "manifest.json").read_text())["metrics"]
    assert (
        gen["run_tokens"] == gen["completion_tokens"]
    )  # the live count (tokens of running samples) ends exact
    n = recipe["generate"]["n"]
    assert len(generated) == 16 * n and {r["teacher"] for r in generated} == {"smollm2-135m"}
    for r in generated:  # thinking off: the whole completion is the answer; the demo's directive was sent
        assert (r["answer"], r["reasoning"]) == (r["completion"].strip(), "") and r["domain"] == "math"
        assert r["messages"][-1]["content"].endswith(recipe["generate"]["math_directive"])
        assert (r["finish_reason"] == "length") == ("truncated" in r["flags"])

    kept, dropped = rows(run / "curate" / "kept"), rows(run / "curate" / "dropped")
    m = manifest(run, "curate")
    assert len(kept) + len(dropped) == len(generated) == m["rows_in"] and len(kept) == m["rows_out"] >= 1
    assert m["rows_in"] - m["rows_out"] == sum(m["dropped"].values())
    for r in kept:  # graded on the answer phrase, and right
        assert (r["verdict"], r["pred_answer"]) == ("correct", r["reference"])
        assert re.search(ANSWER_PHRASE.format(re.escape(r["reference"])), r["answer"], re.IGNORECASE)
    for r in dropped:  # a wrong row states another number (or none: unparseable)
        if r["drop_reason"] == "wrong":
            assert r["pred_answer"] != r["reference"] and r["verdict"] == "wrong"
    assert recipe["curate"]["select"]["policy"] == "all_correct"  # every verified sample, up to n per prompt
    assert max(Counter(r["prompt_id"] for r in kept).values()) <= n
    assert (cards_dir / "demo-cpu.md").exists()

    assert_trained(run, smollm2_path)
    assert_release_tokens(run / "patch" / "release")

    results = json.loads((run / "eval" / "results.json").read_text())
    assert {b: (r["k"], r["n"]) for b, r in results["benchmarks"].items()} == {
        "arith:test": (2, 3),
        "gsm8k": (1, 2),
    }
    assert set(results["baseline"]["benchmarks"]) == {"arith:test", "gsm8k"}  # eval.baseline: base
    samples = pq.read_table(run / "eval" / "samples.parquet").to_pylist()
    assert len(samples) == 2 * (3 * 2 + 2 * 1) and {s["model"] for s in samples} == {"student", "baseline"}
    for s in samples:  # a verdict compares the number the completion gave with the gold
        assert s["verdict"] in ("correct", "wrong", "unparseable"), s
        if s["verdict"] != "unparseable":
            pred = number(s["pred_answer"])
            assert (pred == float(s["reference"])) == (s["verdict"] == "correct"), s
            assert pred is None or s["pred_answer"].replace(",", "") in s["completion"].replace(",", ""), s
    verdict = results["verdict"]["line"]
    assert (
        verdict.startswith("held-out pass@1: before ") and verdict in (run / "eval" / "table.md").read_text()
    )
    assert_card_matches_results(run)
    card = (run / "push" / "model_card.md").read_text()
    assert verdict in card and "base_model" in card
    # one results table: eval's table.md header in the card; hyper-parameters as train's manifest recorded them
    assert (run / "eval" / "table.md").read_text().splitlines()[0] in card
    train_cfg = manifest(run, "train")["config"]
    assert train_cfg["max_steps"] == 2 and "| max steps | 2 |" in card
    assert f"| learning rate | {train_cfg['lr']} |" in card
    assert not any(
        "Ġ" in s["completion"] or "Ċ" in s["completion"] for s in samples
    )  # vLLM decodes the release
    assert_git_sha(run)


# ---------------------------------------------------------------- (b) the R1 path, scripted over HTTP


class Scripted:
    """An OpenAI-compatible loopback server in R1's format. As the teacher (model "teacher") it answers right when
    the sample's seed is even (of n=2 samples per prompt exactly one: seeds are prompt_seed + j); as the student
    under eval (model: the release folder's path) it answers sample 0 right and sample 1 wrong (eval seeds are
    1000 * problem + j). It records every prompt it was sent, decoded with that model's own tokenizer (the test
    loads them in its own thread: transformers' lazy imports are not thread-safe)."""

    def __init__(self, gold: dict[str, str], teacher_tokenizer: Any, release: Path):
        self.gold, self.release = gold, release
        self.prompts: dict[str, list[str]] = {"teacher": [], "student": []}
        self.tokenizers = {"teacher": teacher_tokenizer}
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, payload: dict, status: int = 200) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # /models
                self.reply({"data": [{"id": "teacher"}, {"id": str(scripted.release)}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    self.reply(scripted.complete(body))
                except Exception as err:  # a 4xx fails the run at once (5xx and dropped replies are retried)
                    self.reply({"error": f"{type(err).__name__}: {err}"}, status=400)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.lock = threading.Lock()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def complete(self, body: dict) -> dict:
        role = "teacher" if body["model"] == "teacher" else "student"
        text = self.tokenizers[role].decode(body["prompt"])
        with self.lock:
            self.prompts[role].append(text)
        problem = next(p for p in self.gold if p in text)
        right = body["seed"] % 2 == 0 if role == "teacher" else body["seed"] % 1000 == 0
        answer = int(self.gold[problem]) + (0 if right else 1)
        out = f"I add the numbers of: {problem}\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."
        return {"choices": [{"text": out, "finish_reason": "stop"}], "usage": {"completion_tokens": 30}}


def r1_recipe(url: str, smollm2_path: Path) -> dict:
    return {
        "name": "r1-e2e",
        "student": "smollm2-135m",
        "teacher": {
            "model": "teacher",
            "backend": "openai",
            "base_url": url,
            "tokenizer": str(smollm2_path),
            "chat_template": str(ROOT / "distill" / "templates" / "r1_distill.jinja"),
            "thinking": True,
        },
        "generate": {
            "prompts": [{"source": "arith", "split": "train", "limit": 6}],
            "n": 2,
            "max_tokens": 64,
            "force_think": True,
            "shard_size": 6,
        },
        "curate": {
            # a real benchmark index; a 6-prompt corpus has too few documents to tell the arith templates'
            # shared phrases from contamination, so arith:test would flag arith problems (the demo curates 96)
            "decontaminate": {"benchmarks": ["aime24"]},
            "verify": {"code": False, "mcq": False, "workers": 1},
            "select": {"policy": "all_correct"},
        },
        "train": {
            "max_length": 256,
            "max_steps": 2,
            "micro_batch_size": 2,
            "grad_accum": 1,
            "save_every": 2,
            "lr": 3.0e-4,
            "gradient_checkpointing": False,
            "dtype": "float32",
        },
        "eval": {
            "benchmarks": {"arith:test": {"k": 2, "limit": 2}},
            "max_tokens": 64,
            "engine": {"backend": "openai", "base_url": url},  # the student served over HTTP too
        },
        "push": {"repo": "demo/r1-e2e", "dry_run": True},
    }


def test_r1_path_end_to_end(tmp_path, smollm2_path):
    from transformers import PreTrainedTokenizerFast

    from distill.data import load_prompts

    problems = load_prompts("arith", "train", 6)
    tests = load_prompts("arith", "test", 2)
    run = tmp_path / "runs" / "r1-e2e"
    server = Scripted(
        {p["problem"]: p["reference"] for p in problems + tests},
        PreTrainedTokenizerFast.from_pretrained(smollm2_path),
        Path("runs/r1-e2e/patch/release"),  # eval names the student by its path, as the run dir has it
    )
    (tmp_path / "r1.yaml").write_text(yaml.safe_dump(r1_recipe(server.url, smollm2_path), allow_unicode=True))
    try:
        distill("run", "r1.yaml", "--until", "patch", cwd=tmp_path)
        assert (
            list(manifests(run)) == ["generate", "curate", "train", "patch"]
            and server.prompts["student"] == []
        )
        first = manifests(run)
        server.tokenizers["student"] = PreTrainedTokenizerFast.from_pretrained(run / "patch" / "release")
        distill("run", "r1.yaml", "--from", "eval", "--until", "push", cwd=tmp_path)
        assert {s: b for s, b in manifests(run).items() if s in first} == first  # --from eval redid nothing
        assert len(server.prompts["teacher"]) == 12  # and asked the teacher nothing more
    finally:
        server.httpd.shutdown()

    generated = rows(run / "generate")
    assert len(generated) == 12
    # R1 usage: one user turn (problem, blank line, R1's math directive), no system prompt, the <think> prefill;
    # R1's template opens with the rendering tokenizer's BOS (here SmolLM2's, whose ids the teacher was sent)
    asked = [f"<|im_start|>{USER}{r['problem']}\n\n{R1_MATH}{ASSISTANT}{THINK}\n" for r in generated]
    assert sorted(server.prompts["teacher"]) == sorted(asked) == sorted(r["prompt_text"] for r in generated)
    for r in generated:  # the trace parser split the prefilled thought from the answer
        assert r["reasoning"] == f"I add the numbers of: {r['problem']}" and r["flags"] == []
        assert r["answer"].startswith("The answer is $\\boxed{") and r["prompt_text"].endswith(f"{THINK}\n")

    kept, gold = rows(run / "curate" / "kept"), {p["prompt_id"]: p["reference"] for p in problems}
    assert sorted(r["prompt_id"] for r in kept) == sorted(gold)  # only the right sample of each prompt
    for r in kept:  # math-verify read the box
        assert (r["verdict"], r["grader"], r["pred_answer"]) == (
            "correct",
            "math-verify",
            gold[r["prompt_id"]],
        )
        assert f"\\boxed{{{gold[r['prompt_id']]}}}" in r["answer"]
    assert manifest(run, "curate")["dropped"] == {"wrong": 6}

    assert_trained(run, smollm2_path)
    assert_release_tokens(run / "patch" / "release")

    # eval: 2 problems x k=2, rendered by the release's own template (R1's BOS now)
    asked = [f"{BOS}{USER}{p['problem']}\n\n{R1_MATH}{ASSISTANT}{THINK}\n" for p in tests for _ in range(2)]
    assert sorted(server.prompts["student"]) == sorted(asked)
    results = json.loads((run / "eval" / "results.json").read_text())["benchmarks"]["arith:test"]
    # sample 0 right, sample 1 wrong on both problems: pass@1 1/2 with SE 0; the 1-1 tie goes to the first answer
    assert (results["pass@1"], results["pass@1_se"], results["cons@k"]) == (0.5, 0.0, 1.0)
    assert results["verdicts"] == {"correct": 2, "wrong": 2}
    assert_card_matches_results(run)
    assert_git_sha(run)


def test_eval_engine_keeps_the_openai_backend():
    """eval.engine.backend: openai reaches the backend (it used to be replaced by vllm, silently)."""
    from distill.config import EvalConfig, TeacherConfig
    from distill.eval.run import engine_config

    cfg = EvalConfig(engine=TeacherConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="x"))
    got = engine_config(cfg, Path("/runs/r/patch/release"), thinking=False)
    assert (got.backend, got.base_url, got.model, got.thinking) == (
        "openai",
        "http://127.0.0.1:9/v1",
        "/runs/r/patch/release",
        False,
    )
    assert engine_config(EvalConfig(), Path("/m")).backend == "vllm"
