"""train.objective: on_policy on CPU with real vLLM engines (student and teacher in this process): a real `vllm serve`
scores like the in-process engine, student == teacher starts at a reverse KL ≈ 0 (per token or per sample), the
reverse KL to a teacher falls over the steps, a resumed run continues the same curve, and a server that cannot
return prompt log-probs is one clear error."""

from __future__ import annotations

import json
import os
import shutil
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from test_train_kd import PROBLEMS, STUDENT, make_curate, prepared_student, tiny_smol  # noqa: F401

from distill.config import recipe_from_dict
from distill.errors import DistillError
from distill.train import loop
from distill.train.on_policy import ServerScorer, save_policy_start

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine; two engines run at once


def op_recipe(model: Path, teacher: Path, **train):
    base = {
        "model": str(model),
        "objective": "on_policy",
        "teacher": str(teacher),
        "max_length": 128,
        "max_steps": 4,
        "lr": 3e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "save_every": 2,
        "keep_checkpoints": 3,
        "dtype": "float32",
        "gradient_checkpointing": False,
        "on_policy": {
            "prompts_per_step": 2,
            "samples_per_prompt": 2,
            "max_tokens": 12,
            "engine": {"dtype": "float32", "enforce_eager": True, "max_model_len": 256},
        },
    }
    return recipe_from_dict({"name": "op", "student": STUDENT, "train": {**base, **train}})


@pytest.fixture(scope="module")
def curated(tmp_path_factory) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": p}], "reasoning": "", "answer": f"The answer is {i}."}
        for i, p in enumerate(PROBLEMS)
    ]
    return make_curate(tmp_path_factory.mktemp("op-curate"), rows)


def release_folder(model: Path, out: Path) -> Path:
    """A model in the student's release layout (the R1 rows added), as vLLM loads it: a teacher that reads the
    student's ids."""
    net, tok = prepared_student(model)
    return save_policy_start(net, tok, out)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_a_vllm_server_scores_like_the_in_process_engine(vllm_engine, vllm_server, smollm2_path):
    """train.on_policy.teacher_url: the teacher's log-prob of every sampled token, read from a real `vllm serve`'s
    prompt_logprobs, equals the in-process engine's and a transformers forward of the same SmolLM2 (fp32).
    First in this file: it runs before the on_policy runs below start and close in-process engines."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM

    from distill.models import load_tokenizer
    from distill.train.on_policy import EngineScorer

    tok = load_tokenizer(str(smollm2_path))
    texts = [
        "Question: 2 + 3 = ? Answer: 5, since two plus three is five.",
        "Paris is the capital of France.",
    ]
    seqs = [tok(t)["input_ids"] for t in texts]
    starts = [4, 2]
    server = ServerScorer(vllm_server, "smollm2").score(seqs, starts)
    engine = EngineScorer(vllm_engine).score(seqs, starts)
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_path), dtype=torch.float32)
    for ids, n, from_server, from_engine in zip(seqs, starts, server, engine, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, n - 1 : -1], -1)
        ref = logp.gather(-1, torch.tensor(ids[n:])[:, None])[:, 0].numpy()
        assert from_server.shape == from_engine.shape == (len(ids) - n,)
        np.testing.assert_allclose(from_server, ref, atol=2e-3)
        np.testing.assert_allclose(from_engine, ref, atol=2e-3)


@pytest.mark.parametrize("discount", [0.0, 1.0])
def test_student_equal_to_teacher_starts_at_zero(curated, tiny_smol, tmp_path, discount):  # noqa: F811
    """Per token (discount 0) or per sample's return to go (1): nothing to learn from itself, loss ≈ 0 too."""
    teacher = release_folder(tiny_smol, tmp_path / "teacher")
    out = tmp_path / "train"
    recipe = op_recipe(tiny_smol, teacher, max_steps=1)
    recipe.train.on_policy.discount = discount
    loop.train(recipe, curated, out)
    (row,) = metrics(out)
    assert abs(row["reverse_kl"]) < 5e-3 and abs(row["loss"]) < 1e-3, row


