"""The fleet client: balancing, benching a failing endpoint, start-up checks, and two real `vllm serve` processes
with one killed (SIGKILL) mid-run: the stage still writes exactly every row, once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from serving import START_DEADLINE_S, free_port, kill, serve, wait_up

from distill.artifacts import read_shards
from distill.config import recipe_from_dict
from distill.engines.backends import fleet_reply
from distill.engines.fleet import Fleet
from distill.errors import DistillError
from distill.generate.run import generate, load_prompt_set


class Server:
    """A loopback OpenAI-compatible server answering /completions with its own name, or always HTTP `status`."""

    def __init__(self, name: str, status: int = 200):
        self.name, self.status, self.posts, self.lock = name, status, 0, threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Server:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send(200, {"data": [{"id": "teacher"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with srv.lock:
                    srv.posts += 1
                if srv.status != 200:
                    return self._send(srv.status, {"error": {"message": "down"}})
                time.sleep(0.02)
                text = f"{srv.name}:{body['seed']}"
                self._send(200, {"choices": [{"text": text, "finish_reason": "stop"}], "usage": {}})

        return Handler


def _fleet(urls: list[str], **kw) -> Fleet:
    return Fleet(urls, "teacher", parse=fleet_reply, **kw)


def _run(fleet: Fleet, n: int) -> dict[int, str]:
    got: dict[int, str] = {}

    def landed(key, c):
        assert key not in got  # exactly once
        got[key] = c.text

    body = {"model": "teacher", "prompt": [1, 2]}
    asyncio.run(fleet.map(((i, "/completions", {**body, "seed": i}) for i in range(n)), landed))
    return got


def test_requests_are_balanced_and_each_lands_once():
    with Server("a") as a, Server("b") as b:
        fleet = _fleet([a.url, b.url], per_endpoint=4)
        got = _run(fleet, 60)
    assert sorted(got) == list(range(60)) and all(text.endswith(f":{i}") for i, text in got.items())
    assert a.posts + b.posts == 60 and min(a.posts, b.posts) >= 20  # least outstanding first: both busy


def test_a_failing_endpoint_is_benched_and_its_requests_land_elsewhere():
    with Server("good") as good, Server("bad", status=503) as bad:
        fleet = _fleet([bad.url, good.url], per_endpoint=2, backoff_s=0.001, bench_s=60)
        got = _run(fleet, 40)
    assert sorted(got) == list(range(40)) and all(t.startswith("good:") for t in got.values())
    assert bad.posts <= 4  # 3 failures in a row bench it (plus one already in flight)
    assert [e.benched for e in fleet.endpoints] == [True, False]


def test_a_benched_endpoint_is_health_checked_back_into_rotation():
    with Server("a") as a, Server("b") as b:
        fleet = _fleet([a.url, b.url], per_endpoint=2, bench_s=0.05)
        fleet._bench(fleet.endpoints[0])
        got = _run(fleet, 200)  # ~2 s of requests; the probe after 0.05 s puts `a` back
    assert len(got) == 200 and not fleet.endpoints[0].benched and a.posts > 0


def test_start_benches_a_dead_endpoint_and_refuses_an_all_dead_fleet(capsys):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with Server("a") as a:
        fleet = _fleet([dead, a.url])
        fleet.check()
        got = _run(fleet, 10)
    assert len(got) == 10 and fleet.endpoints[0].benched and "benched at start" in capsys.readouterr().err
    with pytest.raises(DistillError, match="teacher server unreachable: .*ConnectError"):
        _fleet([dead]).check()
    with pytest.raises(DistillError, match="distinct endpoints"):
        _fleet([dead, dead])


# ---------------------------------------------------------------- two real `vllm serve` processes


def test_two_vllm_servers_one_killed_mid_run_every_row_lands_once(vllm_server, smollm2_path, tmp_path):
    victim, url = serve(smollm2_path, tmp_path / "victim.log")  # the session's server stays up; this one dies
    try:
        wait_up(victim, url, tmp_path / "victim.log", time.time() + START_DEADLINE_S)
        urls = [vllm_server, url]
        recipe = recipe_from_dict(
            {
                "name": "fleet",
                "run_dir": str(tmp_path / "run"),
                "teacher": {
                    "backend": "openai",
                    "model": "smollm2",
                    "base_url": urls,
                    "tokenizer": str(smollm2_path),
                    "thinking": False,
                    "concurrency": 4,
                },
                "generate": {
                    "prompts": [{"source": "gsm8k", "split": "test", "limit": 16}],
                    "n": 2,
                    "max_tokens": 24,
                    "force_think": False,
                    "shard_size": 2,
                },
            }
        )
        out = tmp_path / "run" / "generate"

        def kill_after_first_shard():
            while not list((out / "_done").glob("*.ok")):
                time.sleep(0.05)
            os.killpg(victim.pid, signal.SIGKILL)  # the server and its engine process, mid-run

        killer = threading.Thread(target=kill_after_first_shard, daemon=True)
        killer.start()
        manifest = generate(recipe, None, out)
        killer.join(5)
        assert victim.poll() is not None and manifest.metrics["run_shards_resumed"] == 0
        rows = list(read_shards(out))
        expected = {(p["prompt_id"], j) for p in load_prompt_set(recipe.generate)[0] for j in range(2)}
        keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
        assert len(keys) == 32 == len(set(keys)) and set(keys) == expected  # every row, none twice
        assert all(r["completion"] for r in rows)
    finally:
        kill(victim)
