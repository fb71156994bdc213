"""The eval stage on the real vLLM CPU engine: k samples per problem, graded, scored, written, skipped when fresh."""

from __future__ import annotations

import json
import math

import pytest

from distill.artifacts import read_parquet
from distill.config import recipe_from_dict
from distill.eval.run import evaluate, score
from distill.report import render_table


def recipe(k=2, limit=3):
    return recipe_from_dict(
        {
            "name": "eval-test",
            "eval": {
                "benchmarks": {"gsm8k": {"k": k, "limit": limit}, "gpqa_diamond": {"k": 1, "limit": 2}},
                "max_tokens": 48,
            },
            "curate": {"verify": {"workers": 1}},
        }
    )


def test_eval_on_real_engine_writes_scored_results(vllm_engine, smollm2_path, tmp_path):
    from distill.engines.backends import VLLMBackend

    out = tmp_path / "eval"
    manifest = evaluate(recipe(), smollm2_path, out, backend=VLLMBackend(vllm_engine))
    results = json.loads((out / "results.json").read_text())["benchmarks"]
    assert set(results) == {"gsm8k", "gpqa_diamond"}
    assert (results["gsm8k"]["k"], results["gsm8k"]["n"]) == (2, 3)
    samples = read_parquet(out / "samples.parquet")
    assert len(samples) == 3 * 2 + 2 * 1
    graded = {s["verdict"] for s in samples}
    assert graded <= {"correct", "wrong", "unparseable", "timeout"}
    gsm = [s for s in samples if s["benchmark"] == "gsm8k"]
    assert results["gsm8k"]["pass@1"] == pytest.approx(sum(s["verdict"] == "correct" for s in gsm) / len(gsm))
    assert {s["grader"] for s in samples if s["benchmark"] == "gpqa_diamond"} == {"mcq-letter"}
    assert "GSM8K pass@1" in (out / "table.md").read_text()
    assert manifest.rows_out == 8
    quoted = {f"{b}/{m}": results[b][m] for b in ("gsm8k", "gpqa_diamond") for m in ("pass@1", "cons@k")}
    assert {key: manifest.metrics[key] for key in quoted} == quoted  # what `distill show` reads

    class Untouchable:
        def generate(self, *a, **k):
            raise AssertionError("a fresh eval stage must be skipped")

    assert evaluate(recipe(), smollm2_path, out, backend=Untouchable()).config_hash == manifest.config_hash


def test_a_model_folder_retrained_in_place_is_scored_anew(vllm_engine, smollm2_path, tmp_path):
    """A bare model folder (no stage manifest beside it) was keyed by its path alone: weights retrained at the same
    path were reported with the old model's scores (seen on `make demo-logit`'s kd after a recipe change)."""
    import shutil

    from distill.engines.backends import VLLMBackend

    model = tmp_path / "model"
    model.mkdir()
    for f in smollm2_path.iterdir():
        (model / f.name).symlink_to(f)
    out, small = tmp_path / "eval", recipe(k=1, limit=1)
    evaluate(small, model, out, backend=VLLMBackend(vllm_engine))

    class Recorder:
        calls = 0

        def generate(self, *a, **k):
            Recorder.calls += 1
            raise RuntimeError("sampled")

    evaluate(small, model, out, backend=Recorder())  # unchanged: skipped
    assert Recorder.calls == 0
    (model / "model.safetensors").unlink()
    shutil.copyfile(smollm2_path / "model.safetensors", model / "model.safetensors")  # the retrained weights
    with pytest.raises(RuntimeError, match="sampled"):
        evaluate(small, model, out, backend=Recorder())
    assert Recorder.calls == 1


