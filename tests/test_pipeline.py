"""The whole pipeline through the real CLI on the embedded SmolLM2: generate -> curate -> train -> patch -> eval ->
push (dry run), then a rerun that skips every stage because the manifests match."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import yaml

STAGES = ["generate", "curate", "train", "patch", "eval", "push"]

RECIPE = {
    "name": "e2e",
    "student": "smollm2-135m",
    "teacher": {
        "model": "smollm2-135m",
        "thinking": False,
        "enforce_eager": True,
        "dtype": "float32",
        "max_model_len": 1024,
    },
    # general domain: no grader, kept by policy, so the run never depends on a 135M model being right
    "generate": {
        "prompts": [{"source": "gsm8k", "split": "train", "limit": 6, "domain": "general"}],
        "n": 2,
        "max_tokens": 48,
        "force_think": False,
        "shard_size": 3,
    },
    "curate": {
        "decontaminate": {"benchmarks": ["gsm8k:test", "math500"]},
        "verify": {"code": False, "mcq": False, "workers": 1},
        "filters": {"drop_truncated": False, "max_tokens": 256},
        "select": {"policy": "all_correct", "keep_unverified_domains": True},
    },
    "train": {
        "max_length": 256,
        "max_steps": 2,
        "micro_batch_size": 1,
        "grad_accum": 1,
        "save_every": 1,
        "gradient_checkpointing": False,
        "dtype": "float32",
    },
    "eval": {
        "benchmarks": {"gsm8k": {"k": 2, "limit": 3}},
        "max_tokens": 32,
        "engine": {"enforce_eager": True, "dtype": "float32", "max_model_len": 1024},
    },
    "push": {"repo": "demo/e2e", "dry_run": True},
}


def distill(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=1200
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_full_pipeline_then_every_stage_skips(tmp_path, smollm2_path, cards_dir):
    run = tmp_path / "run"
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "run_dir": str(run)}))
    distill("run", str(path), "--until", "push", cwd=tmp_path)
    for stage in STAGES[:-1]:
        assert (run / stage / "manifest.json").exists(), stage
    assert not (run / "push" / "manifest.json").exists()  # a dry run uploads nothing, so it never looks done
    manifests = {s: json.loads((run / s / "manifest.json").read_text()) for s in STAGES[:-1]}
    assert manifests["generate"]["rows_out"] == 12  # 6 prompts x 2 samples
    assert set(manifests["curate"]["inputs"]) == {
        "generate",
        "benchmarks",
    }  # benchmark versions are inputs too
    assert (cards_dir / "e2e.md").exists()  # the repository copy of the card (a temp folder in tests)
    assert (run / "train" / "final" / "model.safetensors").exists()
    assert (run / "patch" / "release" / "tokenizer_config.json").exists()
    assert json.loads((run / "eval" / "results.json").read_text())["benchmarks"]["gsm8k"]["n"] == 3
    samples = pq.read_table(run / "eval" / "samples.parquet").to_pylist()
    assert not any(
        "Ġ" in s["completion"] or "Ċ" in s["completion"] for s in samples
    )  # vLLM decodes the release
    card = (run / "push" / "model_card.md").read_text()
    assert "base_model" in card and "GSM8K" in card
    # one results table: eval's table.md header in the card; hyper-parameters as train's manifest recorded them
    assert (run / "eval" / "table.md").read_text().splitlines()[0] in card
    train_cfg = manifests["train"]["config"]
    assert train_cfg["max_steps"] == 2 and "| max steps | 2 |" in card
    assert f"| learning rate | {train_cfg['lr']} |" in card
    listed = distill("push", str(run), "--repo", "me/other", "--dry-run", cwd=tmp_path).stdout  # by run dir
    assert "me/other" in listed and "model.safetensors" in listed
    # rerun: nothing is recomputed, every manifest is byte-identical except push (always runs)
    before = {s: (run / s / "manifest.json").read_bytes() for s in STAGES[:-1]}
    distill("run", str(path), "--until", "eval", cwd=tmp_path)
    assert before == {s: (run / s / "manifest.json").read_bytes() for s in STAGES[:-1]}
    shown = distill("show", str(run), cwd=tmp_path).stdout
    assert all(stage in shown for stage in STAGES) and "done" in shown and "dry run" in shown
