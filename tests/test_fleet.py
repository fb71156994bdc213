"""The fleet client: where each request goes (counted per endpoint on loopback aiohttp servers), benching a failing
endpoint, start-up checks, and two real `vllm serve` processes with one killed (SIGKILL) mid-run: the stage still
writes exactly every row, once."""

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


def test_a_failing_endpoint_is_benched_and_its_requests_land_elsewhere():
    with Server("good") as good, Server("bad", status=503) as bad:
        fleet = _fleet([bad.url, good.url], per_endpoint=2, backoff_s=0.001, bench_s=60)
        got = _run(fleet, 40)
    assert sorted(got) == list(range(40)) and all(t.startswith("good:") for t in got.values())
    assert bad.posts in (3, 4)  # 3 failures in a row bench it (plus one already in flight)
    assert [e.benched for e in fleet.endpoints] == [True, False]


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


# ---------------------------------------------------------------- routing: where each request goes, counted


class Loopback:
    """An OpenAI-compatible aiohttp server on 127.0.0.1 in the test's own event loop. Each POST waits for `gate`
    (an asyncio.Event) when one is given, else `delay` s; it counts requests in flight and their peak. /models
    answers `probes` statuses in turn (then 200). `log` records ("post", seed) and ("models", status) in order."""

    def __init__(self, delay: float = 0.0, gate: asyncio.Event | None = None, probes: tuple[int, ...] = ()):
        self.delay, self.gate, self.probes = delay, gate, list(probes)
        self.log: list[tuple[str, int]] = []
        self.in_flight = self.peak = 0
        self.on_post = lambda: None  # called after each POST is logged

    @property
    def posts(self) -> int:
        return sum(kind == "post" for kind, _ in self.log)

    async def __aenter__(self) -> Loopback:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/completions", self._complete)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    async def _models(self, request):
        from aiohttp import web

        status = self.probes.pop(0) if self.probes else 200
        self.log.append(("models", status))
        return web.json_response({"data": [{"id": "teacher"}]}, status=status)

    async def _complete(self, request):
        from aiohttp import web

        body = await request.json()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        self.log.append(("post", body["seed"]))
        self.on_post()
        await (asyncio.wait_for(self.gate.wait(), 5) if self.gate else asyncio.sleep(self.delay))
        self.in_flight -= 1
        choice = {"text": str(body["seed"]), "finish_reason": "stop"}
        return web.json_response({"choices": [choice], "usage": {}})


async def _map(fleet: Fleet, n: int) -> dict[int, str]:
    got: dict[int, str] = {}

    def landed(key, c):
        assert key not in got  # exactly once
        got[key] = c.text

    body = {"model": "teacher", "prompt": [1, 2]}
    await fleet.map(((i, "/completions", {**body, "seed": i}) for i in range(n)), landed)
    assert got == {i: str(i) for i in range(n)}  # every request answered once, by its own reply
    return got


def _bounded(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))


def test_each_request_goes_to_the_endpoint_with_fewest_in_flight():
    """6 requests, 2 endpoints with room for 4 each, replies held until all 6 arrived: 3 and 3 in flight (the
    busiest-first or first-with-room rule would put 4 on one and 2 on the other)."""

    async def main():
        gate = asyncio.Event()
        async with Loopback(gate=gate) as a, Loopback(gate=gate) as b:
            a.on_post = b.on_post = lambda: gate.set() if a.posts + b.posts == 6 else None
            await _map(_fleet([a.url, b.url], per_endpoint=4), 6)
        assert (a.posts, b.posts, a.peak, b.peak) == (3, 3, 3, 3)

    _bounded(main())


def test_the_faster_endpoint_serves_more():
    """per_endpoint=2; `slow` answers only once `fast` has answered 18 (unequal speed at its extreme, so the
    counts are exact): slow holds its first 2 requests, every other request of the 20 goes to fast."""

    async def main():
        release = asyncio.Event()
        async with Loopback() as fast, Loopback(gate=release) as slow:
            fast.on_post = lambda: release.set() if fast.posts == 18 else None
            await _map(_fleet([slow.url, fast.url], per_endpoint=2), 20)
        assert (fast.posts, slow.posts, fast.peak, slow.peak) == (18, 2, 2, 2)

    _bounded(main())


def test_no_request_goes_to_an_endpoint_at_its_cap():
    """One endpoint benched, the other capped at 3: 12 requests (map runs 3 x 2 workers) never put more than 3 in
    flight on it, and the benched one gets none."""

    async def main():
        async with Loopback() as benched, Loopback(delay=0.02) as live:
            fleet = _fleet([benched.url, live.url], per_endpoint=3, bench_s=60)
            fleet._bench(fleet.endpoints[0])
            await _map(fleet, 12)
        assert (live.posts, live.peak, benched.log) == (12, 3, [])
        assert [e.served for e in fleet.endpoints] == [0, 12]

    _bounded(main())


def test_a_benched_endpoint_gets_nothing_until_its_probe_passes():
    """`a` benched at 0.05 s; its /models fails twice (benched again for 0.1 s, then 0.2 s) and answers the third
    probe. Meanwhile `b` (2 slots) holds its 2 requests; the other 4 wait for a slot, and go to `a` only once it
    is back: a's log is exactly the three probes, then 4 posts."""

    async def main():
        release = asyncio.Event()
        async with Loopback(probes=(503, 503)) as a, Loopback(gate=release) as b:
            a.on_post = lambda: release.set() if a.posts == 4 else None
            fleet = _fleet([a.url, b.url], per_endpoint=2, bench_s=0.05)
            fleet._bench(fleet.endpoints[0])
            await _map(fleet, 6)
        assert a.log[:3] == [("models", 503), ("models", 503), ("models", 200)]
        assert [kind for kind, _ in a.log[3:]] == ["post"] * 4 and b.posts == 2
        assert (fleet.endpoints[0].benched, fleet.endpoints[0].benches) == (False, 0)

    _bounded(main())


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
