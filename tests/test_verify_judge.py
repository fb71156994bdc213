"""LLM judge: the prompt it is given, how its reply is read, and curate with SmolLM2 as a real judge on vLLM."""

from __future__ import annotations

import json
import re

import pytest

from distill.graders.judge import judge_prompt, parse_judgement

REPLIES = [  # (judge reply, verdict)
    ("CORRECT", "correct"),
    ("INCORRECT", "wrong"),
    ("incorrect.", "wrong"),
    (
        "<think>They match: 0.5 = 1/2. Is it INCORRECT? No.</think>\n\nCORRECT",
        "correct",
    ),  # after </think> only
    ("The answers agree, so CORRECT... wait, units differ: INCORRECT", "wrong"),  # the last word counts
    ("They look similar.", "unparseable"),
    ("<think>CORRECT</think>", "unparseable"),  # nothing after the reasoning
]


@pytest.mark.parametrize(("reply", "verdict"), REPLIES)
def test_parse_judgement(reply, verdict):
    assert parse_judgement(reply) == verdict


def test_prompt_carries_gold_and_prediction_tail():
    prompt = judge_prompt("What is 1/2 as a decimal?", "0.5", "blah " * 1000 + "one half")
    assert "Reference answer:\n0.5" in prompt and prompt.rstrip().endswith("CORRECT or INCORRECT.")
    assert "one half" in prompt and len(prompt) < 2600  # only the end of a long answer


# A handful of curate rows for the real judge: (prompt id, problem, reference, answer, the rules' verdict)
JUDGED = [
    (
        "apples",
        "Tom has 3 apples and buys 4 more. How many apples does Tom have now?",
        "7",
        "So \\boxed{7}.",
        "correct",
    ),
    (
        "apples",
        "Tom has 3 apples and buys 4 more. How many apples does Tom have now?",
        "7",
        "So \\boxed{9}.",
        "wrong",
    ),
    (
        "apples",
        "Tom has 3 apples and buys 4 more. How many apples does Tom have now?",
        "7",
        "Tom has seven.",
        "unparseable",
    ),
    (
        "cookies",
        "Ana bakes 12 cookies and shares them among 4 friends. How many does each get?",
        "3",
        "\\boxed{3}",
        "correct",
    ),
    (
        "cookies",
        "Ana bakes 12 cookies and shares them among 4 friends. How many does each get?",
        "3",
        "\\boxed{4}",
        "wrong",
    ),
    (
        "cookies",
        "Ana bakes 12 cookies and shares them among 4 friends. How many does each get?",
        "3",
        "Each gets three.",
        "unparseable",
    ),
]


def judged_rows() -> list[dict]:
    """Generate-stage rows (design.md schema) for JUDGED; every trace differs, so none is a duplicate."""
    rows = []
    for k, (pid, problem, reference, answer, _) in enumerate(JUDGED):
        reasoning = f"Trace {k}: I work through the problem step by step."
        rows.append(
            {
                "prompt_id": pid,
                "domain": "math",
                "problem": problem,
                "reference": reference,
                "source": "arith",
                "license": "MIT",
                "sample_index": k,
                "messages": [{"role": "user", "content": problem}],
                "prompt_text": problem,
                "completion": f"{reasoning}</think>{answer}",
                "reasoning": reasoning,
                "answer": answer,
                "finish_reason": "stop",
                "prompt_tokens": 20,
                "completion_tokens": 30,
                "flags": [],
                "teacher": "smollm2-135m",
                "sampling": json.dumps({"n": 3, "temperature": 0.6}),
                "seed": k,
            }
        )
    return rows


class Recorded:
    """The judge's backend with every reply kept: {the prediction the judge was shown: its raw reply}."""

    def __init__(self, backend):
        self.backend, self.replies = backend, {}

    def generate(self, requests, sampling, on_done=None):
        outs = self.backend.generate(requests, sampling, on_done)
        for req, out in zip(requests, outs, strict=True):
            shown = req.messages[0]["content"].split("Student's final answer:\n")[1].split("\n\n")[0]
            self.replies[shown] = out[0].text
        return outs

    def close(self):
        self.backend.close()


def read_reply(text: str) -> str:
    """The test's own reading of a judge reply: its last CORRECT / INCORRECT word after any </think>."""
    words = [w.upper() for w in re.findall(r"[A-Za-z]+", text.split("</think>")[-1])]
    last = [w for w in words if w in ("CORRECT", "INCORRECT")][-1:]
    return {"CORRECT": "correct", "INCORRECT": "wrong"}[last[0]] if last else "unparseable"


def test_curate_with_smollm2_as_judge_on_the_real_engine(tmp_path, monkeypatch, smollm2_path, vllm_engine):
    """judge_sample=1: the judge grades all six rows through vLLM; each row's judge_verdict is what its real reply
    says, it decides the unparseable rows, and the disagreement count is the rule-graded rows it contradicts."""
    import distill.engines.backends as backends
    from distill.artifacts import finish_manifest, read_shards, start_manifest, write_parquet
    from distill.config import CurateConfig, DecontamConfig, Recipe, TeacherConfig, VerifyConfig
    from distill.curate.run import curate

    src = tmp_path / "generate"
    write_parquet(judged_rows(), src / "part-00000.parquet")
    finish_manifest(src, start_manifest("generate", "judge-test"))
    judge_cfg = TeacherConfig(
        model=str(smollm2_path), enforce_eager=True, dtype="float32", max_model_len=2048
    )
    recorded = Recorded(backends.VLLMBackend(vllm_engine))  # the session engine: close() leaves it running
    monkeypatch.setattr(backends, "make_backend", lambda cfg: recorded)
    verify = VerifyConfig(judge=judge_cfg, judge_sample=1.0, judge_max_tokens=24, code=False, mcq=False)
    cfg = CurateConfig(verify=verify, decontaminate=DecontamConfig(benchmarks=[]))
    m = curate(Recipe(name="judge-test", run_dir=str(tmp_path), curate=cfg), src, tmp_path / "curate")

    out = {r["sample_index"]: r for d in ("kept", "dropped") for r in read_shards(tmp_path / "curate" / d)}
    assert sorted(out) == list(range(len(JUDGED))) and len(recorded.replies) == len(JUDGED)
    judge_name, disagree, decided = f"judge:{smollm2_path}", 0, 0
    for k, (_, _, _, answer, rule) in enumerate(JUDGED):
        row, said = out[k], read_reply(recorded.replies[answer])
        assert row["judge_verdict"] == said, (answer, recorded.replies[answer])
        if rule == "unparseable" and said != "unparseable":  # the judge decides where the rules could not
            assert (row["verdict"], row["grader"]) == (said, judge_name)
            decided += 1
        else:  # elsewhere it only votes
            assert (row["verdict"], row["grader"]) == (rule, "math-verify")
            disagree += rule != "unparseable" and said != "unparseable" and said != rule
        assert (row.get("drop_reason") is None) == (row["verdict"] == "correct")
    judged = m.metrics["judge"]
    assert (judged["asked"], judged["decided"], judged["disagreements"]) == (len(JUDGED), decided, disagree)
    # SmolLM2 answers in the format asked: the count above is over real verdicts, not six unparseable replies
    assert sum(read_reply(r) != "unparseable" for r in recorded.replies.values()) >= 3, recorded.replies
