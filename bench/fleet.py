"""Fleet client throughput: requests/s and concurrent open requests of one client process, vs the plain `openai`
async client in the same run, against a loopback OpenAI-compatible responder the bench starts (fixed completions,
so only the client is measured).

    .venv/bin/python bench/fleet.py                       # throughput (no server delay) + open-request phase
    .venv/bin/python bench/fleet.py --requests 50000 --endpoints 100 --open 20000

Goals (issue 14): >= 1,000 requests/s and >= 20,000 concurrent open requests (a 100-server fleet at ~200-256 each)
in one process with bounded memory. Each client runs in its own process (peak RSS is its own); the responder
runs in two processes over `--endpoints` ports (each process needs a file descriptor per open connection).

Where the time goes (--profile, and the CPU seconds each process reports): the responder (a raw asyncio protocol
on uvloop, fixed body) costs ~70 us of CPU per request, the distill client ~600-900 us (aiohttp's request path
dominates: _request, its timer context, connection handling; then JSON and parse_response), the openai client
~9 ms. So the client is the bottleneck, and one free core runs ~1,100-1,700 distill requests/s. Wall req/s
also depends on how much of a core the machine gives the client: the bench prints requests per client
CPU-second beside wall req/s, and the load average it ran under. Open requests: one socket each (HTTP/1.1),
so the process's file-descriptor limit (ulimit -n) caps them; --open is clipped to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPLY = json.dumps(
    {
        "choices": [{"text": "x" * 64, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 16},
    }
).encode()
MODELS = json.dumps({"data": [{"id": "teacher"}]}).encode()


# ---------------------------------------------------------------- the loopback responder


class Responder(asyncio.Protocol):
    """HTTP/1.1 keep-alive: parse head + Content-Length body, answer after `delay` s. Counts open requests."""

    stats = {"open": 0, "max_open": 0, "served": 0}
    delay = 0.0

    def connection_made(self, transport):
        self.transport, self.buf = transport, b""

    def data_received(self, data):
        self.buf += data
        while (head_end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:head_end].decode("latin-1")
            length = next(
                (int(x.split(":")[1]) for x in head.split("\r\n") if x.lower().startswith("content-length")),
                0,
            )
            if len(self.buf) < head_end + 4 + length:
                return
            self.buf = self.buf[head_end + 4 + length :]
            asyncio.ensure_future(self.answer(head.split(" ", 2)[1]))

    async def answer(self, path):
        s = Responder.stats
        s["open"] += 1
        s["max_open"] = max(s["max_open"], s["open"])
        if path.endswith("/completions") and Responder.delay:
            await asyncio.sleep(Responder.delay)
        body = _stats_body(s) if path == "/stats" else MODELS if path.endswith("/models") else REPLY
        s["open"] -= 1
        s["served"] += 1
        if not self.transport.is_closing():
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            self.transport.write(head.encode() + body)


def cpu_seconds() -> float:
    """User + system CPU time of this process: what a request costs, whatever else the machine runs."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _stats_body(s: dict) -> bytes:
    return json.dumps({**s, "cpu_s": cpu_seconds()}).encode()


def serve(ports: list[int], delay: float) -> None:
    import uvloop

    Responder.delay = delay

    async def main():
        loop = asyncio.get_running_loop()
        for port in ports:
            await loop.create_server(Responder, "127.0.0.1", port, backlog=4096)
        print("ready", flush=True)
        await asyncio.Event().wait()

    uvloop.run(main())


# ---------------------------------------------------------------- the clients


def jobs(n: int):
    body = {"model": "teacher", "prompt": [1, 2, 3], "max_tokens": 16, "temperature": 0.6, "top_p": 0.95}
    return ((i, "/completions", body) for i in range(n))


