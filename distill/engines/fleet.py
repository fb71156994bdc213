"""A client for a fleet of OpenAI-compatible teacher servers: balance by outstanding requests, bench and re-probe
failing endpoints, retry every request until it lands once.

    fleet = Fleet(["http://a:8000/v1", "http://b:8000/v1"], "deepseek-ai/DeepSeek-R1", parse=fleet_reply)
    fleet.check()                                            # fail fast: nothing reachable, or a wrong model
    asyncio.run(fleet.map(((key, "/completions", body) for ...), on_result))   # on_result(key, parse(reply, body))

`parse` turns a reply into a result (distill.engines.backends.fleet_reply: a Completion); the fleet knows HTTP
and endpoints, not the OpenAI schema, so the engines layer has no import cycle.

Balancing: each request goes to the healthy endpoint with the fewest requests in flight, at most `per_endpoint`
each (a request waits for a free slot, so memory stays bounded however many are queued: `map` pulls jobs lazily).
Failures: 408/429/5xx, timeouts, refused or dropped connections and unparseable bodies are retried (exponential
backoff with full jitter, Retry-After honoured) on whichever endpoint is then best; other 4xx fail at once.
An endpoint with `bench_after` failures in a row is benched (taken out of rotation) while another is healthy;
a background health check probes its /models after `bench_s` (doubling to `bench_cap_s`) and puts it back once
it answers. A request is answered exactly once: its result goes to one slot by key, and a request gives up (one
DistillError naming the URL and the last failure) only after `max_retries` retries.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from distill.errors import DistillError

RETRY_STATUS = {408, 429}  # plus every 5xx
Job = tuple[Any, str, dict]  # (key, path such as "/completions", JSON body)
# (reply JSON, request body) -> the result on_result gets; KeyError/TypeError/IndexError/ValueError = malformed
Parse = Callable[[dict, dict], Any]


@dataclass
class Endpoint:
    url: str  # .../v1
    outstanding: int = 0  # requests in flight
    failures: int = 0  # in a row
    benched: bool = False  # out of rotation until a health check passes
    probe_at: float = 0.0  # monotonic seconds: the next health check of a benched endpoint
    benches: int = 0  # times benched since it last answered (the bench time doubles)
    served: int = 0  # answers received


class Retry(Exception):
    """One failed attempt worth retrying: `last` says why, `wait` is the server's Retry-After (s)."""

    def __init__(self, last: str, wait: float = 0.0, endpoint_fault: bool = True):
        super().__init__(last)
        self.last, self.wait, self.endpoint_fault = last, wait, endpoint_fault


