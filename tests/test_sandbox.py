"""The code sandbox against hostile programs: each is contained, judged fail or timeout, and the host is unaffected."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from distill.graders import sandbox
from distill.graders.sandbox import SandboxUnavailable, run_python

# skipped only where the kernel probe finds no namespaces; a failure under DISTILL_REQUIRE=sandbox (tests/conftest.py)
pytestmark = pytest.mark.sandbox


def sandbox_uids() -> list[str]:
    """Processes still running under a sandbox uid (root mode uses uids 200000-259999)."""
    out = subprocess.run(["ps", "-eo", "uid="], capture_output=True, text=True, check=True).stdout
    return [u for u in out.split() if 200_000 <= int(u) < 260_000]


def test_ok_and_failure():
    assert run_python("print(6 * 7)").stdout == "42\n"
    result = run_python("assert 1 == 2")
    assert result.status == "error" and "AssertionError" in result.stderr


def test_fork_bomb_is_bounded_and_reaped():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_python(bomb, timeout_s=2, nproc=16)
    assert result.status == "timeout"
    assert sandbox_uids() == []  # the pid namespace died with its init: nothing survives
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


@pytest.fixture
def canary():
    """A world-writable folder outside the sandbox, with a file: only the read-only host mount protects it."""
    path = Path("/var/tmp") / f"distill-canary-{uuid.uuid4().hex}"
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)
    (path / "keep.txt").write_text("still here")
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=True)


def test_rm_rf_and_writes_outside_are_contained(canary, tmp_path):
    repo_file = Path(__file__).resolve()
    program = f"""
import os, shutil, subprocess
shutil.rmtree({str(canary)!r}, ignore_errors=True)
subprocess.run(["rm", "-rf", {str(canary)!r}])
for path in [{str(canary / "new.txt")!r}, {str(repo_file.parent / "pwned.txt")!r}, "/var/tmp/pwned.txt"]:
    try:
        open(path, "w").write("x")
    except OSError:
        pass
assert os.path.exists({str(canary / "keep.txt")!r}) is False, "the canary survived"
"""
    result = run_python(program)
    assert result.status == "error"  # the final assert fails: nothing could be deleted
    assert (canary / "keep.txt").read_text() == "still here"
    assert not (canary / "new.txt").exists()
    assert not (repo_file.parent / "pwned.txt").exists()
    assert not Path("/var/tmp/pwned.txt").exists()


def test_the_host_tmp_is_invisible_and_sandbox_files_vanish(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host data")
    program = f"print(open({str(secret)!r}).read())"
    assert run_python(program).status == "error"
    leftover = "open('/tmp/work/left.txt', 'w').write('x'); print(__import__('os').getcwd())"
    assert run_python(leftover).stdout.strip() == "/tmp/work"
    assert not Path("/tmp/work/left.txt").exists()


def test_no_network():
    with socket.socket() as server:  # a real listener on the host's loopback
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        program = (
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')"
        )
        result = run_python(program)
    assert result.status == "error" and "connected" not in result.stdout
    assert "Network is unreachable" in result.stderr or "Connection refused" in result.stderr


def test_memory_hog_fails():
    result = run_python("x = bytearray(8 << 30)\nprint('allocated')", memory_mb=512)
    assert result.status == "error" and "MemoryError" in result.stderr


@pytest.mark.parametrize("program", ["while True:\n    pass", "import time\ntime.sleep(60)"])
def test_infinite_loop_and_sleep_time_out(program):
    result = run_python(program, timeout_s=1.5)
    assert result.status == "timeout" and result.seconds < 6


def test_env_secrets_are_scrubbed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value_123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-456")
    program = (
        "import os, glob\n"
        "seen = ' '.join(os.environ.values())\n"
        "for p in glob.glob('/proc/*/environ'):\n"
        "    try:\n        seen += open(p, 'rb').read().decode(errors='replace')\n"
        "    except OSError:\n        pass\n"
        "assert 'secret' not in seen, seen\n"
        "print(sorted(os.environ))\n"
    )
    result = run_python(program)
    assert result.status == "ok", result.stderr
    assert "HF_TOKEN" not in result.stdout and "secret" not in result.stdout


def test_output_is_bounded():
    result = run_python("while True:\n    print('x' * 1000)", timeout_s=5)
    assert result.status == "error" and "File too large" in result.stderr
    assert len(result.stdout) <= 65536


def test_a_caller_may_keep_all_of_stdout():
    """The stdin/stdout grader reads every case's output back: 1 MB comes back whole when asked for."""
    result = run_python("print('x' * 1_000_000, end='')", stdout_bytes=2_000_000)
    assert result.status == "ok" and len(result.stdout) == 1_000_000


