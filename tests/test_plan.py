"""`distill plan`: the estimate against numbers worked out by hand, measured assumptions, bad --set values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.errors import DistillError
from distill.plan import plan, split_sets

ROOT = Path(__file__).resolve().parent.parent


def test_qwen_7b_release_recipe_by_hand():
    recipe = load_recipe(ROOT / "pipelines/r1-distill-qwen-7b.yaml")
    sets = ["prompts=800000", "completion_tokens=5000", "prompt_tokens=200", "gen_tokens_per_s=2000"]
    sets += ["eval_completion_tokens=10000", "eval_tokens_per_s_per_gpu=2000"]
    a, source, t = plan(recipe, sets)
    assert (a.gpus_per_instance, source["gpus_per_instance"]) == (16, "recipe: teacher tp x pp")  # TP8 x PP2
    assert t["samples"] == 3_200_000  # 800k prompts x n=4
    assert t["teacher_tokens"] == 1.6e10  # x 5000 tokens
    assert t["generate_instance_hours"] == pytest.approx(2222.222, rel=1e-6)  # 1.6e10 / 2000 tok/s / 3600
    assert t["generate_gpu_hours"] == pytest.approx(35555.556, rel=1e-6)  # x 16 GPUs
    assert t["sft_samples"] == 4_800_000  # 3.2M x keep 0.5 x 3 epochs (qwen-7b default)
    assert t["sft_tokens"] == 2.496e10  # x (200 + 5000) tokens
    # N = 7,615,616,512 - untied embedding 152064 x 3584 = 7,070,619,136 matmul parameters;
    # 6 N T = 1.0588959e21; attention 6 x 28 layers x 3584 x 4.8e6 x 5200^2 = 7.8149321e19
    assert t["sft_flops"] == pytest.approx(1.0588959e21 + 7.8149321e19, rel=1e-6)
    assert t["sft_gpu_hours"] == pytest.approx(798.397, rel=1e-5)  # 1.1370452e21 / (0.4 x 989e12) / 3600
    # aime24 30 x 64 + math500 500 x 4 + gpqa 198 x 8 + humaneval 164 x 4 = 6160 samples x 10k tokens
    assert t["eval_samples"] == 6160 and t["eval_tokens"] == 6.16e7
    assert t["eval_gpu_hours"] == pytest.approx(8.5556, rel=1e-4)  # 6.16e7 / 2000 / 3600
    assert t["disk_shards_gb"] == pytest.approx(66.56)  # 2 copies x 3.2M x 5200 tokens x 2 bytes
    assert t["disk_checkpoints_gb"] == pytest.approx(228.468, rel=1e-5)  # 7.6156e9 x (2 x 14 + 2) bytes
    total = 35555.556 + 798.397 + 8.5556
    assert t["total_gpu_hours"] == pytest.approx(total, rel=1e-5)
    assert t["total_usd"] == pytest.approx(total * 2.5, rel=1e-5)


def test_demo_recipe_counts_its_prompts_and_caps_lengths_by_hand(tmp_path):
    sizes = [  # pinned here, so the arithmetic below does not follow the demo recipe's tuning
        "generate.prompts=[{source: arith, split: train, limit: 96}]",
        "generate.max_tokens=160",
        "train.max_steps=12",
        "eval.benchmarks={'arith:test': {k: 4, limit: 24}, gsm8k: {k: 2, limit: 8}}",
    ]
    # an empty run dir: a checkout's runs/demo-cpu (after `make demo`) would lend its measured lengths
    sets = [*sizes, "generate.n=2", "eval.max_tokens=100", f"run_dir={tmp_path / 'run'}"]
    recipe = load_recipe(ROOT / "pipelines/demo-cpu.yaml", sets)
    a, source, t = plan(recipe, ["gpu=A100", "mfu=0.5"])
    assert (a.prompts, source["prompts"]) == (96, "recipe: generate.prompts")  # arith limit 96
    assert (a.completion_tokens, a.prompt_tokens) == (160, 150)  # 8000 capped at generate.max_tokens
    assert a.eval_completion_tokens == 100  # capped at eval.max_tokens
    assert t["teacher_tokens"] == 96 * 2 * 160 == 30720
    assert t["generate_gpu_hours"] == pytest.approx(30720 / 3000 / 3600)  # 1 GPU per instance (tp=pp=1)
    assert t["sft_samples"] == 96  # max_steps 12 x global batch 8 (smollm2 default)
    assert t["sft_tokens"] == 96 * 310  # (150 + 160) < max_length 512
    # SmolLM2: tied embedding, N = 134,515,008; 6 N T = 2.40190e13; attention 6 x 30 x 576 x 96 x 310^2 = 9.56510e11
    assert t["sft_flops"] == pytest.approx(6 * 134_515_008 * 29760 + 9.56510e11, rel=1e-6)
    assert t["sft_gpu_hours"] == pytest.approx(t["sft_flops"] / (0.5 * 312e12) / 3600)
    # arith:test 24 x 4 + gsm8k 8 x 2 = 112 samples, twice (baseline: base), 100 tokens each
    assert (t["eval_samples"], t["eval_tokens"]) == (224, 22400)


def test_a_measured_run_replaces_the_length_assumptions(tmp_path):
    recipe = load_recipe(ROOT / "pipelines/demo-cpu.yaml", [f"run_dir={tmp_path}"])
    (tmp_path / "generate").mkdir()
    metrics = {"prompt_tokens": 1000, "completion_tokens": 3000}
    manifest = {"stage": "generate", "config_hash": "x", "rows_out": 10, "metrics": metrics}
    (tmp_path / "generate" / "manifest.json").write_text(json.dumps(manifest))
    a, source, _ = plan(recipe, ["prompts=10"])
    assert (a.prompt_tokens, a.completion_tokens) == (100, 300)
    assert source["completion_tokens"].startswith("measured: ") and source["prompts"] == "--set"


def test_split_sets_routes_plan_keys():
    assert split_sets(["generate.n=8", "plan.mfu=0.5"]) == (["generate.n=8"], ["mfu=0.5"])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("mfu=abc", r"--set plan.mfu: Input should be a valid number"),
        ("mfu=1.5", r"--set plan.mfu: Input should be less than or equal to 1"),
        ("speed=3", r"--set plan.speed: Extra inputs are not permitted"),
        ("gpu=TPU", r"--set plan.gpu: unknown GPU 'TPU' \(known: H200, H100"),
    ],
)
def test_bad_assumptions_name_the_key(bad, message):
    recipe = load_recipe(ROOT / "pipelines/demo-cpu.yaml")
    with pytest.raises(DistillError, match=message):
        plan(recipe, [bad])


def test_cli_prints_every_assumption_and_the_totals():
    cmd = [sys.executable, "-m", "cli.main", "plan", "pipelines/r1-distill-qwen-1.5b.yaml"]
    proc = subprocess.run(
        [*cmd, "--set", "plan.prompts=800000", "--set", "generate.n=8"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    from distill.plan import Assumptions

    for name in Assumptions.model_fields:
        assert f"plan.{name}" in proc.stdout
    assert "6,400,000" in proc.stdout  # 800k prompts x n=8 samples
    assert "total_gpu_hours" in proc.stdout and "total_usd" in proc.stdout
    bad = subprocess.run([*cmd, "--set", "plan.mfu=x"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "plan.mfu" in bad.stderr
