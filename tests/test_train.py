"""SFT stage on tiny random Qwen2/Llama (real vocabularies) and the embedded SmolLM2: chunked loss, packing
equality, global-batch averaging, 3-step training, exact resume, LoRA merge, the CLI, bad input."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.artifacts import finish_manifest, start_manifest, write_parquet
from distill.config import recipe_from_dict
from distill.errors import DistillError
from distill.students import get_student
from distill.train import loop
from distill.train.data import collate_packed, collate_padded, trained
from distill.train.loss import chunked_cross_entropy, forward_ce

STUDENT = {"tiny_qwen2": "qwen-1.5b", "tiny_llama": "llama-8b"}


def trace_rows(n: int, seed: int = 0, steps: int = 6) -> list[dict]:
    """Kept rows shaped like curate's output: an R1 math prompt, a reasoning trace, a boxed answer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        work = " ".join(f"Step {k}: {a} plus {b}." for k in range(rng.randint(1, steps)))
        rows.append(
            {
                "prompt_id": f"p{i}",
                "domain": "math",
                "completion": "",
                "messages": [
                    {
                        "role": "user",
                        "content": f"What is {a} + {b}? Please reason step by step, "
                        "and put your final answer within \\boxed{}.",
                    }
                ],
                "reasoning": f"{work} So it is {a + b}.",
                "answer": f"The answer is \\boxed{{{a + b}}}.",
            }
        )
    return rows


def make_curate(root: Path, rows: list[dict]) -> Path:
    write_parquet(rows, root / "kept" / "part-00000.parquet")
    finish_manifest(root, start_manifest("curate", "test"))
    return root


def recipe(student: str, **train):
    base = {
        "max_length": 128,
        "max_steps": 3,
        "grad_accum": 1,
        "lr": 2e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "save_every": 1000,
        "gradient_checkpointing": True,
    }
    return recipe_from_dict({"name": "t", "student": student, "train": {**base, **train}})


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def random_samples(n: int, seed: int, vocab: int = 5000) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, vocab, int(rng.integers(12, 48))), int(rng.integers(3, 10))) for _ in range(n)]


def tiny(path: Path, attn: str = "sdpa"):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
    model.config.use_cache = False
    return model


def test_chunked_cross_entropy_equals_full_logits_loss_and_grads():
    torch.manual_seed(0)
    hidden = torch.randn(2, 300, 32, requires_grad=True)
    head = torch.nn.Linear(32, 1000, bias=False)
    target = torch.randint(0, 1000, (2, 300))
    target[:, :40] = -100
    keep = trained(target.numpy())
    chunked = chunked_cross_entropy(hidden, head, keep["positions"], keep["labels"], chunk_tokens=64)
    chunked.backward()
    grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    full = torch.nn.functional.cross_entropy(head(hidden).flatten(0, 1), target.flatten(), reduction="sum")
    full.backward()
    assert torch.allclose(chunked, full, rtol=1e-6)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-6) and torch.allclose(
        grads[1], head.weight.grad, atol=1e-5
    )


@pytest.mark.gpu
@pytest.mark.parametrize("attn", ["flash_attention_2", "sdpa"])
def test_packed_loss_equals_per_sample_loss_on_cuda_bf16(tiny_qwen2, attn):
    """The GPU path: bf16 weights on CUDA; flash-attn gets the varlen boundaries (cu_seq_lens) directly."""
    import importlib.util

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("needs flash-attn")
    model = tiny(tiny_qwen2, attn).to("cuda", torch.bfloat16)
    flash = attn == "flash_attention_2"

    def loss(samples):
        batch = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in collate_packed(samples).items()}
        return forward_ce(model, model.lm_head, batch, 16, flash=flash).item()

    samples = random_samples(3, seed=1)
    n = len(collate_packed(samples)["labels"])
    with torch.no_grad():
        assert abs(loss(samples) - sum(loss([s]) for s in samples)) / n < 2e-2  # bf16: ~3 digits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama"])
