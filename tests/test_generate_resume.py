"""kill -9 in the middle of `distill generate` on the real vLLM CPU engine, then rerun: exactly the full set of
(prompt, sample) rows, none twice, and the shards finished before the kill are neither rewritten nor recomputed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from distill.artifacts import read_manifest, read_shards, sha256_file
from distill.config import load_recipe
from distill.generate.run import load_prompt_set

ROOT = Path(__file__).resolve().parent.parent
SHARDS = 8


def _wait_for_first_marker(proc: subprocess.Popen, done: Path, log: Path, timeout_s: float = 300) -> None:
    deadline = time.time() + timeout_s
    while not list(done.glob("*.ok")):
        assert proc.poll() is None, (
            f"generate exited {proc.returncode} before a shard finished:\n{log.read_text()[-3000:]}"
        )
        assert time.time() < deadline, f"no shard after {timeout_s} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def _kill_group(pgid: int) -> None:
    """SIGKILL the CLI and its engine processes (one session), and wait until they are gone."""
    os.killpg(pgid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)


def test_kill_9_mid_run_then_resume_gives_exactly_the_full_set(tmp_path, smollm2_path):
    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(
        json.dumps(
            {
                "name": "resume",
                "run_dir": str(tmp_path / "run"),
                "teacher": {
                    "model": str(smollm2_path),
                    "thinking": False,
                    "dtype": "float32",
                    "enforce_eager": True,
                    "max_model_len": 512,
                },
                "generate": {
                    "prompts": [{"source": "gsm8k", "split": "test", "limit": 2 * SHARDS}],
                    "n": 2,
                    "max_tokens": 24,
                    "force_think": False,
                    "shard_size": 2,
                },
            }
        )
    )
    out = tmp_path / "run" / "generate"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    cmd = [sys.executable, "-m", "cli.main", "generate", str(recipe_path)]
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_first_marker(proc, out / "_done", log)
    finally:
        _kill_group(proc.pid)
        proc.wait()

    finished = {p.name[: -len(".ok")] for p in (out / "_done").glob("*.ok")}
    before = {name: (sha256_file(out / name), (out / name).stat().st_mtime_ns) for name in finished}
    assert not (out / "manifest.json").exists()
    assert 1 <= len(finished) < SHARDS, f"the kill did not land mid-run ({len(finished)} shards done)"

    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-3000:]

    rows = list(read_shards(out))
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    prompts = load_prompt_set(load_recipe(recipe_path).generate)[0]
    assert len(keys) == len(set(keys)) == 2 * len(prompts) == 4 * SHARDS  # none twice
    assert set(keys) == {(p["prompt_id"], j) for p in prompts for j in range(2)}  # none missing
    after = {name: (sha256_file(out / name), (out / name).stat().st_mtime_ns) for name in finished}
    assert after == before  # finished shards were not regenerated or rewritten
    manifest = read_manifest(out)
    assert manifest.metrics["run_shards_resumed"] == len(finished)
    assert manifest.metrics["run_shards_generated"] == SHARDS - len(finished)
    assert not list(out.glob(".*.tmp")) and not list((out / "_done").glob(".*.tmp"))
