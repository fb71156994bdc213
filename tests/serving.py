"""Real `vllm serve` processes for the tests: start SmolLM2 on a free loopback port, wait until it answers, kill it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

# Two engines starting at once on a shared, loaded 2-core machine: measured 400+ s at load 17-19 (30 s idle).
START_DEADLINE_S = 1500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`vllm serve` SmolLM2 (eager fp32, 1 GiB KV cache) in its own process group; returns it and its /v1 URL."""
    port = free_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in sorted(os.sched_getaffinity(0))),
    }
    # The server module, not the `vllm` script: vllm-cpu 0.32's script dies looking up the version of a package
    # named "vllm" (it is "vllm-cpu"). No chunked prefill, as VLLMBackend on CPU: a seeded request prefilled in
    # chunks kills vllm-cpu 0.32.
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--served-model-name", "smollm2"]
    cmd += ["--dtype", "float32", "--enforce-eager", "--max-model-len", "1024", "--no-enable-chunked-prefill"]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/v1"


def wait_up(proc: subprocess.Popen, url: str, log: Path, deadline: float) -> None:
    """Poll /models until the server answers; fail with its log's tail if it exits or misses the deadline."""
    while True:
        if proc.poll() is not None:
            pytest.fail(f"vllm serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.time() < deadline, (
            f"vllm serve not up in {START_DEADLINE_S} s:\n{log.read_text()[-3000:]}"
        )
        time.sleep(1)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the server's whole process group (API server and engine core) and reap it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