class Fleet:
    def __init__(
        self,
        urls: str | list[str],
        model: str,
        *,
        parse: Parse,
        api_key: str | None = None,
        per_endpoint: int = 64,
        timeout_s: float = 1800.0,
        max_retries: int = 8,
        backoff_s: float = 1.0,
        backoff_cap_s: float = 60.0,
        bench_after: int = 3,
        bench_s: float = 5.0,
        bench_cap_s: float = 300.0,
    ):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls or len(set(urls)) != len(urls):
            raise DistillError(f"teacher.base_url: give one or more distinct endpoints (got {urls})")
        self.endpoints = [Endpoint(u.rstrip("/")) for u in urls]
        self.model, self.parse = model, parse
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.per_endpoint, self.timeout_s, self.max_retries = per_endpoint, timeout_s, max_retries
        self.backoff_s, self.backoff_cap_s = backoff_s, backoff_cap_s
        self.bench_after, self.bench_s, self.bench_cap_s = bench_after, bench_s, bench_cap_s

    # ------------------------------------------------------------ start-up check

    def check(self) -> None:
        """Every endpoint's /models: unreachable ones start benched; none reachable, or a reachable one that does
        not serve the model (a misconfigured fleet), is an error before any work is done."""
        import httpx

        down = []
        for ep in self.endpoints:
            url = f"{ep.url}/models"
            try:
                resp = httpx.get(url, headers=self.headers, timeout=30.0)
                served = [m["id"] for m in resp.json()["data"]] if resp.status_code == 200 else None
            except httpx.HTTPError as err:
                down.append(f"{url} ({type(err).__name__}: {err})")
                self._bench(ep)
                continue
            except (ValueError, KeyError, TypeError) as err:
                raise DistillError(f"teacher server {url}: unexpected reply ({type(err).__name__})") from None
            if served is None:
                raise DistillError(f"teacher server {url}: HTTP {resp.status_code}: {resp.text[:300]}")
            if self.model not in served:
                raise DistillError(
                    f"teacher.model '{self.model}' is not served by {ep.url} (serves: {served})"
                )
        if len(down) == len(self.endpoints):
            raise DistillError(f"teacher server unreachable: {'; '.join(down)}")
        for line in down:
            print(f"warning: teacher endpoint benched at start: {line}", file=sys.stderr)

    # ------------------------------------------------------------ running

    async def map(self, jobs: Iterable[Job], on_result: Callable[[Any, Any], None]) -> None:
        """Run every job, at most per_endpoint x endpoints in flight; on_result(key, Completion) once per job."""
        import aiohttp

        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)  # our slots bound the connections
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self._slots = asyncio.Condition()  # a request waits here while every endpoint in rotation is full
        self._probes = {
            e.url: asyncio.ensure_future(self._health_check(e)) for e in self.endpoints if e.benched
        }
        it = iter(jobs)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.headers
        ) as session:
            workers = [
                self._worker(session, it, on_result) for _ in range(self.per_endpoint * len(self.endpoints))
            ]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in self._probes.values():
                    task.cancel()

    async def _worker(self, session: Any, jobs: Any, on_result: Callable[[Any, Any], None]) -> None:
        for key, path, body in jobs:  # one shared iterator: a job is taken by exactly one worker
            on_result(key, await self.post(session, path, body))

    async def post(self, session: Any, path: str, body: dict) -> Any:
        """One request, retried until an endpoint answers it (or the retries run out)."""
        last, url = "", self.endpoints[0].url + path
        for attempt in range(self.max_retries + 1):
            ep = await self._acquire()
            url = ep.url + path
            try:
                result = await self._send(session, url, body)
            except Retry as retry:
                last = retry.last
                self._failed(ep, retry.endpoint_fault)
                wait = retry.wait
            else:
                self._answered(ep)
                return result
            finally:
                ep.outstanding -= 1
                async with self._slots:
                    self._slots.notify(1)
            if attempt < self.max_retries:
                cap = min(self.backoff_cap_s, self.backoff_s * 2**attempt)
                await asyncio.sleep(max(random.uniform(0, cap), min(wait, self.backoff_cap_s)))
        raise DistillError(f"{url}: giving up after {self.max_retries + 1} attempts (last: {last})")

    async def _send(self, session: Any, url: str, body: dict) -> Any:
        import aiohttp

        try:
            async with session.post(url, json=body) as resp:
                status, raw, headers = resp.status, await resp.read(), resp.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as err:  # refused, dropped, timed out
            raise Retry(type(err).__name__) from None
        if status == 200:
            try:
                return self.parse(json.loads(raw), body)
            except (ValueError, KeyError, TypeError, IndexError) as err:
                raise Retry(f"unparseable reply ({type(err).__name__})") from None
        if status in RETRY_STATUS or status >= 500:  # 429: the server is busy, not broken
            raise Retry(f"HTTP {status}", _retry_after(headers), endpoint_fault=status != 429)
        raise DistillError(f"{url}: HTTP {status}: {raw[:300].decode(errors='replace')}")

    # ------------------------------------------------------------ balancing and benching

    async def _acquire(self) -> Endpoint:
        """The healthy endpoint with the fewest requests in flight, waiting for a free slot."""
        async with self._slots:
            while (ep := self._pick()) is None:
                await self._slots.wait()
            ep.outstanding += 1
            return ep

    def _pick(self) -> Endpoint | None:
        free = [e for e in self.endpoints if not e.benched and e.outstanding < self.per_endpoint]
        return min(free, key=lambda e: e.outstanding) if free else None

    def _answered(self, ep: Endpoint) -> None:
        ep.failures, ep.benches, ep.served = 0, 0, ep.served + 1

    def _failed(self, ep: Endpoint, endpoint_fault: bool) -> None:
        if not endpoint_fault:
            return
        ep.failures += 1
        others = any(e is not ep and not e.benched for e in self.endpoints)
        if ep.failures >= self.bench_after and others and not ep.benched:
            self._bench(ep)  # never the last endpoint in rotation: then retries just back off
            self._probes[ep.url] = asyncio.ensure_future(self._health_check(ep))

    def _bench(self, ep: Endpoint) -> None:
        ep.benched, ep.probe_at = True, time.monotonic() + min(self.bench_cap_s, self.bench_s * 2**ep.benches)
        ep.benches += 1

    async def _health_check(self, ep: Endpoint) -> None:
        """Probe a benched endpoint's /models when its bench ends; back in rotation once it answers."""
        import httpx

        async with httpx.AsyncClient(headers=self.headers, timeout=10.0) as client:
            while True:
                await asyncio.sleep(max(0.0, ep.probe_at - time.monotonic()))
                try:
                    if (await client.get(f"{ep.url}/models")).status_code == 200:
                        ep.failures, ep.benched = 0, False
                        async with self._slots:
                            self._slots.notify_all()
                        return
                except httpx.HTTPError:
                    pass
                self._bench(ep)

    def stats(self) -> list[dict[str, Any]]:
        return [{"url": e.url, "served": e.served, "benches": e.benches} for e in self.endpoints]


def _retry_after(headers: Any) -> float:
    try:
        return float(headers.get("retry-after", 0))
    except ValueError:  # an HTTP date: fall back to our own backoff
        return 0.0