async def run_distill(urls: list[str], n: int, per_endpoint: int) -> int:
    from distill.engines.backends import fleet_reply
    from distill.engines.fleet import Fleet

    fleet = Fleet(
        urls,
        "teacher",
        parse=fleet_reply,
        per_endpoint=per_endpoint,
        timeout_s=600,
        max_retries=3,
        backoff_s=0.05,
    )
    done = [0]
    await fleet.map(jobs(n), lambda key, c: done.__setitem__(0, done[0] + 1))
    return done[0]


async def run_openai(urls: list[str], n: int, per_endpoint: int) -> int:
    """The plain `openai` async client, one per endpoint, requests dealt round-robin, at most per_endpoint each."""
    import httpx
    import openai

    limits = httpx.Limits(max_connections=per_endpoint, max_keepalive_connections=per_endpoint)
    clients = [
        openai.AsyncOpenAI(
            base_url=u, api_key="x", max_retries=3, timeout=600, http_client=httpx.AsyncClient(limits=limits)
        )
        for u in urls
    ]
    it, done = iter(range(n)), [0]

    async def worker(client):
        for _ in it:
            await client.completions.create(model="teacher", prompt=[1, 2, 3], max_tokens=16, temperature=0.6)
            done[0] += 1

    await asyncio.gather(*(worker(c) for c in clients for _ in range(per_endpoint)))
    return done[0]


def client_main(kind: str, urls: list[str], n: int, per_endpoint: int, profile: bool) -> None:
    import uvloop

    run = (run_distill if kind == "distill" else run_openai)(urls, n, per_endpoint)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    if profile:  # where the client's CPU goes (stderr), to tell the client's cost from the responder's
        import cProfile
        import pstats

        prof = cProfile.Profile()
        done = prof.runcall(uvloop.run, run)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)
    else:
        done = uvloop.run(run)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    result = {
        "done": done,
        "seconds": seconds,
        "rps": done / seconds,
        "cpu_s": cpu,
        "rps_per_cpu_s": done / cpu,
    }
    print(json.dumps({**result, "rss_mb": rss}))


# ---------------------------------------------------------------- orchestration