# ---------------------------------------------------------------- a broken sandbox is an error, never a skip or a verdict


def test_a_launcher_that_cannot_start_names_the_cause(monkeypatch):
    """Before this, a dead launcher wrote no status and every program was graded "timeout"."""
    monkeypatch.setattr(sandbox, "python_for_sandbox", lambda: ("/nonexistent/python3", "/usr"))
    with pytest.raises(SandboxUnavailable) as err:
        run_python("print(1)")
    assert str(err.value) == (
        "sandbox launcher exited 127 before the program ran: "
        "unshare: failed to execute /nonexistent/python3: No such file or directory"
    )


def test_a_mount_failure_in_the_launcher_names_the_mount():
    with pytest.raises(SandboxUnavailable) as err:
        run_python("print(1)", tmp_mb=-1)  # tmpfs refuses size=-1m
    assert str(err.value) == "sandbox-setup-failed: [Errno 22] mount tmpfs on /tmp: Invalid argument"


@pytest.fixture
def fresh_probe():
    sandbox.namespaces_missing.cache_clear()
    yield
    sandbox.namespaces_missing.cache_clear()


def test_the_probe_asks_the_kernel_not_the_launcher(monkeypatch, fresh_probe):
    monkeypatch.setattr(sandbox, "python_for_sandbox", lambda: ("/nonexistent/python3", "/usr"))
    assert sandbox.namespaces_missing() is None  # a broken launcher is not "no namespaces here"


@pytest.mark.parametrize(
    "unshare, reason",
    [
        (None, "`unshare` (util-linux) not found"),
        (
            "echo 'unshare: unshare failed: Operation not permitted' >&2; exit 1",
            "namespaces refused: unshare: unshare failed: Operation not permitted",
        ),
    ],
)
def test_the_probe_reports_missing_namespaces(monkeypatch, tmp_path, fresh_probe, unshare, reason):
    fake = None
    if unshare is not None:  # an unshare that behaves like one on a kernel that forbids namespaces
        fake = tmp_path / "unshare"
        fake.write_text(f"#!/bin/sh\n{unshare}\n")
        fake.chmod(0o755)
    monkeypatch.setattr(shutil, "which", lambda name: None if fake is None else str(fake))
    assert sandbox.namespaces_missing() == reason
    assert sandbox.sandbox_available() is False


INNER = """
import pytest

@pytest.mark.sandbox
def test_needs_namespaces():
    pass

@pytest.mark.gpu
def test_needs_cuda():
    pass

def test_unrelated_skip():
    pytest.skip("not about the sandbox")
"""


@pytest.mark.parametrize(
    "require, summary, lines",
    [
        ("", "3 skipped", ["`unshare` (util-linux) not found", "no CUDA device"]),
        (
            "sandbox,flash_attn",  # as `.ci/run` and `make gpu-check` set it, on a machine that has neither
            "1 skipped, 2 errors",
            [
                "\nDISTILL_REQUIRE=sandbox: `unshare` (util-linux) not found\n",
                "\nDISTILL_REQUIRE=flash_attn but the test skipped: no CUDA device\n",
            ],
        ),
    ],
)
def test_required_means_fail_not_skip(tmp_path, require, summary, lines):
    """The suite's own conftest in a child pytest that finds no `unshare` on PATH and no visible CUDA device."""
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "PATH": "/nonexistent", "CUDA_VISIBLE_DEVICES": "", "DISTILL_REQUIRE": require}
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rA",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore",
        str(tmp_path),
    ]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300).stdout
    assert out.strip().splitlines()[-1].startswith(summary), out
    assert "not about the sandbox" in out  # a skip unrelated to a requirement stays a skip
    for line in lines:
        assert line in out, out