def test_score_pass1_and_cons():
    def row(prompt_id, verdict, pred, finish="stop"):
        return {
            "prompt_id": prompt_id,
            "verdict": verdict,
            "pred_answer": pred,
            "finish_reason": finish,
            "completion_tokens": 5,
            "gen_seconds": 1.0,
        }

    # (prompt, verdict, predicted answer[, finish reason])
    rows = [
        row("a", "correct", "4"),
        row("a", "wrong", "5", "length"),
        row("b", "wrong", "1"),
        row("b", "wrong", "1"),
    ]
    r = score(rows, k=2)
    assert r["pass@1"] == pytest.approx(0.25) and r["cons@k"] == pytest.approx(0.5) and r["truncated"] == 0.25
    table = render_table([("m", {"aime24": {**r, "k": 64}}), ("base", {})])
    assert "AIME 2024 pass@1" in table and "AIME 2024 cons@64" in table and "25.0 ±" in table
    assert "| base | - | - |" in table  # a row without that benchmark


def test_baseline_is_scored_on_its_own_template_without_think(vllm_engine, smollm2_path, tmp_path):
    """eval.baseline: the same problems and sampling for the model before distillation, on its own chat
    template and without the <think> prefill; its own row in table.md and metrics."""
    from distill.engines.backends import VLLMBackend

    seen = []

    class Recording(VLLMBackend):
        def generate(self, requests, sampling, on_done=None):
            seen.extend(r.prompt_text for r in requests)
            return super().generate(requests, sampling, on_done)

    r = recipe(k=1, limit=2)
    r.eval.baseline = "smollm2-135m"
    out = tmp_path / "eval"
    manifest = evaluate(
        r, smollm2_path, out, backend=VLLMBackend(vllm_engine), baseline_backend=Recording(vllm_engine)
    )
    payload = json.loads((out / "results.json").read_text())
    assert payload["baseline"]["name"] == "smollm2-135m"
    assert set(payload["baseline"]["benchmarks"]) == {"gsm8k", "gpqa_diamond"}
    samples = read_parquet(out / "samples.parquet")
    assert sorted(s["model"] for s in samples) == ["baseline"] * 4 + ["student"] * 4
    assert len(seen) == 4 and not any(t.rstrip().endswith("<think>") for t in seen)
    assert all("<|im_start|>assistant" in t for t in seen)  # SmolLM2's own template
    table = (out / "table.md").read_text()
    assert "| eval-test |" in table and "smollm2-135m (" in table and "before distillation" in table
    base = [
        s["verdict"] == "correct" for s in samples if s["model"] == "baseline" and s["benchmark"] == "gsm8k"
    ]
    assert manifest.metrics["baseline/gsm8k/pass@1"] == payload["baseline"]["benchmarks"]["gsm8k"]["pass@1"]
    assert manifest.metrics["baseline/gsm8k/pass@1"] == pytest.approx(sum(base) / 2)  # k=1: 2 samples
    # the verdict: the first benchmark, student minus baseline paired by problem, in table.md and the metrics
    verdict = payload["verdict"]
    assert verdict["benchmark"] == "gsm8k" and (verdict["problems"], verdict["k"]) == (2, 1)
    assert (verdict["after"], verdict["before"]) == (
        payload["benchmarks"]["gsm8k"]["pass@1"],
        payload["baseline"]["benchmarks"]["gsm8k"]["pass@1"],
    )
    assert verdict["gain"] == pytest.approx(verdict["after"] - verdict["before"])  # k=1, same 2 problems
    gsm = {
        (s["model"], s["prompt_id"]): s["verdict"] == "correct" for s in samples if s["benchmark"] == "gsm8k"
    }
    d = [gsm["student", p] - gsm["baseline", p] for m, p in gsm if m == "baseline"]
    assert len(d) == 2 and verdict["gain_se"] == pytest.approx(abs(d[0] - d[1]) / 2)  # n=2: sd/sqrt(2)
    assert verdict["line"].startswith("held-out pass@1: before ") and verdict["line"] in table
    assert manifest.metrics["held_out/gain"] == verdict["gain"]
    assert (out / "before_after.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_baseline_fails_before_any_sampling(smollm2_path, tmp_path):
    from distill.errors import DistillError

    class Untouchable:
        def generate(self, *a, **k):
            raise AssertionError("nothing may be sampled for a run that cannot finish")

    r = recipe()
    r.eval.baseline = "no-such-model"
    with pytest.raises(DistillError, match="'no-such-model' is not a registry name"):
        evaluate(r, smollm2_path, tmp_path / "eval", backend=Untouchable())


class ScriptedServer:
    """A loopback OpenAI-compatible /v1/completions responder. eval seeds sample j of problem i with
    eval.seed + 1000 * i + j, so the reply is looked up by seed: the same script whatever the arrival order."""

    def __init__(self, script: dict[int, list[tuple[str, str]]]):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.script, self.prompts = script, {}
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                i, j = divmod(body["seed"], 1000)
                srv.prompts[i] = body["prompt"]
                text, finish = srv.script[i][j]
                reply = {
                    "choices": [{"text": text, "finish_reason": finish}],
                    "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": 10},
                }
                payload = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self):
        import threading

        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def boxed(answer: str) -> tuple[str, str]:
    return f"Let me compute.\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$.", "stop"


