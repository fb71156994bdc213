"""Verifiers: math-verify, sandboxed code tests, multiple-choice letters, an optional LLM judge.

The API the curate and eval stages share:

    verify_row("math", "025", "... so \\\\boxed{25}", cfg)  -> Verdict("correct", "math-verify", "25")
    verify_batch([(domain, reference, answer_text), ...], cfg)  -> [Verdict | None, ...]

A verdict is one of correct | wrong | unparseable | timeout; `bad_reference` says the gold answer itself
could not be read (the row is dropped, it is no verdict on the completion). None: no rule grader for that
domain (general prompts, or a domain switched off in VerifyConfig). `verify_batch` runs items in `cfg.workers`
fresh worker processes with a per-item deadline (math/mcq `timeout_s`, code `code_timeout_s` plus sandbox
start-up; stdin/stdout tests: their cases' own limits, distill.graders.stdio): a worker past its deadline, or
one that dies, is killed and replaced and the item is `timeout`; so is an item on which the grader itself raises. A machine that cannot build the code sandbox is an error, never a
verdict. To grade several batches with the same workers: `with VerifierPool(cfg) as pool: pool.map(items)`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from distill.config import VerifyConfig
from distill.errors import DistillError

VERDICTS = ("correct", "wrong", "unparseable", "timeout")
GRADERS = {"math": "math-verify", "code": "sandbox", "mcq": "mcq-letter"}
CODE_STARTUP_S = 10.0  # sandbox + interpreter start, on top of the program's own limit
CHUNK = 16  # items sent to a worker at once: fewer round trips, the deadline is still per item
WORKER_MEMORY_MB = 4096  # address space of a worker process
WORKER_START_S = 120.0  # spawn + imports on a loaded 2-core machine


@dataclass
class Verdict:
    verdict: str  # correct | wrong | unparseable | timeout | bad_reference
    grader: str  # math-verify | sandbox | mcq-letter | judge:<model>
    pred_answer: str | None  # what was graded: the boxed answer, the letter, the code


Item = tuple[str, "str | None", "str | None"]  # (domain, reference, answer text)


def grader_for(domain: str, cfg: VerifyConfig) -> str | None:
    """The rule grader that handles `domain` under this config, or None."""
    enabled = {"math": cfg.math, "code": cfg.code, "mcq": cfg.mcq}
    return GRADERS[domain] if enabled.get(domain) else None


def verify_row(domain: str, reference: str | None, answer: str | None, cfg: VerifyConfig) -> Verdict | None:
    """Grade one answer in this process (no timeout: use verify_batch for that). None: no grader."""
    grader = grader_for(domain, cfg)
    if grader is None:
        return None
    if reference is None or not str(reference).strip():
        return Verdict("bad_reference", grader, None)
    answer = answer or ""
    if domain == "math":
        from distill.graders.math import MathOptions, verify_math

        verdict, pred = verify_math(
            reference,
            answer,
            phrase_fallback=cfg.math_answer_phrase,
            extract_unboxed=cfg.math_extract_unboxed,
            opts=MathOptions(ordered_lists=cfg.math_ordered_lists),
        )
    elif domain == "code":
        from distill.graders.code import verify_code

        verdict, pred = verify_code(
            reference, answer, cfg.code_timeout_s, cfg.code_memory_mb, clock=cfg.code_clock
        )
    else:
        from distill.graders.mcq import verify_mcq

        verdict, pred = verify_mcq(reference, answer)
    return Verdict(verdict, grader, pred)


def item_deadline(domain: str, cfg: VerifyConfig, reference: str | None = None) -> float:
    """Seconds one item may take in a worker before it is killed (stdin/stdout tests: their cases' budget)."""
    if domain != "code":
        return cfg.timeout_s
    if reference and ('"stdio"' in reference or '"functional"' in reference):  # skip the JSON parse otherwise
        from distill.graders.code import parse_tests
        from distill.graders.stdio import check_tests, wall_budget

        tests = parse_tests(reference)
        if tests is not None and tests["format"] in ("stdio", "functional") and check_tests(tests) is None:
            return wall_budget(tests) + CODE_STARTUP_S
    return cfg.code_timeout_s + CODE_STARTUP_S


def _worker_main() -> None:
    """Entry of a worker process: `python -c ... FD CONFIG_JSON`, talking over the socket FD."""
    import resource
    import traceback

    from distill.graders.sandbox import SandboxUnavailable

    conn = Connection(int(sys.argv[1]))
    cfg = VerifyConfig.model_validate_json(sys.argv[2])
    # sympy can try to build 9^(9^(9^9)): the deadline stops the CPU, this stops the memory first
    limit_mb = max(WORKER_MEMORY_MB, cfg.code_memory_mb + 1024)  # the sandbox's own limit must fit below
    resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20,) * 2)
    if cfg.math:  # import sympy and warm math-verify up before the first deadline starts (~1-2 s)
        verify_row("math", "1", "\\boxed{1}", cfg)
    conn.send("ready")
    while True:
        chunk = conn.recv()
        if chunk is None:
            return
        for index, (domain, reference, answer) in chunk:  # one reply per item, as soon as it is graded
            try:
                conn.send((index, verify_row(domain, reference, answer, cfg), None))
            except SandboxUnavailable as err:  # a broken setup, not a wrong answer: stop the stage
                conn.send((index, None, f"{type(err).__name__}: {err}"))
            except Exception:  # sympy's RecursionError, MemoryError on a monster answer: the grader gave up
                traceback.print_exc()
                conn.send((index, None, None))  # recorded as timeout, like a hung or dead worker


