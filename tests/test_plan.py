"""`distill plan`: the estimate and the memory plan against numbers worked out by hand and published settings,
measured assumptions, bad --set values and configs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from distill.config import load_recipe
from distill.errors import DistillError
from distill.memory import (
    SHAPES,
    TEACHERS,
    Launch,
    check_train,
    host_bytes,
    kv_bytes_per_token,
    local_shape,
    model_states,
)
from distill.plan import generate_memory, generate_verdict, memory_verdicts, plan, split_sets, train_memory

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


# ---------------------------------------------------------------- the memory plan (distill.memory)

GiB = 2**30


@pytest.mark.parametrize("student", list(SHAPES))
def test_architecture_facts_recount_the_published_parameter_totals(student):
    """layers, hidden, heads, kv heads, MLP width and vocab (each base's config.json, linked in Shape.source) give
    back the safetensors total exactly: embeddings (twice untied) + layers x (q, k, v, o, q/k/v biases on Qwen2,
    gate/up/down, two norms) + the final norm."""
    s = SHAPES[student]
    embeddings = s.vocab * s.width * (1 if s.tied else 2)
    assert embeddings + s.layers * s.layer_params() + s.width == s.params


def test_the_embedded_smollm2_config_is_the_registry_shape(smollm2_path):
    s = local_shape(
        str(smollm2_path)
    )  # its config.json as converted from HuggingFaceTB/SmolLM2-135M-Instruct
    assert replace(s, source="") == replace(SHAPES["smollm2-135m"], head_dim=64, source="")  # 576 / 9 heads


def test_qwen_7b_release_recipe_memory_by_hand():
    recipe = load_recipe(ROOT / "pipelines/r1-distill-qwen-7b.yaml")
    a, source, _ = plan(recipe, ["prompts=800000"])
    assert (a.gpus, source["gpus"]) == (8, "recipe: num_processes of pipelines/accelerate/zero3.yaml")
    m = train_memory(recipe, a)
    assert m["launch"].sharding == "zero3" and m["launch"].bf16
    p = 7_615_616_512
    assert m["parts"]["parameters"] == 6 * p / 8  # bf16 + fp32 partitions
    assert m["parts"]["gradients"] == 4 * p / 8 and m["parts"]["optimizer"] == 8 * p / 8
    assert m["parts"]["gathered"] == 4 * 152064 * 3584  # the embedding matrix, DeepSpeed's largest layer
    # per token and layer e = 9 x 3584 + 3 x 4 kv heads x 128 + 4 x 18944 = 109,568 elements
    # checkpointing: 28 layers x 32768 x 3584 x 2 B inputs + 32768 x 109,568 x 2 B of the recomputed layer
    assert m["parts"]["activations"] == 28 * 32768 * 3584 * 2 + 32768 * 109_568 * 2 == 13_757_317_120
    assert m["parts"]["activations, checkpointing off"] == 28 * 32768 * 109_568 * 2  # 187.3 GiB
    assert m["parts"]["loss chunks"] == 1024 * 152064 * 14 + 2 * 32768 * 3584 * 2
    # DeepSpeed's default reduce_bucket_size (5e8 elements) in bf16, and its reduce-scatter's copy of a full bucket
    assert m["parts"]["reduce bucket"] == 2 * 500_000_000 * 2
    assert m["total"] == 37_722_195_328  # 35.13 GiB
    assert m["capacity"] == 77 * GiB and m["fixes"] == []  # H100 80 GiB less plan.overhead_gib 3


def _deepspeed_zero3_estimate(total_params, largest_layer_params, gpus_per_node, nodes, cpu_offload):
    """deepspeed/runtime/zero/stage3.py estimate_zero3_model_states_mem_needs (zero_init=True,
    additional_buffer_factor=1.5), transcribed: (cpu bytes, gpu bytes)."""
    total_gpus = nodes * gpus_per_node
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:  # offload_param=cpu, offload_optimizer=cpu
        return int(total_params * 18 * (1 / nodes) * 1.5), largest_layer_memory
    return int(largest_layer_params * 4 * gpus_per_node * 1.5), largest_layer_memory + int(18 * total_params / total_gpus)  # fmt: skip


@pytest.mark.parametrize(
    ("student", "gpus", "nodes"), [("qwen-7b", 8, 1), ("qwen-32b", 32, 4), ("llama-70b", 64, 8)]
)
@pytest.mark.parametrize("offload", [False, True])
def test_zero3_model_states_are_deepspeeds_published_estimate(student, gpus, nodes, offload):
    s = SHAPES[student]
    launch = Launch("zero3-offload" if offload else "zero3", gpus, nodes, True, "test")
    states = model_states(s, launch)
    cpu, gpu = _deepspeed_zero3_estimate(s.params, s.largest_layer(), gpus // nodes, nodes, offload)
    assert sum(states.values()) == pytest.approx(gpu, abs=1)
    if offload:
        assert host_bytes(s, launch) == pytest.approx(cpu, abs=1)


def test_open_r1_distill_7b_setting_fits_and_would_not_without_checkpointing():
    """Published: open-r1 trained OpenR1-Distill-7B (Qwen2.5-Math-7B) on one node of 8 x H100 80GB with ZeRO-3,
    --max_seq_length 32768 --per_device_train_batch_size 2 --gradient_checkpointing --bf16 (huggingface/open-r1
    README "Training models" and src/open_r1/sft.py usage). The plan fits it; without checkpointing it cannot."""
    sets = ["train.micro_batch_size=2", "train.max_length=32768"]  # the qwen-7b recipe at open-r1's settings
    recipe = load_recipe(ROOT / "pipelines/r1-distill-qwen-7b.yaml", sets)
    a, _, _ = plan(recipe, ["gpu=H100", "prompts=350000"])
    m = train_memory(recipe, a)
    assert (m["launch"].sharding, a.gpus) == ("zero3", 8)
    assert m["total"] / GiB == pytest.approx(48.381, abs=1e-3) and m["total"] < m["capacity"]
    recipe.train.gradient_checkpointing = False
    m = train_memory(recipe, a)
    assert m["total"] / GiB == pytest.approx(397.256, abs=1e-3)
    assert m["fixes"] == ["train.gradient_checkpointing=true", "train.max_length=4096"]


def _published(recipe_file: str, sets: list[str], assumptions: list[str]) -> dict:
    recipe = load_recipe(ROOT / recipe_file, sets)
    a, _, _ = plan(recipe, ["gpu=H100", "prompts=1000", *assumptions])
    return train_memory(recipe, a)


S1 = [
    "train.accelerate_config=pipelines/accelerate/fsdp2.yaml",
    "train.max_length=32768",
    "train.micro_batch_size=1",
]


def test_s1_32b_setting_fits_16_h100s_with_fsdp_and_not_8():
    """Published: s1-32B (Qwen2.5-32B-Instruct, full SFT) on "16 H100 GPUs i.e. 2 nodes with 8 each" (simplescaling/s1
    README "Training"), train/sft_multinode.sh: torch FSDP --fsdp "full_shard auto_wrap" (Qwen2DecoderLayer units),
    --block_size=32768 micro_batch_size=1 --bf16=True --gradient_checkpointing=True; train/sft.py loads the weights
    without torch_dtype (fp32 masters, bf16 autocast: the plan's fsdp2 row). The README adds: "If you encounter an
    out-of-memory (OOM) issue with 8 GPUs, consider enabling gradient checkpointing". The plan fits 16 (4.6 GiB to
    spare); on 8 the fp32 shards alone are 61 GiB and it names 16 GPUs first."""
    m = _published("pipelines/r1-distill-qwen-32b.yaml", S1, ["gpus=16"])
    assert (m["launch"].sharding, m["launch"].ranks, m["launch"].bf16) == ("fsdp2", 16, True)
    p, h = 32_763_876_352, 5120
    assert m["parts"]["optimizer"] == 8 * p / 16
    assert m["parts"]["gathered"] == 4 * (2 * SHAPES["qwen-32b"].layer_params() + 2 * 152064 * h + h)
    # 64 layer inputs of 32768 x 5120 in bf16 + one recomputed layer: e = 9 x 5120 + 3 x 1024 + 4 x 27648
    assert m["parts"]["activations"] == 64 * 32768 * h * 2 + 32768 * 159_744 * 2
    assert m["total"] / GiB == pytest.approx(72.353, abs=1e-3) and m["total"] < m["capacity"] == 77 * GiB
    m = _published("pipelines/r1-distill-qwen-32b.yaml", S1, ["gpus=8"])
    assert m["total"] / GiB == pytest.approx(102.866, abs=1e-3)
    assert m["fixes"][0] == "16 GPUs (num_processes in pipelines/accelerate/fsdp2.yaml)"
    m = _published(
        "pipelines/r1-distill-qwen-32b.yaml", [*S1, "train.gradient_checkpointing=false"], ["gpus=16"]
    )
    assert m["total"] / GiB == pytest.approx(666.603, abs=1e-3)  # 624 GiB of activations at 32k


SKY_T1 = ["train.max_length=16384", "train.micro_batch_size=1"]


def test_sky_t1_32b_preview_setting_fits_8_h100s_only_with_zero3_offload():
    """Published: Sky-T1-32B-Preview (Qwen2.5-32B-Instruct, full SFT) "completed in 19 hours on 8 H100 GPUs using
    DeepSpeed Zero-3 offloading" (NovaSky-AI/SkyThought README at commit 0751518), with
    skythought/train/LLaMA-Factory/examples/train_full/qwen2_full_sft.yaml: ds_z3_offload_config.json (optimizer
    and parameters on cpu), cutoff_len 16384, per_device_train_batch_size 1, bf16; LLaMA-Factory checkpoints by
    default (disable_gradient_checkpointing: false). The plan fits it with offload (host: DeepSpeed's 18 B x P x 1.5
    on the one node) and, as their choice of offload says, not with plain ZeRO-3 on 8 GPUs."""
    offload = "train.accelerate_config=pipelines/accelerate/zero3_offload.yaml"
    m = _published("pipelines/r1-distill-qwen-32b.yaml", [offload, *SKY_T1], [])
    assert (m["launch"].sharding, m["launch"].ranks) == ("zero3-offload", 8)
    assert m["parts"]["parameters"] == m["parts"]["optimizer"] == 0
    assert m["parts"]["activations"] == 64 * 16384 * 5120 * 2 + 16384 * 159_744 * 2
    assert m["total"] / GiB == pytest.approx(21.981, abs=1e-3) and m["fixes"] == []
    assert m["host"] == 18 * 32_763_876_352 * 1.5  # 823.9 GiB, under plan.host_memory_gib 2048
    zero3 = "train.accelerate_config=pipelines/accelerate/zero3.yaml"
    m = _published("pipelines/r1-distill-qwen-32b.yaml", [zero3, *SKY_T1], [])
    assert m["total"] / GiB == pytest.approx(90.636, abs=1e-3) and m["total"] > m["capacity"]
    assert m["fixes"] == [
        "16 GPUs (num_processes in pipelines/accelerate/zero3.yaml)",
        "offload (pipelines/accelerate/zero3_offload.yaml)",
        "train.max_length=1024",
    ]


def test_a_plan_over_the_gpu_names_each_change_that_fits():
    # Qwen2.5-32B at 32k on one node of 8 (the 7B's zero3.yaml): 18 x 32.76e9 / 8 = 68.6 GiB of states alone
    sets = ["train.accelerate_config=pipelines/accelerate/zero3.yaml"]
    recipe = load_recipe(ROOT / "pipelines/r1-distill-qwen-32b.yaml", sets)
    a, _, _ = plan(recipe, ["prompts=800000"])
    train = train_memory(recipe, a)
    assert train["total"] / GiB == pytest.approx(105.824, abs=1e-3)
    assert train["fixes"] == [
        "16 GPUs (num_processes in pipelines/accelerate/zero3.yaml)",
        "offload (pipelines/accelerate/zero3_offload.yaml)",
        "train.max_length=1024",
    ]
    line = memory_verdicts(recipe, a, train, None, 3.2e6)[0]
    assert line == (
        "train: 105.8 GiB per GPU of 77.0 usable (8 x H100, zero3): does not fit; change 16 GPUs (num_processes "
        "in pipelines/accelerate/zero3.yaml) or offload (pipelines/accelerate/zero3_offload.yaml) or "
        "train.max_length=1024"
    )


def test_offload_beyond_the_host_and_more_ranks_than_bins_are_named():
    sets = ["train.accelerate_config=pipelines/accelerate/zero3_offload.yaml"]
    recipe = load_recipe(ROOT / "pipelines/r1-distill-qwen-32b.yaml", sets)
    a, _, _ = plan(recipe, ["prompts=10", "host_memory_gib=512"])
    train = train_memory(recipe, a)
    assert train["host"] == 18 * 32_763_876_352 * 1.5  # 823.9 GiB on one node
    lines = memory_verdicts(recipe, a, train, None, 40)
    assert lines[1] == (
        "train: zero3-offload needs 824 GiB of host memory per node of plan.host_memory_gib=512: more nodes or "
        "pipelines/accelerate/zero3.yaml"
    )
    # 40 samples x keep 0.5 x 8150 tokens / 32768 = 4.97 -> 5 bins for 8 ranks
    assert lines[2].startswith("train: 8 ranks but about 5 bins per epoch: some ranks would have no data")


def test_generate_kv_cache_by_hand():
    r1 = TEACHERS["deepseek-ai/DeepSeek-R1"]
    # MLA: 576 cached elements per layer, not split by TP; PP2 puts ceil(61 / 2) = 31 layers on a GPU; bf16
    assert kv_bytes_per_token(r1, 8, 2) == 31 * 576 * 2 == 35_712
    qwen = SHAPES["qwen-7b"]
    assert kv_bytes_per_token(qwen, 2, 1) == 28 * 2 * 2 * 128 * 2  # 4 kv heads over TP2: 2 per GPU
    assert kv_bytes_per_token(qwen, 8, 1) == 28 * 2 * 1 * 128 * 2  # TP8 > 4 kv heads: each GPU keeps one
    recipe = load_recipe(ROOT / "pipelines/r1-distill-qwen-7b.yaml")
    a, _, t = plan(recipe, ["prompts=800000"])
    g = generate_memory(recipe, a, t["samples"])
    assert g["parts"]["weights"] == 671e9 * 1 / 16  # fp8, TP8 x PP2
    assert g["seq_tokens"] == 150 + 32768 and g["concurrency"] == 1024  # vLLM's max_num_seqs on H100
    # 80 GiB x 0.92 - 41.94e9 of weights = 37.09e9 bytes of KV room / (35,712 x 32,918 per sequence) = 31
    assert g["fit_sequences"] == 31
    assert generate_verdict(recipe, g).startswith(
        "generate: weights 39.1 GiB per GPU of 73.6 (gpu_memory_utilization): the KV cache holds 31 of the 1024"
    )


def test_cli_prints_the_memory_table_and_verdicts_and_bad_configs_exit_2():
    cmd = [
        sys.executable,
        "-m",
        "cli.main",
        "plan",
        "pipelines/r1-distill-qwen-7b.yaml",
        "--set",
        "plan.prompts=9",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "peak memory per GPU (H100)" in proc.stdout and "activations, checkpointing off" in proc.stdout
    assert "train: 35.1 GiB per GPU of 77.0 usable (8 x H100, zero3): fits" in proc.stdout
    bad = subprocess.run(
        [*cmd, "--set", "train.accelerate_config=pipelines/accelerate/nope.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "error: train.accelerate_config: pipelines/accelerate/nope.yaml not found\n"


# ---------------------------------------------------------------- the check `distill train` runs before weights load


def _config_only(tiny: Path, dest: Path, **config) -> Path:
    """tiny's tokenizer and config.json with `config` over it, and no weights: a run that got as far as loading
    them would fail on the missing file, not with the plan's message."""
    shutil.copytree(tiny, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    data = {**json.loads((dest / "config.json").read_text()), **config}
    data["layer_types"] = ["full_attention"] * data["num_hidden_layers"]  # transformers checks it matches
    (dest / "config.json").write_text(json.dumps(data))
    return dest


LLAMA_70B_SIZES = dict(
    hidden_size=8192, num_hidden_layers=80, intermediate_size=28672, num_attention_heads=64
)


def test_train_exits_2_before_weights_load_when_the_plan_cannot_fit(tiny_qwen2, tmp_path):
    from test_train import make_curate, trace_rows
    from typer.testing import CliRunner

    from cli.main import app

    model = _config_only(tiny_qwen2, tmp_path / "big", num_key_value_heads=8, **LLAMA_70B_SIZES)
    src, out = make_curate(tmp_path / "curate", trace_rows(4, steps=3)), tmp_path / "train"
    sets = ["train.max_steps=1", "train.max_length=128", f"train.model={model}"]
    args = ["train", "--student", "qwen-1.5b", "--data", str(src), "--out", str(out)]
    result = CliRunner().invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 2, result.output
    # 151936 x 8192 embedding, untied into a second matrix for lm_head as qwen-1.5b's release does before
    # training (memory.as_trained) + 80 layers x 855,664,640 + 8192 = 70,942,498,816 parameters x 16 B (fp32
    # weights, grads, Adam on CPU) = 1057.1 GiB, + 0.6 GiB of 128 tokens' activations and loss chunk; ZeRO-3
    # offload keeps 4 B x the embedding (4.6 GiB) plus 128 tokens of activations on the device: the one change
    # that fits
    last = result.output.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: train: planned peak 1057\.8 GiB per rank \(none, 1 rank\(s\)\) of [\d.]+ GiB on CPU \(1 rank\(s\) "
        r"sharing the host memory\): does not fit; change offload \(pipelines/accelerate/zero3_offload\.yaml\)",
        last,
    ), last
    assert not (out / "manifest.json").exists() and not (out / "final").exists()


def _accelerator(kind: str, ranks: int, zero_offload: bool = False):
    """The fields distill.memory.running_launch reads from a running Accelerator."""
    from types import SimpleNamespace

    from accelerate import DistributedType

    devices = (
        {"offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}} if zero_offload else {}
    )
    plugin = SimpleNamespace(zero_stage=3, deepspeed_config={"zero_optimization": devices})
    state = SimpleNamespace(deepspeed_plugin=plugin)
    kind = getattr(DistributedType, kind)
    return SimpleNamespace(distributed_type=kind, num_processes=ranks, mixed_precision="no", state=state, is_main_process=True)  # fmt: skip


def test_train_check_names_more_ranks_than_bins_and_offload_beyond_the_host(
    tiny_qwen2, tmp_path, monkeypatch
):
    # one node: the launcher's LOCAL_WORLD_SIZE, which an in-process vLLM engine earlier in the session may have set
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    import numpy as np

    from distill.config import TrainConfig
    from distill.train.loop import unit_count

    cfg = TrainConfig(max_length=128, packing=True)
    bins = unit_count(cfg, np.array([100, 100, 20]))  # best-fit decreasing: [100, 20] and [100]
    with pytest.raises(DistillError) as err:
        check_train(_accelerator("MULTI_CPU", 4), cfg, "qwen-1.5b", str(tiny_qwen2), bins)
    assert str(err.value) == (
        "train: 4 ranks but the data makes 2 bins of train.max_length=128: launch at most 2 processes (num_processes)"
    )
    model = _config_only(
        tiny_qwen2, tmp_path / "big", **LLAMA_70B_SIZES
    )  # its 2 kv heads: 68,691,083,264 params, + 151936 x 8192 for qwen-1.5b's untied lm_head = 69,935,742,976
    with pytest.raises(  # 18 B x 69.94e9 x 1.5 (DeepSpeed's estimate) = 1758.6 GiB
        DistillError, match=r"train: zero3-offload needs 1759 GiB of host memory per node, this host"
    ):
        check_train(_accelerator("DEEPSPEED", 2, zero_offload=True), cfg, "qwen-1.5b", str(model), bins)
