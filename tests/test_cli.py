"""The `distill` command line as a user runs it: instant help, registries, bad input -> exit 2, one line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DISTILL = [sys.executable, "-m", "cli.main"]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*DISTILL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_help_is_instant_and_imports_no_heavy_library():
    start = time.perf_counter()
    proc = run("--help")
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0
    for cmd in [
        "generate",
        "curate",
        "train",
        "patch",
        "eval",
        "push",
        "run",
        "students",
        "models",
        "data",
        "show",
        "config",
    ]:
        assert cmd in proc.stdout
    assert elapsed < 2.0, f"distill --help took {elapsed:.2f}s"
    probe = "import sys, distill, cli.main; print(sorted({'torch','vllm','transformers','flash_attn'} & set(sys.modules)))"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        == "[]"
    )


def test_students_lists_the_release_and_demo_students():
    out = run("students").stdout
    for name in ["qwen-1.5b", "qwen-7b", "llama-8b", "qwen-14b", "qwen-32b", "llama-70b", "smollm2-135m"]:
        assert name in out


def test_config_prints_resolved_recipe_with_overrides():
    proc = run("config", "pipelines/r1-distill-qwen-7b.yaml", "--set", "train.lr=2e-5")
    assert proc.returncode == 0, proc.stderr
    assert "lr: 2.0e-05" in proc.stdout and "temperature: 0.6" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["config", "pipelines/demo-cpu.yaml", "--set", "train.nope=1"], "unknown key 'train.nope'"),
        (["config", "missing.yaml"], "recipe not found: missing.yaml"),
        (["config", "pipelines/demo-cpu.yaml", "--set", "student=qwen-9b"], "unknown student 'qwen-9b'"),
        (["data", "show", "nope"], "unknown data set 'nope'"),
        (["train", "--student", "gpt-9"], "unknown student 'gpt-9'"),
        (["show", "no/such/run"], "run dir not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    proc = run(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
    assert not (ROOT / "runs" / "no").exists()


def test_data_show_reads_the_local_registry(data_dir):
    proc = run("data", "show", "aime24", "--n", "1")
    assert proc.returncode == 0 and '"prompt_id": "aime24/60"' in proc.stdout
