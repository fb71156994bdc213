"""The openai backend: fault paths against a loopback server that injects 429/5xx/timeouts/garbled JSON/dropped
connections, then the real thing against a `vllm serve` this test starts on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distill.artifacts import read_shards
from distill.config import GenerateConfig, TeacherConfig, recipe_from_dict
from distill.engines.backends import GenRequest, OpenAIBackend, SamplingSpec, VLLMBackend, make_backend
from distill.engines.prompts import build_messages, load_teacher_tokenizer, make_request
from distill.engines.traces import parse_trace
from distill.errors import DistillError
from distill.generate.run import generate, load_prompt_set

CHAT_REPLY = {
    "role": "assistant",
    "content": "The answer is 4.",
    "reasoning_content": "2+2=4",
}  # DeepSeek API


class FaultServer:
    """OpenAI-compatible loopback server on an ephemeral port. Each POST takes the next fault of `script`
    (429, 500, 503, 400, timeout, garbled, drop), and answers normally once the script is used up."""

    def __init__(self, script: list[str] | None = None, delay_s: float = 0.0, message: dict | None = None):
        self.script, self.delay_s, self.message = list(script or []), delay_s, message or CHAT_REPLY
        self.posts: list[tuple[str, dict, str | None]] = []  # (path, body, authorization header)
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FaultServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._send(200, json.dumps({"data": [{"id": "teacher"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with srv.lock:
                    srv.posts.append((self.path, body, self.headers.get("Authorization")))
                    fault = srv.script.pop(0) if srv.script else "ok"
                    srv.inflight += 1
                    srv.max_inflight = max(srv.max_inflight, srv.inflight)
                try:
                    self._answer(fault, body)
                finally:
                    with srv.lock:
                        srv.inflight -= 1

            def _answer(self, fault: str, body: dict) -> None:
                if fault in ("429", "500", "503", "400"):
                    self._send(int(fault), b'{"error": {"message": "injected"}}', {"Retry-After": "0"})
                elif fault == "garbled":
                    self._send(200, b'{"choices": [{"text": "cut off')
                elif fault == "drop":
                    self.close_connection = True  # no response at all: the client sees a disconnect
                else:
                    time.sleep(1.0 if fault == "timeout" else srv.delay_s)
                    self._send(200, json.dumps(_reply(self.path, body, srv.message)).encode())

        return Handler


def _reply(path: str, body: dict, message: dict) -> dict:
    usage = {"prompt_tokens": len(body.get("prompt") or []) or 7, "completion_tokens": 3}
    if path.endswith("/chat/completions"):
        return {"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage}
    return {"choices": [{"text": f"seed={body.get('seed')}", "finish_reason": "length"}], "usage": usage}


def _backend(server: FaultServer, **kw) -> OpenAIBackend:
    return OpenAIBackend(
        server.url, "teacher", **{"timeout_s": 0.4, "max_retries": 6, "backoff_s": 0.01, **kw}
    )


REQ = GenRequest([{"role": "user", "content": "2+2?"}], "<prompt>", [5, 6, 7], seed=40)


def test_every_fault_is_retried_then_the_answer_arrives():
    with FaultServer(["429", "500", "timeout", "garbled", "drop", "503"]) as server:
        outs = _backend(server).generate([REQ], SamplingSpec(n=1))
    assert len(server.posts) == 7  # six faults, then the answer
    assert all(
        p == ("/v1/completions", server.posts[0][1], None) for p in server.posts
    )  # same request each time
    assert server.posts[0][1]["prompt"] == [5, 6, 7] and server.posts[0][1]["seed"] == 40
    c = outs[0][0]
    assert (c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) == ("seed=40", "length", 3, 3)


def test_retries_are_bounded():
    gave_up = r"giving up after 3 attempts \(last: HTTP 503\)"
    with FaultServer(["503"] * 10) as server, pytest.raises(DistillError, match=gave_up):
        _backend(server, max_retries=2).generate([REQ], SamplingSpec(n=1))
    assert len(server.posts) == 3


def test_client_errors_are_not_retried():
    with FaultServer(["400"]) as server, pytest.raises(DistillError, match="HTTP 400"):
        _backend(server).generate([REQ], SamplingSpec(n=1))
    assert len(server.posts) == 1


def test_concurrency_is_bounded_and_samples_are_seeded_seed_plus_j():
    reqs = [GenRequest(REQ.messages, "p", [1, 2], seed=100 * i) for i in range(6)]
    done = []
    with FaultServer(delay_s=0.15) as server:
        outs = _backend(server, concurrency=3).generate(
            reqs, SamplingSpec(n=2), lambda p, t: done.append((p, t))
        )
    assert server.max_inflight == 3  # parallel, never above the bound
    assert [[c.text for c in o] for o in outs] == [
        [f"seed={100 * i}", f"seed={100 * i + 1}"] for i in range(6)
    ]
    assert done == [(1, 6)] * 6


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])  # DeepSeek API, vLLM >= 0.10
def test_chat_mode_rejoins_a_server_split_reasoning(field):
    message = {"role": "assistant", "content": "The answer is 4.", field: "2+2=4"}
    req = GenRequest([{"role": "user", "content": "2+2?"}], seed=1)  # no prompt_text: the server renders
    with FaultServer(message=message) as server:
        c = _backend(server).generate([req], SamplingSpec(n=1))[0][0]
    assert server.posts[0][0] == "/v1/chat/completions" and server.posts[0][1]["messages"] == req.messages
    assert c.text == "2+2=4</think>The answer is 4."
    trace = parse_trace(c.text, c.finish_reason, thinking=True, prefilled=False)
    assert (trace.reasoning, trace.answer, trace.flags) == ("2+2=4", "The answer is 4.", [])


def test_start_fails_fast_on_a_model_the_server_does_not_serve():
    with FaultServer() as server, pytest.raises(DistillError, match="'other' is not served"):
        make_backend(TeacherConfig(backend="openai", model="other", base_url=server.url))


def test_stage_over_chat_api_sends_the_key_from_env_and_never_writes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_KEY", "sekrit-123")
    with FaultServer(["500", "429"]) as server:
        recipe = recipe_from_dict(
            {
                "name": "openai-chat",
                "run_dir": str(tmp_path / "run"),
                "teacher": {
                    "backend": "openai",
                    "model": "teacher",
                    "base_url": server.url,
                    "api_key_env": "DISTILL_TEST_KEY",
                    "max_retries": 3,
                },
                "generate": {
                    "prompts": [{"source": "gsm8k", "split": "test", "limit": 3}],
                    "n": 2,
                    "shard_size": 2,
                },
            }
        )
        out = tmp_path / "run" / "generate"
        manifest = generate(recipe, None, out)
    assert {auth for _, _, auth in server.posts} == {"Bearer sekrit-123"}
    rows = list(read_shards(out))
    assert manifest.rows_out == len(rows) == 6 and len(server.posts) == 6 + 2
    for r in rows:  # R1 teacher behind the DeepSeek API: reasoning split by the server, rejoined, re-parsed
        assert (r["reasoning"], r["answer"], r["flags"], r["prompt_text"]) == (
            "2+2=4",
            "The answer is 4.",
            [],
            "",
        )
    for path in out.rglob("*"):
        assert path.is_dir() or b"sekrit-123" not in path.read_bytes()


# ---------------------------------------------------------------- a real `vllm serve`


def test_vllm_serve_gives_the_in_process_engine_s_samples(vllm_server, vllm_engine, smollm2_path):
    """Same token ids, same seeds (sample j: seed + j): the HTTP path and the in-process engine agree."""
    tok = load_teacher_tokenizer(TeacherConfig(model=str(smollm2_path)))
    cfg = GenerateConfig()
    reqs = [
        make_request(tok, build_messages(q, "math", cfg), False, 11 * (i + 1))
        for i, q in enumerate(["What is 3+4?", "What is 10-7?"])
    ]
    spec = SamplingSpec(n=2, temperature=0.6, top_p=0.95, max_tokens=12)
    served = OpenAIBackend(vllm_server, "smollm2", concurrency=4).generate(reqs, spec)
    local = VLLMBackend(vllm_engine).generate(reqs, spec)
    for req, s_out, l_out in zip(reqs, served, local, strict=True):
        assert [c.text for c in s_out] == [c.text for c in l_out]
        assert [c.completion_tokens for c in s_out] == [c.completion_tokens for c in l_out]
        assert all(c.prompt_tokens == len(req.prompt_token_ids) for c in s_out)


def test_vllm_serve_chat_api(vllm_server):
    req = GenRequest([{"role": "user", "content": "Say hello."}], seed=3)
    c = OpenAIBackend(vllm_server, "smollm2").generate([req], SamplingSpec(n=1, max_tokens=8))[0][0]
    assert c.text and c.prompt_tokens > 5 and 0 < c.completion_tokens <= 8


def test_stage_with_two_data_parallel_replicas(vllm_server, smollm2_path, tmp_path):
    recipe = recipe_from_dict(
        {
            "name": "dp2",
            "run_dir": str(tmp_path / "run"),
            "teacher": {
                "backend": "openai",
                "model": "smollm2",
                "base_url": vllm_server,
                "tokenizer": str(smollm2_path),
                "thinking": False,
                "data_parallel_size": 2,
            },
            "generate": {
                "prompts": [{"source": "gsm8k", "split": "test", "limit": 7}],
                "n": 2,
                "max_tokens": 8,
                "force_think": False,
                "shard_size": 2,
            },
        }
    )
    out = tmp_path / "run" / "generate"
    manifest = generate(recipe, None, out)
    rows = list(read_shards(out))
    expected = {(p["prompt_id"], j) for p in load_prompt_set(recipe.generate)[0] for j in range(2)}
    assert len(rows) == 14 and {(r["prompt_id"], r["sample_index"]) for r in rows} == expected
    assert len(manifest.outputs) == 4 == len(list((out / "_done").glob("*.ok")))
    assert all(r["prompt_text"].endswith("<|im_start|>assistant\n") and r["completion"] for r in rows)


def test_vllm_serve_returns_the_in_process_engine_s_logprobs(vllm_server, vllm_engine, smollm2_path):
    """generate.logprobs over HTTP (vLLM's token-id extension) gives the in-process engine's ids and top-K."""
    import numpy as np

    tok = load_teacher_tokenizer(TeacherConfig(model=str(smollm2_path)))
    req = make_request(tok, build_messages("What is 6*7?", "math", GenerateConfig()), False, 21)
    spec = SamplingSpec(n=1, temperature=0.6, top_p=0.95, max_tokens=10, logprobs=4)
    served = OpenAIBackend(vllm_server, "smollm2").generate([req], spec)[0][0].logprobs
    local = VLLMBackend(vllm_engine).generate([req], spec)[0][0].logprobs
    assert served.token_ids.tolist() == local.token_ids.tolist()
    assert served.top_ids.tolist() == local.top_ids.tolist()
    np.testing.assert_allclose(served.top_logprobs, local.top_logprobs, atol=1e-4)
    np.testing.assert_allclose(served.token_logprobs, local.token_logprobs, atol=1e-4)
