"""Many workers on one run dir (`distill generate --worker i/N`, `--finalize`): the static split, the last worker
writing the manifest, refusals (bad i/N, another recipe or N on a pinned run dir), and 3 real worker processes
against one `vllm serve`, one SIGKILLed mid-run and rerun: every row once, no shard written twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from distill.artifacts import read_shards
from distill.config import recipe_from_dict
from distill.errors import DistillError
from distill.generate.run import load_prompt_set
from distill.generate.workers import Worker, generate_worker, parse_worker

ROOT = Path(__file__).resolve().parents[1]
DISTILL = [sys.executable, "-m", "cli.main"]


class ChatServer:
    """A loopback OpenAI-compatible chat server: each reply names the question, so rows are checkable."""

    def __init__(self):
        self.posts, self.lock = 0, threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatServer:
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

            def _send(self, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"data": [{"id": "teacher"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with srv.lock:
                    srv.posts += 1
                text = f"seed {body['seed']}"
                message = {"role": "assistant", "content": text}
                usage = {"prompt_tokens": 5, "completion_tokens": 2}
                self._send({"choices": [{"message": message, "finish_reason": "stop"}], "usage": usage})

        return Handler


def _recipe(
    run_dir: Path, url: str, model: str = "teacher", temperature: float = 0.6, limit: int = 7
) -> dict:
    return {
        "name": "workers",
        "run_dir": str(run_dir),
        "teacher": {"backend": "openai", "model": model, "base_url": url, "thinking": False},
        "generate": {
            "prompts": [{"source": "gsm8k", "split": "test", "limit": limit}],
            "n": 2,
            "max_tokens": 16,
            "temperature": temperature,
            "force_think": False,
            "shard_size": 1,
        },
    }


def _expected(recipe) -> set[tuple[str, int]]:
    return {
        (p["prompt_id"], j) for p in load_prompt_set(recipe.generate)[0] for j in range(recipe.generate.n)
    }


def _keys(out: Path) -> list[tuple[str, int]]:
    return [(r["prompt_id"], r["sample_index"]) for r in read_shards(out)]


def test_worker_spec():
    assert parse_worker("2/3") == Worker(2, 3) and Worker(2, 3).owns(5) and not Worker(2, 3).owns(4)
    for bad, says in [("3/2", "0..N-1"), ("2/2", "0..N-1"), ("-1/2", "0..N-1"), ("a/2", "i/N"), ("1", "i/N")]:
        with pytest.raises(DistillError, match=says):
            parse_worker(bad)


def test_workers_split_the_shards_and_the_last_one_writes_the_manifest(tmp_path, capsys):
    with ChatServer() as server:
        recipe = recipe_from_dict(_recipe(tmp_path / "run", server.url))
        out = tmp_path / "run" / "generate"
        assert generate_worker(recipe, out, Worker(0, 3)) is None  # shards 0, 3, 6
        assert "4 of 7 shards still pending" in capsys.readouterr().out
        assert sorted(p.name for p in out.glob("part-*")) == [
            "part-00000.parquet",
            "part-00003.parquet",
            "part-00006.parquet",
        ]
        assert generate_worker(recipe, out, Worker(2, 3)) is None  # shards 2, 5
        with pytest.raises(
            DistillError, match=r"2 of 7 shards have not landed: part-00001.parquet \(worker 1/3\)"
        ):
            generate_worker(recipe, out, None)  # --finalize too early: names the missing shards and workers
        assert not (out / "manifest.json").exists()
        manifest = generate_worker(recipe, out, Worker(1, 3))  # the last worker finalizes
        assert manifest is not None and manifest.rows_out == 14 and (out / "manifest.json").exists()
        posts = server.posts
        assert (
            generate_worker(recipe, out, Worker(0, 3)).rows_out == 14
        )  # a rerun after the end: nothing to do
        assert generate_worker(recipe, out, None).rows_out == 14 and server.posts == posts == 14
    keys = _keys(out)
    assert len(keys) == 14 == len(set(keys)) and set(keys) == _expected(recipe)
    assert json.loads((out / "_plan.json").read_text())["workers"] == 3


def test_a_worker_with_another_recipe_or_count_is_refused(tmp_path):
    with ChatServer() as server:
        run = tmp_path / "run"
        assert (
            generate_worker(recipe_from_dict(_recipe(run, server.url)), run / "generate", Worker(0, 2))
            is None
        )
        other = recipe_from_dict(_recipe(run, server.url, temperature=1.0))
        with pytest.raises(DistillError, match=r"_plan.json: .*a different recipe .*stage_key"):
            generate_worker(other, run / "generate", Worker(1, 2))
        with pytest.raises(DistillError, match=r"_plan.json: .*a different worker count N \(workers 3\)"):
            generate_worker(recipe_from_dict(_recipe(run, server.url)), run / "generate", Worker(1, 3))
        with pytest.raises(DistillError, match=r"_plan.json: .*a different prompt set"):
            generate_worker(recipe_from_dict(_recipe(run, server.url, limit=5)), run / "generate", None)
        assert server.posts == 8  # worker 0/2's 4 shards x n=2; the refused ones sent nothing
    assert len(list((run / "generate").glob("part-*"))) == 4


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*DISTILL, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


def test_cli_refuses_bad_worker_specs_and_another_recipe_in_one_line(tmp_path):
    with ChatServer() as server:
        first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
        first.write_text(yaml.safe_dump(_recipe(tmp_path / "run", server.url, limit=2)))
        second.write_text(yaml.safe_dump(_recipe(tmp_path / "run", server.url, temperature=1.0, limit=2)))
        bad = _cli("generate", str(first), "--worker", "3/2")
        assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "0..N-1" in bad.stderr
        assert not (tmp_path / "run" / "generate").exists()  # nothing written
        assert _cli("generate", str(first), "--worker", "0/2").returncode == 0
        refused = _cli("generate", str(second), "--worker", "1/2")
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0
    assert (
        f"{tmp_path / 'run' / 'generate' / '_plan.json'}" in refused.stderr and "stage_key" in refused.stderr
    )


# ---------------------------------------------------------------- 3 worker processes, one vllm serve, one kill -9


def _snapshot(out: Path, names: list[str]) -> dict[str, tuple[int, int]]:
    """(inode, mtime ns) of each shard and marker: a rewrite (atomic rename) changes both."""
    files = [out / n for n in names] + [out / "_done" / f"{n}.ok" for n in names]
    return {str(f): (f.stat().st_ino, f.stat().st_mtime_ns) for f in files}


def test_three_worker_processes_one_killed_and_rerun(vllm_server, tmp_path):
    url = vllm_server
    spec = _recipe(tmp_path / "run", url, model="smollm2", limit=12)  # 12 shards: 4 per worker
    path, out = tmp_path / "recipe.yaml", tmp_path / "run" / "generate"
    path.write_text(yaml.safe_dump(spec))
    cmd = [*DISTILL, "generate", str(path), "--worker"]
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(3)]  # noqa: SIM115
    procs = [
        subprocess.Popen([*cmd, f"{i}/3"], cwd=ROOT, stdout=logs[i], stderr=subprocess.STDOUT)
        for i in range(3)
    ]
    first = out / "_done" / "part-00001.parquet.ok"  # worker 1 owns shards 1, 4, 7, 10
    while not first.exists():
        assert procs[1].poll() is None, (tmp_path / "worker1.log").read_text()[-3000:]
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)  # mid-run: its first shard landed, the next is in flight
    procs[1].wait()
    landed = sorted(p.name[:-3] for p in (out / "_done").glob("part-*.ok") if int(p.name[5:10]) % 3 == 1)
    assert 1 <= len(landed) < 4, landed
    kept = _snapshot(out, landed)
    for i in (0, 2):
        assert procs[i].wait(1500) == 0, (tmp_path / f"worker{i}.log").read_text()[-3000:]
        assert "still pending" in (tmp_path / f"worker{i}.log").read_text()
    others = [f"part-{s:05d}.parquet" for s in range(12) if s % 3 != 1]
    kept |= _snapshot(out, others)
    assert not (out / "manifest.json").exists()
    early = _cli("generate", str(path), "--finalize")
    assert early.returncode == 2 and "(worker 1/3)" in early.stderr and not (out / "manifest.json").exists()
    rerun = _cli("generate", str(path), "--worker", "1/3", timeout=1500)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"{4 - len(landed)} shards generated, {len(landed)} resumed" in rerun.stdout
    assert json.loads((out / "manifest.json").read_text())["rows_out"] == 24  # the last worker finalized
    assert _snapshot(out, landed + others) == kept  # no shard (or marker) written twice
    keys = _keys(out)
    recipe = recipe_from_dict(spec)
    assert len(keys) == 24 == len(set(keys)) and set(keys) == _expected(recipe)
    assert all(r["completion"] for r in read_shards(out))
    for f in logs:
        f.close()