def test_eval_scores_scripted_completions_exactly(smollm2_path, tmp_path):
    """Known answers through eval's real path (prompt rendering, OpenAI backend over HTTP, trace parsing,
    math-verify, scoring, results.json): pass@1, its SE and cons@k equal the values worked out by hand."""
    from distill.data import load_prompts
    from distill.engines.backends import OpenAIBackend
    from distill.models import load_tokenizer

    gold = [p["reference"] for p in load_prompts("gsm8k", "test", 3)]
    assert gold == ["18", "3", "70000"]  # GSM8K test, first three problems
    unparseable = ("I am not sure how to start this one", "length")  # no </think>, no number, cut off
    script = {
        0: [boxed("18"), boxed("18.0"), boxed("18"), boxed("18")],  # 4/4 correct; majority 18: cons hit
        1: [boxed("3"), boxed("7"), boxed("7"), boxed("7")],  # 1/4; majority 7 is wrong: cons miss
        2: [boxed("70000"), boxed("70,000"), boxed("5"), unparseable],  # 2/4; majority 70000: cons hit
    }
    cfg = {"benchmarks": {"gsm8k": {"k": 4, "limit": 3}}, "max_tokens": 64}
    recipe = recipe_from_dict({"name": "eval-scripted", "eval": cfg, "curate": {"verify": {"workers": 1}}})
    with ScriptedServer(script) as server:
        evaluate(recipe, smollm2_path, tmp_path / "eval", backend=OpenAIBackend(server.url, "student"))
    result = json.loads((tmp_path / "eval" / "results.json").read_text())["benchmarks"]["gsm8k"]
    per_problem = [4 / 4, 1 / 4, 2 / 4]
    mean = sum(per_problem) / 3  # 0.5833
    se = math.sqrt(sum((p - mean) ** 2 for p in per_problem) / 2 / 3)  # sample variance over problems, / n
    assert result["pass@1"] == pytest.approx(7 / 12) and mean == pytest.approx(7 / 12)
    assert result["pass@1_se"] == pytest.approx(se) and se == pytest.approx(0.2204793, abs=1e-7)
    assert result["cons@k"] == pytest.approx(2 / 3)
    assert result["verdicts"] == {"correct": 7, "unparseable": 1, "wrong": 4}
    assert (result["k"], result["n"], result["truncated"]) == (4, 3, pytest.approx(1 / 12))
    samples = read_parquet(tmp_path / "eval" / "samples.parquet")
    assert [s["verdict"] for s in samples if s["prompt_id"] == samples[-1]["prompt_id"]] == [
        "correct",
        "correct",
        "wrong",
        "unparseable",
    ]
    problems = [p["problem"] for p in load_prompts("gsm8k", "test", 3)]
    tokenizer = load_tokenizer(str(smollm2_path))
    for i, problem in enumerate(problems):  # each scripted reply answered its own problem's prompt
        sent = tokenizer.decode(server.prompts[i])
        assert problem in sent and sent.endswith("<think>\n")
