"""Run untrusted Python in a throwaway sandbox: namespaces (no network, own pids), a read-only host, rlimits.

How a program runs (`run_python`):

    parent ──(scrubbed env, new session)──> unshare --mount --net --pid --fork --kill-child
        └── this file as the launcher, pid 1 of the new pid namespace, still root inside it:
              mounts a private tmpfs on /tmp (the only writable place, sized), hides /root and $HOME
              behind empty tmpfs, remounts / read-only, mounts a fresh /proc (only sandbox pids)
            └── fork: rlimits (CPU s, address space, processes, file size), a fresh uid with no
                groups (root) or no capabilities (non-root, user namespace), no_new_privs, cwd
                /tmp/work, env {PATH, HOME, TMPDIR, LANG}, stdin /dev/null, exec python -I main.py

The launcher reaps orphans and reports the program's exit status on a pipe. When it exits, the kernel
kills everything left in the pid namespace; on the wall timeout the parent SIGKILLs the process
group, `--kill-child` kills the launcher, and the namespace goes with it. The new network namespace
has only a downed loopback, so every connect fails. Root ignores RLIMIT_NPROC, so the program runs
under a random unused uid where the process limit holds (a fork bomb stops at `nproc`).

This module imports only the standard library: it is also the launcher script (`python -I -S`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import cache

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
OUTPUT_TAIL = 65536  # bytes of stdout/stderr kept in the result, unless the caller asks for more stdout
SETUP_FAILED = "sandbox-setup-failed"


@dataclass
class SandboxResult:
    status: str  # "ok" (exit 0) | "error" (non-zero exit, signal) | "timeout" (wall or CPU limit)
    returncode: int | None  # exit code, or -signal; None when the wall timeout killed it
    stdout: str
    stderr: str
    seconds: float


class SandboxUnavailable(RuntimeError):
    """The machine cannot build the sandbox (no unshare, namespaces forbidden): never run code unsandboxed."""


def python_for_sandbox() -> tuple[str, str]:
    """(interpreter, prefix to expose): the base interpreter, not the venv, so it runs without site-packages."""
    prefix = os.path.realpath(sys.base_prefix)
    exe = os.path.join(prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    return (exe if os.path.exists(exe) else os.path.realpath(sys.executable)), prefix


def run_python(
    code: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    nproc: int = 32,
    file_mb: int = 16,
    tmp_mb: int = 64,
    stdout_bytes: int = OUTPUT_TAIL,
) -> SandboxResult:
    """Run `code` as a Python program in the sandbox; wall timeout `timeout_s`, CPU limit the same. The result
    keeps the last `stdout_bytes` of stdout (a grader that reads every output asks for all it allows)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable("`unshare` (util-linux) not found: code verification needs it")
    python, prefix = python_for_sandbox()
    root = os.geteuid() == 0
    spec = {
        "python": python,
        "expose": prefix,
        "uid": random.randrange(200_000, 260_000) if root else None,
        "wall_s": timeout_s,
        "cpu_s": max(1, int(timeout_s + 0.999)),
        "memory_mb": memory_mb,
        "nproc": nproc,
        "file_mb": file_mb,
        "tmp_mb": tmp_mb,
        "hide": sorted({"/root", os.path.expanduser("~")}),
    }
    flags = unshare_flags(root)
    status_r, status_w = os.pipe()  # the launcher writes the program's exit status here
    spec["status_fd"] = status_w
    cmd = [unshare, *flags, python, "-I", "-S", os.path.abspath(__file__), json.dumps(spec)]
    with tempfile.TemporaryDirectory(prefix="distill-sbx-") as tmp:
        return _supervise(cmd, code, timeout_s, tmp, (status_r, status_w), stdout_bytes)


def _supervise(
    cmd: list[str], code: str, timeout_s: float, tmp: str, pipe: tuple[int, int], stdout_bytes: int
) -> SandboxResult:
    status_r, status_w = pipe  # the launcher reports the exit status on it
    out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            pass_fds=(status_w,),
            cwd=tmp,
            env={"PATH": SAFE_PATH},
            start_new_session=True,  # no secrets; its own process group to kill
        )
    os.close(status_w)
    timed_out = False
    try:
        # the launcher enforces timeout_s itself; this backstop covers a launcher that hangs
        proc.communicate(code.encode(), timeout=timeout_s + 5.0)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with os.fdopen(status_r, "rb") as f:
        status = f.read().decode()
    seconds = time.monotonic() - start
    stdout, stderr = _tail(out_path, stdout_bytes), _tail(err_path, OUTPUT_TAIL)
    if SETUP_FAILED in stderr:
        raise SandboxUnavailable(stderr.strip().splitlines()[-1])
    if status == "" and not timed_out:  # the launcher died before reporting: never call that a timeout
        cause = (stderr.strip().splitlines() or ["no message"])[-1]
        raise SandboxUnavailable(f"sandbox launcher exited {proc.returncode} before the program ran: {cause}")
    return _result(status, timed_out, stdout, stderr, seconds)