class VerifierPool:
    """Worker processes that grade items with a per-item deadline; `with VerifierPool(cfg) as pool:`.

    Workers are fresh interpreters (subprocess, not multiprocessing): the caller may hold threads (vLLM,
    torch) that must not be forked, and a script calling this needs no `if __name__ == "__main__"` guard."""

    def __init__(self, cfg: VerifyConfig, workers: int | None = None):
        self.cfg = cfg
        self.size = max(1, workers or cfg.workers)
        self.procs: list[tuple[subprocess.Popen, Connection] | None] = [None] * self.size

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair()
        code = "from distill.graders import _worker_main; _worker_main()"
        root = str(Path(__file__).resolve().parents[2])  # the folder holding the distill package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(theirs.fileno()), self.cfg.model_dump_json()],
            pass_fds=(theirs.fileno(),),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.procs[slot] = (proc, Connection(ours.detach()))

    def _await_ready(self, slot: int) -> None:
        proc, conn = self.procs[slot]
        try:
            ready = conn.poll(WORKER_START_S) and conn.recv() == "ready"
        except EOFError:
            ready = False
        if not ready:
            self._kill(slot)
            raise DistillError(f"a verification worker did not start within {WORKER_START_S:.0f} s")

    def _start(self, slots: list[int]) -> None:
        """Start workers in parallel (each imports sympy for ~1-2 s), then wait until all are ready."""
        for slot in slots:
            self._spawn(slot)
        for slot in slots:
            self._await_ready(slot)

    def _kill(self, slot: int) -> None:
        proc, conn = self.procs[slot]
        proc.kill()
        proc.wait()
        conn.close()
        self.procs[slot] = None

    def close(self) -> None:
        for slot, entry in enumerate(self.procs):
            if entry is None:
                continue
            proc, conn = entry
            try:
                conn.send(None)
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
            conn.close()
            self.procs[slot] = None

    def map(self, items: list[Item], on_done: Callable[[int], None] | None = None) -> list[Verdict | None]:
        """Verdicts in item order; `on_done(n)` after each finished item (progress bars).

        Each worker gets a chunk of items and replies item by item; the deadline restarts at every reply, so
        it bounds each item, and after a kill the hung item is `timeout` and the rest of its chunk is requeued.
        """
        results: list[Verdict | None] = [None] * len(items)
        queue = deque(i for i, item in enumerate(items) if grader_for(item[0], self.cfg))
        busy: dict[int, tuple[deque[int], float]] = {}  # slot -> (items sent, not answered; deadline)
        while queue or busy:
            idle = [slot for slot in range(self.size) if slot not in busy][: len(queue)]
            self._start([slot for slot in idle if self.procs[slot] is None])
            for slot in idle:
                if not queue:
                    break
                size = max(1, min(CHUNK, len(queue) // self.size))  # small chunks at the end: balance
                chunk = deque(queue.popleft() for _ in range(size))
                self.procs[slot][1].send([(i, items[i]) for i in chunk])
                busy[slot] = (chunk, self._deadline(items, chunk))
            timeout = max(0.0, min(d for _, d in busy.values()) - time.monotonic())
            ready = wait([self.procs[s][1] for s in busy], timeout=timeout)
            for slot in list(busy):
                chunk, deadline = busy[slot]
                conn = self.procs[slot][1]
                if conn in ready:
                    done = self._receive(slot, items, chunk, results)
                    if self.procs[slot] is None:  # it died: the rest of its chunk goes to another worker
                        queue.extendleft(reversed(chunk))
                        chunk.clear()
                elif time.monotonic() >= deadline:
                    self._kill(slot)
                    hung = chunk.popleft()
                    results[hung] = Verdict("timeout", grader_for(items[hung][0], self.cfg), None)
                    queue.extendleft(reversed(chunk))
                    chunk.clear()
                    done = 1
                else:
                    continue
                if on_done and done:
                    on_done(done)
                if chunk:
                    busy[slot] = (chunk, self._deadline(items, chunk))
                else:
                    del busy[slot]
        return results

    def _deadline(self, items: list[Item], chunk: deque[int]) -> float:
        domain, reference, _ = items[chunk[0]]
        return time.monotonic() + item_deadline(domain, self.cfg, reference)

    def _receive(self, slot: int, items: list[Item], chunk: deque[int], results: list[Verdict | None]) -> int:
        """Take every reply waiting on this worker; a dead worker fails its current item. Returns items done."""
        conn, done = self.procs[slot][1], 0
        while chunk and conn.poll(0):
            try:
                index, verdict, error = conn.recv()
            except EOFError:  # the worker died on this item (crash, OOM kill): record it, requeue nothing
                self._kill(slot)
                index, verdict, error = chunk[0], None, None
            if error:
                raise DistillError(f"verification failed ({items[index][0]}): {error}")
            chunk.popleft()
            results[index] = verdict or Verdict("timeout", grader_for(items[index][0], self.cfg), None)
            done += 1
            if self.procs[slot] is None:
                break
        return done


def verify_batch(
    items: list[Item], cfg: VerifyConfig, on_done: Callable[[int], None] | None = None
) -> list[Verdict | None]:
    """Grade many answers in parallel worker processes with per-item timeouts (see the module doc)."""
    with VerifierPool(cfg) as pool:
        return pool.map(items, on_done)
