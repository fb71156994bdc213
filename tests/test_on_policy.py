"""train.objective: on_policy on CPU with real vLLM engines (student and teacher in this process): student == teacher
starts at a reverse KL ≈ 0, and a server that cannot return prompt log-probs is one clear error."""

from __future__ import annotations

import json
import os
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from test_train_kd import PROBLEMS, STUDENT, make_curate, prepared_student, tiny_smol  # noqa: F401

from distill.config import recipe_from_dict
from distill.errors import DistillError
from distill.train import loop
from distill.train.on_policy import ServerScorer, save_policy_start

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine; two engines run at once


def op_recipe(model: Path, teacher: Path, **train):
    base = {
        "model": str(model),
        "objective": "on_policy",
        "teacher": str(teacher),
        "max_length": 128,
        "max_steps": 4,
        "lr": 3e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "save_every": 2,
        "keep_checkpoints": 3,
        "dtype": "float32",
        "gradient_checkpointing": False,
        "on_policy": {
            "prompts_per_step": 2,
            "samples_per_prompt": 2,
            "max_tokens": 12,
            "engine": {"dtype": "float32", "enforce_eager": True, "max_model_len": 256},
        },
    }
    return recipe_from_dict({"name": "op", "student": STUDENT, "train": {**base, **train}})


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": p}], "reasoning": "", "answer": f"The answer is {i}."}
        for i, p in enumerate(PROBLEMS)
    ]
    return make_curate(tmp_path_factory.mktemp("op-curate"), rows)


def release_folder(model: Path, out: Path) -> Path:
    """A model in the student's release layout (the R1 rows added), as vLLM loads it: a teacher that reads the
    student's ids."""
    net, tok = prepared_student(model)
    return save_policy_start(net, tok, out)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_student_equal_to_teacher_starts_at_zero(curated, tiny_smol, tmp_path):  # noqa: F811
    teacher = release_folder(tiny_smol, tmp_path / "teacher")
    out = tmp_path / "train"
    loop.train(op_recipe(tiny_smol, teacher, max_steps=1), curated, out)
    (row,) = metrics(out)
    assert abs(row["reverse_kl"]) < 5e-3, row


class NoPromptLogprobs(BaseHTTPRequestHandler):
    """An OpenAI-compatible completions endpoint that ignores prompt_logprobs (as most servers do)."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"choices": [{"text": "x", "index": 0, "finish_reason": "length"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_server_without_prompt_logprobs_is_one_error():
    server = HTTPServer(("127.0.0.1", 0), NoPromptLogprobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        with pytest.raises(DistillError, match="no prompt_logprobs") as err:
            ServerScorer(url, "teacher").score([[1, 2, 3]], [1])
        assert url in str(err.value) and "\n" not in str(err.value)
    finally:
        server.shutdown()