def test_packed_loss_equals_per_sample_loss(request, fixture, attn):
    model = tiny(request.getfixturevalue(fixture), attn)
    samples = random_samples(3, seed=1)
    packed = collate_packed(samples)
    with torch.no_grad():
        together = forward_ce(model, model.lm_head, packed, 16, flash=False)
        apart = sum(forward_ce(model, model.lm_head, collate_packed([s]), 16, flash=False) for s in samples)
        n = len(packed["labels"])
        assert abs(together.item() - apart.item()) / n < 1e-5
        # The trap this guards against: with a cache the restarting positions are ignored and samples
        # attend to each other, silently changing the loss.
        leaky = model(
            input_ids=packed["input_ids"],
            position_ids=packed["position_ids"],
            use_cache=True,
            output_hidden_states=True,
            logits_to_keep=1,
        )
        leaked = chunked_cross_entropy(
            leaky.hidden_states[-1], model.lm_head, packed["positions"], packed["labels"], 16
        )
        assert abs(leaked.item() - apart.item()) / n > 1e-3


def test_batch_8_accum_1_equals_batch_1_accum_8(tiny_qwen2):
    from accelerate import Accelerator

    samples = random_samples(8, seed=2)
    cfg = recipe("qwen-1.5b", max_grad_norm=0.0).train

    def one_step(batches, accum):
        model = tiny(tiny_qwen2)
        accelerator = Accelerator(cpu=True)
        accelerator.gradient_accumulation_steps = accum
        grads = {}

        class Recorder(torch.optim.SGD):  # keeps the gradients the step would apply
            def step(self, closure=None):
                grads.update({n: p.grad.clone() for n, p in model.named_parameters()})

        optimizer = Recorder(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        stats = loop.train_step(accelerator, model, model.lm_head, optimizer, scheduler, batches, cfg, False)
        return stats["loss"], grads

    loss_a, grad_a = one_step([collate_padded(samples, pad_id=0)], accum=1)
    loss_b, grad_b = one_step([collate_padded([s], pad_id=0) for s in samples], accum=8)
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    for name, g in grad_a.items():
        assert (g - grad_b[name]).norm() <= 1e-5 * g.norm(), name


@pytest.mark.parametrize("fixture", ["tiny_qwen2", "tiny_llama"])
def test_three_steps_on_a_repeated_batch(request, tmp_path, fixture):
    path, student = request.getfixturevalue(fixture), STUDENT[fixture]
    src = make_curate(tmp_path / "curate", trace_rows(2, steps=2))  # both fit one bin: every step sees it
    r = recipe(student, model=str(path))
    out = tmp_path / "train"
    manifest = loop.train(r, src, out)

    losses = [m["loss"] for m in metrics(out)]
    assert len(losses) == 3 and all(np.isfinite(losses)) and losses[0] > losses[1] > losses[2]
    assert {p.name for p in (out / "final").iterdir()} >= {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert (out / "loss.png").stat().st_size > 0 and (out / "manifest.json").exists()
    assert manifest.metrics["steps"] == 3 and manifest.rows_out == 2
    assert 0 < manifest.metrics["trained_tokens"] < manifest.metrics["tokens"]  # prompts are not trained

    torch.manual_seed(r.train.seed)  # the starting point, as train() builds it
    tokenizer = loop.release_tokenizer_for(str(path), student)
    start, _ = loop.load_model(
        loop.effective_config(r.train, get_student(student)), tokenizer, student, "sdpa"
    )
    final = weights(out / "final")
    unchanged = [n for n, p in start.named_parameters() if n in final and torch.equal(p.detach(), final[n])]
    assert unchanged == [] and all(n in final for n, _ in start.named_parameters())

    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out / "final")
    assert reloaded.config.use_cache and reloaded.config.vocab_size >= len(tokenizer)
    assert loop.train(r, src, out).to_json() == manifest.to_json()  # fresh manifest: skipped


def test_a_start_model_retrained_in_place_trains_anew(tiny_qwen2, tmp_path):
    """train.model as a local folder was keyed by its path alone: new weights there left the run skipped, trained
    from the old ones. Unchanged, it is still skipped."""
    import shutil

    start = tmp_path / "start"
    shutil.copytree(tiny_qwen2, start)
    src = make_curate(tmp_path / "curate", trace_rows(4, steps=3))
    out, r = tmp_path / "train", recipe("qwen-1.5b", model=str(start), max_steps=1)
    first = loop.train(r, src, out)
    assert loop.train(r, src, out).to_json() == first.to_json()  # unchanged: skipped
    weights_file = start / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes())  # the retrained start, written anew
    os.utime(weights_file, ns=(1, 1))
    again = loop.train(r, src, out)
    assert again.inputs["init"] != first.inputs["init"]  # trained again, and its manifest says from what


