"""teacher.executor: ray on a local Ray cluster (ray.init with the machine's cores): Ray Data's HTTP processor
against a loopback `vllm serve` writes distill's shards, rows and markers; a rerun after a lost driver resumes;
Ray missing is one clear error; the GPU processor (vLLMEngineProcessorConfig) is configured from the recipe."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from distill.artifacts import read_shards
from distill.config import TeacherConfig, recipe_from_dict
from distill.errors import DistillError
from distill.generate.run import generate, load_prompt_set


def _recipe(run_dir: Path, url: str, model: str = "teacher", limit: int = 6, **teacher) -> dict:
    return {
        "name": "ray",
        "run_dir": str(run_dir),
        "teacher": {
            "backend": "openai",
            "model": model,
            "base_url": url,
            "thinking": False,
            "executor": "ray",
            "concurrency": 4,
            "max_retries": 3,
            **teacher,
        },
        "generate": {
            "prompts": [{"source": "gsm8k", "split": "test", "limit": limit}],
            "n": 2,
            "max_tokens": 16,
            "force_think": False,
            "shard_size": 2,
        },
    }


def test_ray_missing_is_one_clear_error_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    recipe = recipe_from_dict(_recipe(tmp_path / "run", "http://127.0.0.1:9/v1"))
    with pytest.raises(DistillError, match=r"teacher.executor: ray needs .*pip install 'distill\[ray\]'"):
        generate(recipe, None, tmp_path / "run" / "generate")
    assert (
        not list((tmp_path / "run" / "generate").glob("part-*"))
        and not (tmp_path / "run" / "generate" / "manifest.json").exists()
    )


def test_the_gpu_processor_is_configured_from_the_recipe():
    from distill.engines.ray_backend import vllm_config  # the ray extra: make setup installs it

    teacher = TeacherConfig(
        model="deepseek-ai/DeepSeek-R1",
        tensor_parallel_size=8,
        pipeline_parallel_size=2,
        data_parallel_size=3,
        max_model_len=32768,
    )
    cfg = vllm_config(teacher)
    assert cfg.model_source == "deepseek-ai/DeepSeek-R1" and cfg.concurrency == 3
    engine = cfg.engine_kwargs
    assert (engine["tensor_parallel_size"], engine["pipeline_parallel_size"], engine["max_model_len"]) == (
        8,
        2,
        32768,
    )
    assert engine["distributed_executor_backend"] == "ray"


@pytest.fixture(scope="module")
def ray_cluster():
    import ray  # the ray extra: make setup installs it, so a missing ray fails here instead of skipping

    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_http_processor_against_vllm_serve_writes_distill_shards_and_resumes(
    ray_cluster, vllm_server, smollm2_path, tmp_path
):
    url = vllm_server
    recipe = recipe_from_dict(_recipe(tmp_path / "run", url, model="smollm2", tokenizer=str(smollm2_path)))
    out = tmp_path / "run" / "generate"
    # as if a first run had lost its driver after two shards: their shards and markers are kept, the rest redone
    local = recipe_from_dict(
        _recipe(
            tmp_path / "run", url, model="smollm2", tokenizer=str(smollm2_path), executor="local", limit=4
        )
    )
    generate(local, None, out)
    (out / "manifest.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in [*out.glob("part-*"), *(out / "_done").glob("*.ok")]}
    manifest = generate(recipe, None, out)
    assert manifest.metrics["run_shards_generated"] == 1 and manifest.metrics["run_shards_resumed"] == 2
    assert len(kept) == 4 and {p: p.stat().st_mtime_ns for p in kept} == kept  # resumed, not rewritten
    rows = list(read_shards(out))
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    expected = {(p["prompt_id"], j) for p in load_prompt_set(recipe.generate)[0] for j in range(2)}
    assert len(keys) == 12 == len(set(keys)) and set(keys) == expected
    assert all(r["completion"] and 0 < r["completion_tokens"] <= 16 for r in rows)
    # the same requests as the local executor sends (R1 rules, token ids, seed + j): the same samples
    same = recipe_from_dict(
        _recipe(tmp_path / "local", url, model="smollm2", tokenizer=str(smollm2_path), executor="local")
    )
    generate(same, None, tmp_path / "local" / "generate")
    local_rows = {
        (r["prompt_id"], r["sample_index"]): r for r in read_shards(tmp_path / "local" / "generate")
    }
    for r in rows:
        want = local_rows[(r["prompt_id"], r["sample_index"])]
        assert (r["completion"], r["seed"], r["prompt_text"]) == (
            want["completion"],
            want["seed"],
            want["prompt_text"],
        )