def test_returns_to_go_stay_inside_each_sample():
    """Two samples packed in one micro-batch, [1, 2, 3] and [4, 5]: a token's weight never reaches into the next
    sample; discount 0 is the token's own reward."""
    import torch

    from distill.train.on_policy import returns_to_go

    r = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    assert returns_to_go(r, [3, 2], 1.0).tolist() == [6.0, 5.0, 3.0, 9.0, 5.0]
    assert returns_to_go(r, [3, 2], 0.5).tolist() == [2.75, 3.5, 3.0, 6.5, 5.0]
    assert returns_to_go(r, [3, 2], 0.0).tolist() == r.tolist()
    assert returns_to_go(r, [5], 1.0).tolist() == [15.0, 14.0, 12.0, 9.0, 5.0]


def scaled_copy(model: Path, scale: float, out: Path) -> Path:
    """`model` with its final norm weight times `scale`: the same distribution at another sharpness (logits times
    `scale`), a perturbation one update direction undoes."""
    from transformers import AutoModelForCausalLM

    from distill.models import load_tokenizer

    net = AutoModelForCausalLM.from_pretrained(model, dtype="float32")
    net.model.norm.weight.data.mul_(scale)
    net.save_pretrained(out, safe_serialization=True)
    load_tokenizer(str(model)).save_pretrained(out)
    return out


def test_reverse_kl_falls_and_a_resumed_run_continues_the_same_curve(curated, tiny_smol, tmp_path):  # noqa: F811
    """Teacher: the tiny student sharpened (final norm x 10, logits ~N(0, 2.3)); student: the same at 0.6 of that
    sharpness, a flatter distribution. Reverse KL must fall; a run resumed from its step-6 checkpoint must log the
    uninterrupted run's values (sampling is seeded per step and the resumed weights are pushed into the engine)."""
    import torch

    # the release rows are drawn as train draws them (seed 0): teacher and student share them
    torch.manual_seed(0)
    teacher = release_folder(scaled_copy(tiny_smol, 10.0, tmp_path / "sharp"), tmp_path / "teacher")
    student = scaled_copy(tiny_smol, 6.0, tmp_path / "flat")
    recipe = op_recipe(student, teacher, max_steps=12, save_every=6, lr=1e-4)
    recipe.train.on_policy.samples_per_prompt = 4
    out = tmp_path / "train"
    loop.train(recipe, curated, out)
    whole = [row["reverse_kl"] for row in metrics(out)]
    print("reverse_kl per step:", [round(v, 4) for v in whole])
    assert len(whole) == 12 and min(whole[:3]) > 0.5, whole
    assert sum(whole[-3:]) / 3 < 0.7 * sum(whole[:3]) / 3, whole

    # as if killed after the step-6 checkpoint
    later = [c for c in (out / "checkpoints").glob("step-*") if int(c.name.split("-")[1]) > 6]
    for folder in [*later, out / "final"]:
        shutil.rmtree(folder)
    (out / "manifest.json").unlink()
    manifest = loop.train(recipe, curated, out)
    assert manifest.metrics["resumed_from_step"] == 6
    resumed = metrics(out)
    assert [row["step"] for row in resumed] == list(range(1, 13))
    assert [row["reverse_kl"] for row in resumed] == whole  # seeded sampling, exact weights: exact