def start_responders(ports: list[int], delay: float) -> list[subprocess.Popen]:
    halves = [ports[: len(ports) // 2 or 1], ports[len(ports) // 2 or 1 :]]
    procs = []
    for half in [h for h in halves if h]:
        cmd = [sys.executable, __file__, "--serve", ",".join(map(str, half)), "--delay", str(delay)]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    return procs


def stats(ports: list[int], n_procs: int) -> dict:
    """Max open requests the responders saw at once and their CPU seconds (sums over the responder processes)."""
    import httpx

    firsts = [ports[0], ports[len(ports) // 2 or 1]][:n_procs]
    rows = [httpx.get(f"http://127.0.0.1:{p}/stats").json() for p in firsts]
    return {"max_open": sum(r["max_open"] for r in rows), "cpu_s": sum(r["cpu_s"] for r in rows)}


def phase(
    kind: str, ports: list[int], n: int, per_endpoint: int, delay: float, profile: bool = False
) -> dict:
    responders = start_responders(ports, delay)
    try:
        before = stats(ports, len(responders))
        urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
        cmd = [sys.executable, __file__, "--client", kind, "--urls", ",".join(urls)]
        cmd += ["--requests", str(n), "--per-endpoint", str(per_endpoint)] + ["--profile"] * profile
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parent.parent
        )
        if profile:
            print(out.stderr, file=sys.stderr)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        after = stats(ports, len(responders))
        result["max_open"], result["responder_cpu_s"] = after["max_open"], after["cpu_s"] - before["cpu_s"]
        return result
    finally:
        for p in responders:
            p.kill()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=30000, help="requests in the throughput phase")
    ap.add_argument("--endpoints", type=int, default=100, help="loopback servers (ports) in the fleet")
    ap.add_argument("--per-endpoint", type=int, default=64, help="in flight per endpoint, throughput phase")
    ap.add_argument("--open", type=int, default=20000, help="concurrent open requests to hold (open phase)")
    ap.add_argument(
        "--hold", type=float, default=30.0, help="seconds the responder holds each request (open phase)"
    )
    ap.add_argument("--baseline-requests", type=int, default=3000, help="openai client, throughput phase")
    ap.add_argument("--baseline-open", type=int, default=2000, help="openai client, open phase")
    ap.add_argument("--serve"), ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--client"), ap.add_argument("--urls")
    ap.add_argument("--profile", action="store_true", help="cProfile the distill client (throughput phase)")
    args = ap.parse_args()
    if args.serve:
        return serve([int(p) for p in args.serve.split(",")], args.delay)
    if args.client:
        return client_main(args.client, args.urls.split(","), args.requests, args.per_endpoint, args.profile)
    ports = list(range(23100, 23100 + args.endpoints))
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # A socket per open request, plus the interpreter's own files: the process's fd limit caps the open phase.
    open_target = min(args.open, fd_limit - 200)
    per_open = -(-open_target // args.endpoints)
    open_n = per_open * args.endpoints
    print(
        f"fd limit {fd_limit}: open phase holds {open_n} requests ({args.endpoints} x {per_open})", flush=True
    )
    # The openai client is an order of magnitude slower: it gets fewer requests (rates and RSS still compare).
    base_open = -(-min(open_n, args.baseline_open) // args.endpoints)
    sizes = {
        "distill": (args.requests, open_n, per_open),
        "openai": (args.baseline_requests, base_open * args.endpoints, base_open),
    }
    rows = {}
    for kind, (n, n_open, per) in sizes.items():
        rows[kind] = {
            "throughput": phase(kind, ports, n, args.per_endpoint, 0.0, args.profile and kind == "distill"),
            "open": phase(kind, ports, n_open, per, args.hold),
        }
        print(kind, json.dumps(rows[kind]), flush=True)
    d, o = rows["distill"], rows["openai"]

    def kib(row: dict) -> float:  # client RSS per request it held open
        return row["open"]["rss_mb"] * 1024 / row["open"]["max_open"]

    print(
        f"throughput: distill {d['throughput']['rps']:,.0f} req/s vs openai {o['throughput']['rps']:,.0f} req/s "
        f"= {d['throughput']['rps'] / o['throughput']['rps']:.2f}x (goal >= 1,000 req/s); peak RSS "
        f"{d['throughput']['rss_mb']:.0f} vs {o['throughput']['rss_mb']:.0f} MiB"
    )

    def us(row: dict, key: str) -> float:  # CPU microseconds per request
        return row[key] * 1e6 / row["done"]

    dt, ot = d["throughput"], o["throughput"]
    print(
        f"CPU per request (throughput phase): distill client {us(dt, 'cpu_s'):.0f} us vs responder "
        f"{us(dt, 'responder_cpu_s'):.0f} us; openai client {us(ot, 'cpu_s'):.0f} us vs responder "
        f"{us(ot, 'responder_cpu_s'):.0f} us. Requests per client CPU-second: distill {dt['rps_per_cpu_s']:,.0f} "
        f"vs openai {ot['rps_per_cpu_s']:,.0f} = {dt['rps_per_cpu_s'] / ot['rps_per_cpu_s']:.2f}x "
        f"(wall req/s is capped by the CPU the machine gives: {os.getloadavg()[0]:.1f} load on {os.cpu_count()} cores)"
    )
    print(
        f"open: distill held {d['open']['max_open']:,} open at once, {d['open']['rps']:,.0f} req/s, peak RSS "
        f"{d['open']['rss_mb']:.0f} MiB vs openai {o['open']['max_open']:,} open, {o['open']['rps']:,.0f} req/s, "
        f"{o['open']['rss_mb']:.0f} MiB; per open request {kib(d):.1f} vs {kib(o):.1f} KiB "
        f"= {kib(d) / kib(o):.2f}x (goal >= 20,000 open)"
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    main()