def test_resume_gives_the_uninterrupted_loss_curve(tiny_qwen2, tmp_path, monkeypatch):
    src = make_curate(tmp_path / "curate", trace_rows(10, seed=3, steps=8))
    r = recipe(
        "qwen-1.5b",
        model=str(tiny_qwen2),
        max_steps=4,
        save_every=2,
        lr=1e-3,
        lr_scheduler="cosine",
        max_length=96,
    )
    loop.train(r, src, tmp_path / "whole")

    real_save = loop.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise RuntimeError("simulated crash after the step-2 checkpoint")

    monkeypatch.setattr(loop, "save_checkpoint", save_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train(r, src, tmp_path / "resumed")
    monkeypatch.undo()
    assert not (tmp_path / "resumed" / "manifest.json").exists()
    manifest = loop.train(r, src, tmp_path / "resumed")

    assert manifest.metrics["resumed_from_step"] == 2
    whole, resumed = metrics(tmp_path / "whole"), metrics(tmp_path / "resumed")
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    for a, b in zip(whole, resumed, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=0) and a["lr"] == b["lr"]
    ref, got = weights(tmp_path / "whole" / "final"), weights(tmp_path / "resumed" / "final")
    assert all(torch.allclose(ref[k], got[k], atol=1e-6) for k in ref)


def test_lora_is_merged_into_a_plain_checkpoint(tiny_llama, tmp_path):
    """An 'other'-family student on a Llama body: R1 tokens are added, so LoRA also trains their rows."""
    from transformers import AutoModelForCausalLM

    src = make_curate(tmp_path / "curate", trace_rows(2, steps=2))
    lora = {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": "all-linear"}
    out = tmp_path / "train"
    r = recipe("smollm2-135m", model=str(tiny_llama), max_steps=2, lora=lora)
    loop.train(r, src, out)
    final = weights(out / "final")
    base = weights(tiny_llama)
    torch.manual_seed(r.train.seed)  # the same resized embeddings train() started from
    tokenizer = loop.release_tokenizer_for(str(tiny_llama), "smollm2-135m")
    plain = loop.effective_config(r.train, get_student("smollm2-135m")).model_copy(update={"lora": None})
    start, new_ids = loop.load_model(plain, tokenizer, "smollm2-135m", "sdpa")
    embed = start.get_input_embeddings().weight.detach()
    assert new_ids == list(range(128256, 128262))
    assert torch.equal(final["model.embed_tokens.weight"][:128256], embed[:128256])  # frozen
    assert not torch.equal(final["model.embed_tokens.weight"][new_ids], embed[new_ids])  # trained R1 tokens
    assert not [k for k in final if "lora" in k or "base_layer" in k or "trainable_tokens" in k]
    assert not torch.equal(
        final["model.layers.0.self_attn.q_proj.weight"], base["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(
        final["model.layers.0.input_layernorm.weight"], base["model.layers.0.input_layernorm.weight"]
    )
    tokenizer = loop.release_tokenizer_for(str(out / "final"), "smollm2-135m")
    assert len(tokenizer) == 128256 + 6 and final["model.embed_tokens.weight"].shape[0] >= len(tokenizer)
    assert (
        AutoModelForCausalLM.from_pretrained(out / "final").config.vocab_size
        == final["lm_head.weight"].shape[0]
    )


def test_smollm2_through_the_cli(smollm2_path, tmp_path):
    """One short real run of the CLI on the embedded SmolLM2 (tied embeddings, added R1 tokens, a checkpoint)."""
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from cli.main import app

    src = make_curate(tmp_path / "curate", trace_rows(4, steps=3))
    out = tmp_path / "train"
    sets = [
        "train.max_steps=2",
        "train.max_length=128",
        "train.grad_accum=1",
        "train.save_every=1",
        "train.gradient_checkpointing=false",
        "train.lr=1e-4",
    ]
    args = ["train", "--student", "smollm2-135m", "--data", str(src), "--out", str(out)]
    result = CliRunner().invoke(app, args + [x for s in sets for x in ("--set", s)])
    assert result.exit_code == 0, result.output
    assert [m["step"] for m in metrics(out)] == [1, 2]
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-1"]
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tokenizer = loop.release_tokenizer_for(str(out / "final"), "smollm2-135m")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert (
        model.generate(**prompt, max_new_tokens=2, do_sample=False).shape[1]
        == prompt["input_ids"].shape[1] + 2
    )


def test_bad_input_gets_a_clear_message(tiny_qwen2, tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["train", "--student", "qwen-9000b", "--data", str(tmp_path)])
    assert result.exit_code == 2 and "unknown student 'qwen-9000b'" in result.output
    offline = make_curate(tmp_path / "ok", trace_rows(1))
    with pytest.raises(DistillError, match="cannot load its tokenizer"):  # tests run with HF_HUB_OFFLINE=1
        loop.train(recipe("qwen-1.5b", model="nobody/no-such-model"), offline, tmp_path / "out-offline")
    empty = make_curate(tmp_path / "empty", [])
    with pytest.raises(DistillError, match="empty"):
        loop.train(recipe("qwen-1.5b", model=str(tiny_qwen2)), empty, tmp_path / "out-empty")
    long = make_curate(tmp_path / "long", [dict(row, reasoning="word " * 100) for row in trace_rows(2)])
    with pytest.raises(DistillError, match=r"all 2 rows were dropped \{'overlong': 2\}"):
        loop.train(
            recipe("qwen-1.5b", model=str(tiny_qwen2), max_length=64, overlong="drop"),
            long,
            tmp_path / "out-long",
        )


def test_a_non_finite_loss_stops_training_with_one_error(tiny_qwen2, tmp_path):
    """An lr that blows the weights up: the loss turns non-finite and training stops there, naming the step,
    instead of going on at loss nan and writing NaN weights as final/ with a manifest."""
    src = make_curate(tmp_path / "curate", trace_rows(4, steps=3))
    out = tmp_path / "train"
    with pytest.raises(DistillError, match=r"train: step \d: the sft loss is nan"):
        loop.train(recipe("qwen-1.5b", model=str(tiny_qwen2), lr=1e30, max_steps=4), src, out)
    assert not (out / "manifest.json").exists() and not (out / "final").exists()


def test_flash_attention_without_cuda_is_a_clear_error(monkeypatch):
    """What a CPU machine (or a CUDA one told there is no GPU) answers: auto is sdpa, flash-attn is refused."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loop.attention_impl("auto") == "sdpa"
    with pytest.raises(DistillError, match="needs a CUDA GPU and the flash-attn package"):
        loop.attention_impl("flash_attention_2")


@pytest.mark.gpu
def test_flash_attention_on_cuda_follows_the_flash_attn_package():
    """On a CUDA machine: auto takes flash-attention 2 exactly when flash-attn is importable; asking for it
    without the package is the clear error, with it the request is kept."""
    import importlib.util

    has_flash = importlib.util.find_spec("flash_attn") is not None
    assert loop.attention_impl("auto") == ("flash_attention_2" if has_flash else "sdpa")
    if has_flash:
        assert loop.attention_impl("flash_attention_2") == "flash_attention_2"
    else:
        with pytest.raises(DistillError, match="flash-attn"):
            loop.attention_impl("flash_attention_2")


def test_two_processes_equal_one_with_twice_the_accumulation(tiny_qwen2, tmp_path):
    """The distributed path for real (DDP over gloo, 2 CPU ranks, launched like a GPU job): the global
    batch is the same, so every step's loss and gradient norm must match the single process. Both ranks
    write the step-2 checkpoint into rank 0's one temp folder (each its own RNG state)."""
    import os
    import subprocess
    import sys

    from distill.config import dump_recipe

    src = make_curate(tmp_path / "curate", trace_rows(12, seed=4, steps=8))
    r = recipe(
        "qwen-1.5b", model=str(tiny_qwen2), max_steps=3, grad_accum=2, lr=1e-3, max_length=96, save_every=2
    )
    (tmp_path / "r.yaml").write_text(dump_recipe(r))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "distill.train.loop",
        str(tmp_path / "r.yaml"),
        "--data",
        str(src),
        "--out",
        str(tmp_path / "ddp"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoints = tmp_path / "ddp" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["step-2"]  # no temp folder left beside it
    saved = {p.name for p in (checkpoints / "step-2").iterdir()}
    assert {"state.json", "random_states_0.pkl", "random_states_1.pkl"} <= saved
    r.train.grad_accum = 4
    loop.train(r, src, tmp_path / "single")
    ddp, single = metrics(tmp_path / "ddp"), metrics(tmp_path / "single")
    assert json.loads((tmp_path / "ddp" / "manifest.json").read_text())["metrics"]["world_size"] == 2
    for a, b in zip(ddp, single, strict=True):
        assert (a["tokens"], a["trained_tokens"]) == (b["tokens"], b["trained_tokens"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6) and a["grad_norm"] == pytest.approx(
            b["grad_norm"], rel=1e-4
        )


@pytest.mark.slow
def test_vllm_serves_the_final_checkpoint(smollm2_path, tmp_path, monkeypatch):
    """final/ is what eval and users load: vLLM must read it unchanged, with the release chat template."""
    for key, value in {
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "0-1",
    }.items():
        monkeypatch.setenv(key, value)
    from vllm import LLM, SamplingParams

    src = make_curate(tmp_path / "curate", trace_rows(4, steps=3))
    loop.train(
        recipe("smollm2-135m", max_steps=2, lr=1e-4, gradient_checkpointing=False), src, tmp_path / "train"
    )
    llm = LLM(model=str(tmp_path / "train" / "final"), dtype="float32", enforce_eager=True, max_model_len=256)
    out = llm.chat(
        [{"role": "user", "content": "What is 2+2?"}], SamplingParams(max_tokens=4, temperature=0)
    )[0]
    tokenizer = loop.release_tokenizer_for(str(tmp_path / "train" / "final"), "smollm2-135m")
    assert out.prompt_token_ids[:2] == tokenizer.convert_tokens_to_ids(
        ["<｜begin▁of▁sentence｜>", "<｜User｜>"]
    )
    assert tokenizer.decode(out.prompt_token_ids[-3:]) == "<｜Assistant｜><think>\n"
    assert len(out.outputs[0].token_ids) >= 1


def test_tensorboard_logs_the_metrics(tiny_qwen2, tmp_path):
    """train.tensorboard=true: the per-step metrics also go to TensorBoard event files under the stage dir."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    src = make_curate(tmp_path / "curate", trace_rows(2, steps=2))
    out = tmp_path / "train"
    loop.train(recipe("qwen-1.5b", model=str(tiny_qwen2), tensorboard=True), src, out)
    events = [p.parent for p in out.rglob("events.out.tfevents.*")]
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    logged = [e.value for e in acc.Scalars("loss")]
    assert logged == pytest.approx([m["loss"] for m in metrics(out)], rel=1e-6)
    assert {"lr", "grad_norm", "tokens_per_s"} <= set(acc.Tags()["scalars"])


def test_mfu_flop_count_matches_torch_flop_counter():
    """The MFU numerator (6 x matmul params x tokens + causal attention) against torch's FLOP counter on a
    real forward + backward of the training loss. Eager attention computes the full s x s scores (twice the
    causal half) and the chunked loss recomputes lm_head on the trained positions: both are added back."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM, Qwen2Config

    torch.manual_seed(0)
    vocab, width, layers, s = 512, 128, 2, 256
    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=256,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    ids = torch.randint(0, vocab, (1, s))
    batch = {"input_ids": ids, "position_ids": torch.arange(s)[None], "positions": torch.arange(s - 1)}
    batch["labels"] = ids[0, 1:]
    with FlopCounterMode(display=False) as counter:
        forward_ce(model, model.get_output_embeddings(), batch, 64, flash=False).backward()

    causal = loop.model_flops(loop.param_count(model), layers, width, tokens=s, sq_lens=s * s)
    full_scores = 6 * layers * width * s * s  # the masked half eager computes anyway
    recomputed_head = 2 * vocab * width * (s - 1)  # checkpointed loss chunks: one more lm_head forward
    assert counter.get_total_flops() == pytest.approx(causal + full_scores + recomputed_head, rel=0.01)


def test_bf16_autocast_trains_like_fp32_and_saves_bf16(tiny_qwen2, tmp_path):
    """train.dtype=bfloat16 (the GPU default) runs the same loop under bf16 autocast with fp32 master
    weights: the loss tracks fp32 to bf16 precision and final/ holds bf16 safetensors."""
    src = make_curate(tmp_path / "curate", trace_rows(2, steps=2))
    runs = {}
    for dtype in ("float32", "bfloat16"):
        loop.train(recipe("qwen-1.5b", model=str(tiny_qwen2), dtype=dtype), src, tmp_path / dtype)
        runs[dtype] = [m["loss"] for m in metrics(tmp_path / dtype)]
    assert runs["bfloat16"][0] > runs["bfloat16"][-1]
    assert runs["bfloat16"] == pytest.approx(runs["float32"], rel=0.02)
    assert runs["bfloat16"] != runs["float32"]  # autocast really ran in bf16
    final = weights(tmp_path / "bfloat16" / "final")
    assert {t.dtype for t in final.values()} == {torch.bfloat16}
    config = json.loads((tmp_path / "bfloat16" / "final" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