class NoPromptLogprobs(BaseHTTPRequestHandler):
    """An OpenAI-compatible completions endpoint that ignores prompt_logprobs (as most servers do)."""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"choices": [{"text": "x", "index": 0, "finish_reason": "length"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_server_without_prompt_logprobs_is_one_error():
    server = HTTPServer(("127.0.0.1", 0), NoPromptLogprobs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        with pytest.raises(DistillError, match="no prompt_logprobs") as err:
            ServerScorer(url, "teacher").score([[1, 2, 3]], [1])
        assert url in str(err.value) and "\n" not in str(err.value)
    finally:
        server.shutdown()


def test_a_student_that_never_stops_is_pulled_toward_stopping():
    """The stop term (the teacher scores the EOS position): a student whose EOS probability is ~0 everywhere, on a
    sample that never ends, and a teacher that would stop with probability 0.5 at the last two positions and never
    before. The policy term is made zero (teacher log-probs = the student's own), so the whole gradient on the EOS
    logit at each position is the stop term's, exactly q_eos − p_eos: −(0.5 − q) at the last two, +q elsewhere; one
    SGD step raises the student's EOS probability there and leaves the never-stop positions at ~0."""
    import numpy as np
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.train.data import collate_packed
    from distill.train.loss import final_hidden
    from distill.train.on_policy import policy_loss

    torch.manual_seed(0)
    eos = 2
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).float()
    ids = np.asarray([1, 5, 6, 7, 8, 9, 10, 11], np.int32)  # prompt [1, 5], 6 sampled tokens, no EOS
    batch = collate_packed([(ids, 2)])
    head = model.get_output_embeddings()
    with torch.no_grad():  # the EOS row points away from every hidden state: the student (almost) never stops
        head.weight[eos] = -3 * final_hidden(model, batch, False)[0].mean(0)

    def eos_logits_and_logq():
        hidden = final_hidden(model, batch, False)[0].index_select(0, batch["positions"])
        logits = head(hidden)
        return logits, torch.log_softmax(logits, -1)

    with torch.no_grad():
        _, lp = eos_logits_and_logq()
    own = lp.gather(1, batch["labels"][:, None])[:, 0]
    q = lp[:, eos].exp()
    assert q.max() < 1e-3, q
    p = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.5])
    batch |= {
        "teacher_logprobs": own.clone(),  # the policy term's weight log q − log p is 0: only the stop term acts
        "teacher_eos_logprobs": torch.where(p > 0, p.log(), torch.full_like(p, float("-inf"))),
        "sample_lens": [6],
        "eos": eos,
    }
    logits_grad = {}

    def keep_grad(
        module, args, out
    ):  # the gradient on the loss's [tokens, vocab] logits, as backward computes it
        if out.dim() == 2 and out.requires_grad:  # the loss's, not the model's own one-position logits
            out.register_hook(lambda g: logits_grad.setdefault("g", g))

    head.register_forward_hook(keep_grad)
    loss, terms = policy_loss(model, head, batch, chunk_tokens=1024, flash=False)
    loss.backward()
    g = logits_grad["g"][:, eos]
    np.testing.assert_allclose(g.numpy(), (q - p).numpy(), atol=1e-6)
    assert (g[4:] < -0.4).all() and (g[:4] > 0).all()
    assert terms["stop_kl"].item() > 0

    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    opt.step()
    with torch.no_grad():
        _, after = eos_logits_and_logq()
    assert (after[4:, eos].exp() > q[4:] * 2).all(), (q, after[:, eos].exp())


def test_on_policy_steps_at_its_lr_scale_of_train_lr():
    """on_policy's optimizer starts at on_policy.lr_scale x train.lr (default a quarter: at the sft lr it broke the
    student on arith:dev); sft and kd at train.lr; demo-cpu-logit's on_policy after kd at a tenth (2e-5)."""
    import torch

    from distill.config import TrainConfig, load_recipe, phase_train

    net = torch.nn.Linear(2, 2)
    lr = lambda cfg: loop.make_optimizer(net, cfg).param_groups[0]["lr"]  # noqa: E731
    assert lr(TrainConfig(objective="on_policy", lr=2e-4)) == pytest.approx(5e-5)
    assert lr(TrainConfig(objective="kd", lr=2e-4)) == lr(TrainConfig(objective="sft", lr=2e-4)) == 2e-4
    pipelines = Path(__file__).resolve().parent.parent / "pipelines"
    recipe = load_recipe(pipelines / "demo-cpu-logit.yaml", [])
    assert lr(phase_train(recipe, recipe.phases[-1])) == pytest.approx(2e-5)
    recipe = load_recipe(pipelines / "r1-distill-qwen-1.5b-logit.yaml", [])  # its 1e-6 as written
    assert lr(phase_train(recipe, recipe.phases[-1])) == pytest.approx(1e-6)
