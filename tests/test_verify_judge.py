"""LLM judge: the prompt it is given, how its reply is read, and (slow) a real judge model through vLLM."""

from __future__ import annotations

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


@pytest.mark.slow
def test_real_judge_model_through_vllm(smollm2_path):
    """The embedded SmolLM2 as judge, through the generation backend (vLLM on CPU): every item gets a verdict."""
    from distill.config import TeacherConfig
    from distill.graders.judge import judge

    cfg = TeacherConfig(
        model=str(smollm2_path), backend="vllm", enforce_eager=True, dtype="float32", max_model_len=1024
    )
    items = [("What is 2 + 2?", "4", "The sum is four."), ("What is 2 + 2?", "4", "It is 5.")]
    verdicts = judge(items, cfg, max_tokens=16)
    assert len(verdicts) == 2 and set(verdicts) <= {"correct", "wrong", "unparseable"}