def _result(status: str, timed_out: bool, stdout: str, stderr: str, seconds: float) -> SandboxResult:
    if timed_out or status in ("", "timeout"):
        return SandboxResult("timeout", None, stdout, stderr, seconds)
    code = int(status)
    # SIGXCPU is the soft CPU limit, SIGKILL the hard one: both mean the program ran out of time
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return SandboxResult("timeout", code, stdout, stderr, seconds)
    return SandboxResult("ok" if code == 0 else "error", code, stdout, stderr, seconds)


def _tail(path: str, size: int) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - size))
        return f.read().decode(errors="replace")


def unshare_flags(root: bool) -> list[str]:
    """The namespaces `run_python` asks for; without root an unprivileged user namespace provides the rest."""
    flags = ["--mount", "--net", "--pid", "--fork", "--kill-child"]
    return flags if root else ["--user", "--map-root-user", *flags]


@cache
def namespaces_missing() -> str | None:
    """Why this machine cannot build the sandbox (no `unshare`, namespaces refused), or None when it can.

    A direct probe of the kernel: `unshare` with the sandbox's namespace flags runs `true`. It never runs the
    launcher, so a broken launcher still fails its tests instead of looking like a machine without namespaces.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return "`unshare` (util-linux) not found"
    probe = subprocess.run(
        [unshare, *unshare_flags(os.geteuid() == 0), "true"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"namespaces refused: {(probe.stderr.strip().splitlines() or ['exit ' + str(probe.returncode)])[-1]}"
    return None


def sandbox_available() -> bool:
    """True when the kernel gives the sandbox its namespaces here (the probe above, once per process)."""
    return namespaces_missing() is None


# ---------------------------------------------------------------- launcher (runs inside the namespaces)


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _enc(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if _libc().mount(_enc(src), _enc(target), _enc(fstype), flags, _enc(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {fstype or src} on {target}: {os.strerror(errno)}")


def _bind_readonly(src: str, target: str) -> None:
    _mount(src, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def _setup_mounts(spec: dict) -> None:
    """Everything outside the sandbox's /tmp becomes read-only or invisible, in this namespace only."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    stage = "/tmp/.python"
    _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['tmp_mb']}m,mode=1777")
    os.mkdir(stage)
    _bind_readonly(spec["expose"], stage)  # the interpreter, staged before its home is hidden
    for home in spec["hide"]:
        if os.path.isdir(home) and home != "/":
            _mount("tmpfs", home, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    if any(spec["expose"].startswith(h.rstrip("/") + "/") for h in spec["hide"]):
        os.makedirs(spec["expose"], exist_ok=True)
        _bind_readonly(stage, spec["expose"])
    if os.path.ismount("/dev/shm"):
        _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    keep = os.statvfs("/").f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)  # locked flags must be kept
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir("/tmp/work", 0o700)
    if spec["uid"] is not None:
        os.chown("/tmp/work", spec["uid"], spec["uid"])


def _drop_capabilities() -> None:
    """Non-root mode: the program is uid 0 of its user namespace; take away every capability it has there."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words, all zero
    if _libc().capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _exec_program(spec: dict) -> None:
    """In the forked child: limits, identity, then exec. Never returns."""
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    mb = 1 << 20
    for limit, value in [
        (resource.RLIMIT_CPU, (spec["cpu_s"], spec["cpu_s"] + 1)),  # seconds: SIGXCPU, then SIGKILL
        (resource.RLIMIT_AS, (spec["memory_mb"] * mb,) * 2),
        (resource.RLIMIT_NPROC, (spec["nproc"],) * 2),
        (resource.RLIMIT_FSIZE, (spec["file_mb"] * mb,) * 2),
        (resource.RLIMIT_NOFILE, (256, 256)),
        (resource.RLIMIT_CORE, (0, 0)),
    ]:
        resource.setrlimit(limit, value)
    if spec["uid"] is not None:
        os.setgroups([])
        os.setgid(spec["uid"])
        os.setuid(spec["uid"])
    else:
        _drop_capabilities()
    _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.chdir("/tmp/work")
    env = {"PATH": SAFE_PATH, "HOME": "/tmp/work", "TMPDIR": "/tmp/work", "LANG": "C.UTF-8"}
    os.execve(spec["python"], [spec["python"], "-I", "main.py"], env)


def _launch(spec: dict) -> int:
    code = sys.stdin.buffer.read()
    try:
        _setup_mounts(spec)
        with open("/tmp/work/main.py", "wb") as f:
            f.write(code)
        if spec["uid"] is not None:
            os.chown("/tmp/work/main.py", spec["uid"], spec["uid"])
    except OSError as err:
        print(f"{SETUP_FAILED}: {err}", file=sys.stderr)
        return 1
    pid = os.fork()
    if pid == 0:
        try:
            os.close(spec["status_fd"])
            _exec_program(spec)
        finally:
            os._exit(127)
    expired = []

    def on_alarm(signum, frame):  # the wall clock ran out: kill the program, report a timeout
        expired.append(True)
        os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, spec["wall_s"])
    while True:  # pid 1 of the namespace: reap orphans until the program itself exits
        done, status = os.waitpid(-1, 0)
        if done == pid:
            code = "timeout" if expired else str(os.waitstatus_to_exitcode(status))
            os.write(spec["status_fd"], code.encode())
            return 0


if __name__ == "__main__":
    sys.exit(_launch(json.loads(sys.argv[1])))
