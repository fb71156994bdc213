"""train.objective: kd on a real same-vocabulary pair (a tiny random Llama on SmolLM2's vocabulary and release
tokenizer): teacher top-K rows line up with the trained positions, packed equals per-sample, a self-distilled pair
starts at a distillation term ≈ 0, vocabulary hashes land in the manifest, and bad input stops with one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.artifacts import finish_manifest, start_manifest, write_parquet
from distill.config import load_recipe, recipe_from_dict
from distill.errors import DistillError
from distill.logits import as_sampled, from_lists
from distill.logits import decode as decode_logprobs
from distill.logits import encode as encode_logprobs
from distill.students import get_student
from distill.train import loop
from distill.train.data import KDRows, build_tokens, collate_packed, kd_sample, load_tokens, teacher_batch
from distill.train.kd import KDSpec, kd_loss

STUDENT = "smollm2-135m"  # the release layout of SmolLM2's vocabulary (R1 tokens appended after id 49151)
K = 8
SAMPLED_AT_1 = json.dumps(
    {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_tokens": 32, "seed": 0}
)  # multinomial
PROBLEMS = [
    f"What is {a} + {b}? End with: The answer is <number>." for a, b in [(3, 4), (12, 9), (40, 2), (7, 7)]
]


@pytest.fixture(scope="module")
def tiny_smol(tmp_path_factory, smollm2_path) -> Path:
    """A 2-layer random Llama (head_dim 64, as vLLM's CPU kernels want) on SmolLM2's 49152-id vocabulary, saved
    with SmolLM2's tokenizer: a student smaller than SmolLM2 that shares its ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.models import load_tokenizer

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    out = tmp_path_factory.mktemp("tiny-smol")
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    load_tokenizer(str(smollm2_path)).save_pretrained(out)
    return out


def kd_recipe(model: Path, teacher: str, **train):
    base = {
        "model": str(model),
        "objective": "kd",
        "teacher": teacher,
        "max_length": 128,
        "max_steps": 2,
        "grad_accum": 1,
        "micro_batch_size": 2,
        "lr": 1e-3,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "save_every": 1000,
        "dtype": "float32",
        "kd": {"alpha": 0.5, "divergence": "forward"},
    }
    return recipe_from_dict({"name": "kd", "student": STUDENT, "train": {**base, **train}})


def prepared_student(model: Path):
    """The student exactly as train loads it: release tokenizer, release rows added, use_cache off."""
    cfg = loop.effective_config(kd_recipe(model, str(model)).train, get_student(STUDENT))
    tokenizer = loop.release_tokenizer_for(str(model), STUDENT)
    net, _ = loop.load_model(cfg, tokenizer, STUDENT, "sdpa")
    return net.eval(), tokenizer


def self_teacher_rows(model: Path) -> list[dict]:
    """Kept rows whose teacher is the prepared student itself: completions sampled from it after the release
    generation prompt (ending in the release EOS), with its own top-K log-probs at every completion token."""
    net, tok = prepared_student(model)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for i, problem in enumerate(PROBLEMS):
        chat = [{"role": "user", "content": problem}]
        prompt = tok.apply_chat_template(
            chat, chat_template=loop.training_template(), tokenize=False, add_generation_prompt=True
        )
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        n = len(ids)
        with torch.no_grad():
            for _ in range(6 + 3 * i):  # sampled from the student itself: its own distribution
                logits = net(input_ids=torch.tensor([ids])).logits[0, -1]
                ids.append(int(torch.multinomial(logits.softmax(-1), 1, generator=gen)))
            ids.append(tok.eos_token_id)
            logp = torch.log_softmax(net(input_ids=torch.tensor([ids])).logits[0].float(), -1)[n - 1 : -1]
        top = logp.topk(K, dim=-1)
        completion = ids[n:]
        tops = [
            list(zip(t.tolist(), v.tolist(), strict=True))
            for t, v in zip(top.indices, top.values, strict=True)
        ]
        sampled = logp.gather(1, torch.tensor(completion)[:, None])[:, 0].tolist()
        lp = from_lists(completion, sampled, tops, K)
        rows.append(
            {"prompt_id": f"p{i}", "messages": chat, "reasoning": "", "answer": "", "sampling": SAMPLED_AT_1}
            | encode_logprobs(lp)
        )
    return rows


def make_curate(root: Path, rows: list[dict]) -> Path:
    write_parquet(rows, root / "kept" / "part-00000.parquet")
    finish_manifest(root, start_manifest("curate", "test"))
    return root


@pytest.fixture(scope="module")
def self_kept(tmp_path_factory, tiny_smol) -> Path:
    return make_curate(tmp_path_factory.mktemp("kd-curate"), self_teacher_rows(tiny_smol))


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tokens_align_teacher_rows_with_trained_positions(self_kept, tiny_smol, tmp_path):
    """Sample i's trained tokens are its teacher's completion ids, one top-K row each, after the release prompt."""
    tok = loop.release_tokenizer_for(str(tiny_smol), STUDENT)
    eos = KDRows(2, tok.eos_token_id, "raw")
    build_tokens(self_kept, tok, 128, "truncate", tmp_path / "tokens", "k", eos)
    data = load_tokens(tmp_path / "tokens")
    assert data.stats["k"] == K and len(data) == len(PROBLEMS)
    import pyarrow.parquet as pq

    rows = pq.read_table(self_kept / "kept" / "part-00000.parquet").to_pylist()
    for i, row in enumerate(rows):
        ids, n = data.sample(i)
        assert ids[n:].tolist() == row["completion_token_ids"]
        assert tok.decode(ids[:n]).endswith("<｜Assistant｜><think>\n")
        top_ids, top_lp = data.teacher_rows(i)
        assert top_ids.shape == (len(ids) - n, K)
        assert top_ids.tobytes() == row["teacher_top_ids"]
    batch = collate_packed([data.sample(0), data.sample(1)])
    tb = teacher_batch(data, [0, 1])
    assert len(tb["top_ids"]) == len(batch["positions"])
    # where the label is, the teacher's row ranks it (the samples were drawn from it): its id is among the top-K or
    # its log-prob is below the K-th
    assert (tb["top_ids"][:, 0] >= 0).all()


def test_teacher_eos_becomes_student_eos_at_the_end():
    """A teacher stop (its EOS id last) is trained as the student's release EOS, label and top-K entry alike."""
    lp = from_lists([5, 9, 2], [-1.0, -2.0, -0.1], [[(5, -1.0)], [(9, -2.0)], [(2, -0.1), (7, -3.0)]], 2)
    ids, n, top_ids, top_lp = kd_sample(encode_logprobs(lp), [1, 3], KDRows(2, 49157, "raw"), 2, "row 0")
    assert ids == [1, 3, 5, 9, 49157] and n == 2
    assert top_ids[-1].tolist() == [49157, 7] and top_lp[-1, 0] == pytest.approx(-0.1, abs=1e-3)
    assert top_ids[0].tolist() == [5, -1]
    # a truncated completion (no EOS at the end) is left alone
    lp = from_lists([5, 2, 9], [-1.0, -2.0, -0.1], [[(5, -1.0)], [(2, -2.0)], [(9, -0.1)]], 1)
    ids, *_ = kd_sample(encode_logprobs(lp), [1], KDRows(2, 49157, "raw"), 1, "row 0")
    assert ids == [1, 5, 2, 9]


def test_packed_kd_loss_equals_per_sample(self_kept, tiny_smol, tmp_path):
    tok = loop.release_tokenizer_for(str(tiny_smol), STUDENT)
    build_tokens(
        self_kept, tok, 128, "truncate", tmp_path / "tokens", "k", KDRows(2, tok.eos_token_id, "raw")
    )
    data = load_tokens(tmp_path / "tokens")
    net, _ = prepared_student(tiny_smol)
    fn = kd_loss(KDSpec(alpha=0.3, temperature=2.0, divergence="jsd", beta=0.3))

    def loss(indices):
        batch = {**collate_packed([data.sample(i) for i in indices]), **teacher_batch(data, indices)}
        total, parts = fn(net, net.lm_head, batch, 7, False)
        return torch.stack([total, parts["ce"], parts["kd"]])

    together = loss([0, 1, 2, 3])
    apart = sum(loss([i]) for i in range(4))
    torch.testing.assert_close(together, apart, rtol=1e-5, atol=1e-5)
    assert together[2] > 0  # JSD at τ = 2 of a self-distilled pair is not exactly 0 only through fp16 rows


def test_self_distillation_starts_at_zero_and_records_vocab(self_kept, tiny_smol, tmp_path):
    """student == teacher: the distillation term at step 1 (before any update) is < 1e-3 per token; the manifest
    holds the objective, K, α, τ, D, the teacher and both vocabulary hashes."""
    recipe = kd_recipe(tiny_smol, str(tiny_smol))
    out = tmp_path / "train"
    manifest = loop.train(recipe, self_kept, out)
    rows = metrics(out)
    assert len(rows) == 2 and rows[0]["kd"] < 1e-3
    assert rows[0]["ce"] > 1.0  # the CE on the sampled ids is not the thing that is ~0
    assert rows[0]["loss"] == pytest.approx(0.5 * rows[0]["ce"] + 0.5 * rows[0]["kd"], rel=1e-5)
    m = manifest.metrics
    assert (
        m["objective"] == "kd" and m["kd_k"] == K and m["kd_alpha"] == 0.5 and m["kd_divergence"] == "forward"
    )
    assert m["teacher"] == str(tiny_smol) and m["kd_temperature"] == 1.0
    from distill.models import load_tokenizer
    from distill.vocab_identity import vocab_hash

    assert m["teacher_vocab"] == vocab_hash(load_tokenizer(str(tiny_smol)))
    assert m["student_vocab"] == vocab_hash(loop.release_tokenizer_for(str(tiny_smol), STUDENT))
    assert m["teacher_vocab"] != m["student_vocab"]  # the release appends the R1 tokens
    assert (out / "final" / "model.safetensors").exists()


def run_cli(tmp_path: Path, data: Path, sets: list[str]) -> tuple[int, Path]:
    """python -m distill.train.loop RECIPE --data DIR --out OUT: (exit code, out)."""
    recipe_path = tmp_path / "r.yaml"
    recipe_path.write_text(f"name: bad\nstudent: {STUDENT}\n")
    out = tmp_path / "train"
    with pytest.raises(SystemExit) as exit_info:
        loop.main(
            [str(recipe_path), "--data", str(data), "--out", str(out), *sum((["--set", s] for s in sets), [])]
        )
        raise SystemExit(0)
    return exit_info.value.code, out


def nothing_written(out: Path) -> bool:
    return (
        not (out / "manifest.json").exists()
        and not (out / "final").exists()
        and not list(out.glob("*tokens*"))
    )


def test_kd_on_shards_without_logprobs_is_one_error(tiny_smol, tmp_path, capsys):
    rows = [{"messages": [{"role": "user", "content": p}], "reasoning": "", "answer": "4"} for p in PROBLEMS]
    data = make_curate(tmp_path / "curate", rows)
    sets = [
        "train.objective=kd",
        f"train.model={tiny_smol}",
        f"train.teacher={tiny_smol}",
        "train.max_steps=1",
    ]
    code, out = run_cli(tmp_path, data, sets)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: ") and "part-00000.parquet" in err
    assert "teacher_top_ids" in err and "generate.logprobs" in err
    assert nothing_written(out)


def test_kd_row_without_logprobs_is_one_error(self_kept, tiny_smol, tmp_path, capsys):
    import pyarrow.parquet as pq

    rows = pq.read_table(self_kept / "kept" / "part-00000.parquet").to_pylist()
    rows[2].update(
        dict.fromkeys(
            ["completion_token_ids", "teacher_token_logprobs", "teacher_top_ids", "teacher_top_logprobs"]
        )
    )
    data = make_curate(tmp_path / "curate", rows)
    code, out = run_cli(
        tmp_path, data, ["train.objective=kd", f"train.model={tiny_smol}", f"train.teacher={tiny_smol}"]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "row 2" in err and "no teacher log-probs" in err
    assert nothing_written(out)


def test_vocabulary_mismatch_stops_before_training(self_kept, tiny_smol, tmp_path, capsys):
    """A teacher on another vocabulary (Qwen2.5's): one line naming both tokenizers and the first differing id."""
    from distill.vocab import base_tokenizer

    qwen = tmp_path / "qwen-tok"
    base_tokenizer("qwen2").save_pretrained(qwen)
    code, out = run_cli(
        tmp_path, self_kept, ["train.objective=kd", f"train.model={tiny_smol}", f"train.teacher={qwen}"]
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "vocabularies differ" in err and str(qwen) in err and STUDENT in err and "id " in err
    assert nothing_written(out)


def test_unknown_objective_is_one_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\n")
    with pytest.raises(DistillError, match="objective"):
        load_recipe(path, ["train.objective=dpo"])


def test_kd_target_sampled_caches_each_rows_sampling_distribution():
    """kd.target: sampled trains toward the distribution the row was drawn from: its `sampling` field (as
    generate writes it: temperature 0.6, top_p 0.95) applied to the stored top-K; raw keeps them as stored; a row
    without temperature in `sampling` is one line naming the row and the field."""
    lp = from_lists([5, 9], [-0.5, -0.1], [[(5, -0.5), (9, -1.0), (4, -3.8)], [(9, -0.1), (5, -2.4)]], 3)
    row = {"sampling": json.dumps({"n": 4, "seed": 0, "temperature": 0.6, "top_p": 0.95})} | encode_logprobs(
        lp
    )
    _, _, _, raw = kd_sample(row, [1], KDRows(2, 49157, "raw"), 3, "r.parquet: row 3")
    _, _, _, sampled = kd_sample(row, [1], KDRows(2, 49157, "sampled"), 3, "r.parquet: row 3")
    np.testing.assert_allclose(raw, decode_logprobs(row).top_logprobs)
    np.testing.assert_allclose(sampled, as_sampled(decode_logprobs(row).top_logprobs, 0.6, 0.95))
    assert np.exp(sampled[0, :2]).sum() == pytest.approx(1.0, abs=1e-5) and np.isneginf(sampled[0, 2])
    with pytest.raises(
        DistillError, match=r"^r.parquet: row 3: field 'sampling' has no temperature and top_p"
    ):
        kd_sample(
            {**row, "sampling": json.dumps({"n": 4})}, [1], KDRows(2, 49157, "sampled"), 3, "r.parquet: row 3"
        )
