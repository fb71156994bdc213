"""distill push against a loopback Hub that records the real huggingface_hub client's requests (never the Hub)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cli.main import app
from distill.artifacts import finish_manifest, read_manifest, start_manifest, write_parquet
from distill.config import recipe_from_dict
from distill.errors import DistillError
from distill.patch import patch_checkpoint
from distill.push import eval_table, push_stage
from distill.report import render_table

FAKE_TOKEN = "hf_distillTESTtoken0123456789"


class FakeHub(BaseHTTPRequestHandler):
    """Enough of the Hub API for create_repo / create_branch / create_commit with LFS uploads."""

    requests: list[dict] = []
    lfs: dict[str, bytes] = {}
    commits: dict[str, list[dict]] = {}

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "auth": self.headers.get("Authorization"),
                "body": body,
            }
        )
        return body

    def do_PUT(self):  # LFS "basic" transfer: the object's bytes
        body = self._record()
        oid = self.path.rsplit("/", 1)[-1]
        assert hashlib.sha256(body).hexdigest() == oid
        self.lfs[oid] = body
        self._reply({})

    def do_POST(self):
        body = self._record()
        path = self.path.split("?")[0]
        base = f"http://{self.headers['Host']}"
        if path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            prefix = "datasets/" if req.get("type") == "dataset" else ""
            return self._reply({"url": f"{base}/{prefix}{repo}", "name": repo, "id": repo})
        if path == "/api/validate-yaml":  # the client checks README.md front matter before committing
            content = json.loads(body)["content"]
            meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else None
            ok = isinstance(meta, dict)
            return self._reply(
                {"errors": [] if ok else [{"message": "no YAML metadata"}]}, 200 if ok else 400
            )
        if "/branch/" in path or path == "/lfs-verify":
            return self._reply({})
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return self._reply(
                {
                    "files": [
                        {
                            "path": f["path"],
                            "shouldIgnore": False,
                            "oid": None,
                            "uploadMode": "lfs"
                            if f["path"].endswith((".safetensors", ".parquet"))
                            else "regular",
                        }
                        for f in files
                    ]
                }
            )
        if path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(body)["objects"]
            return self._reply(
                {
                    "transfer": "basic",
                    "objects": [
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "authenticated": True,
                            "actions": {
                                "upload": {"href": f"{base}/lfs-upload/{o['oid']}"},
                                "verify": {"href": f"{base}/lfs-verify"},
                            },
                        }
                        for o in objects
                    ],
                }
            )
        if "/commit/" in path:
            lines = [json.loads(line) for line in body.decode().splitlines() if line]
            repo = path.split("/api/")[1].split("/commit/")[0].split("/", 1)[1]
            self.commits[repo] = lines
            oid = hashlib.sha1(body).hexdigest()
            return self._reply(
                {"commitUrl": f"{base}/{repo}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
            )
        self._reply({"error": f"unexpected {path}"}, status=404)


DECONTAM = {  # curate's report (distill.curate.decontam.report), as the model card reads it
    "ngram": 8,
    "checked": 10,
    "contaminated": 3,
    "boilerplate_ngrams_ignored": 0,
    "template_ngrams_dropped": 0,
    "benchmarks": {
        "math500": {
            "items": 500,
            "sha256": "1820332a",
            "hits": 3,
            "examples": [{"id": "p7", "item": "41", "ngram": "the sum of the roots of"}],
        }
    },
}


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub.constants as hf_constants

    FakeHub.requests, FakeHub.lfs, FakeHub.commits = [], {}, {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    # conftest sets HF_HUB_OFFLINE=1 for the suite; the loopback Hub is the one thing allowed here. Xet
    # storage needs a CAS server: the test speaks the plain LFS protocol the client falls back to.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    yield FakeHub
    server.shutdown()


RESULTS = {
    "model": "runs/x/patch/release",
    "benchmarks": {
        "aime24": {"pass@1": 0.5, "pass@1_se": 0.02, "cons@k": 0.8, "k": 64, "n": 30},
        "math500": {"pass@1": 0.9123, "pass@1_se": 0.004, "cons@k": 0.93, "k": 4, "n": 500},
    },
}


# train's effective config as train's manifest records it: different from what the recipe of _recipe() would give
# (qwen-7b's lr 4e-05), so the card provably shows what train used
TRAIN_CONFIG = {
    "lr": 2e-05,
    "epochs": 3.0,
    "max_steps": None,
    "max_length": 4096,
    "packing": True,
    "lr_scheduler": "linear",
    "warmup_ratio": 0.1,
    "weight_decay": 0.01,
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
}


@pytest.fixture(scope="module")
def run_dir(tiny_qwen2, tmp_path_factory) -> Path:
    """A finished run (generate/curate/train/patch/eval manifests, curated shards, a release checkpoint)."""
    run = tmp_path_factory.mktemp("run") / "r"
    for stage, rows_in, rows_out, dropped, metrics in [
        ("generate", 10, 40, {}, {"tokens": 5000}),
        (
            "curate",
            40,
            12,
            {"wrong": 20, "decontaminated": 3, "near_dup": 5},
            {"decontamination": DECONTAM},
        ),
        ("train", 12, 12, {}, {"steps": 3, "final_loss": 1.25, "hardware": "2x cpu"}),
        ("eval", 530, 530, {}, {}),
    ]:
        (run / stage).mkdir(parents=True)
        m = start_manifest(stage, "cafe", {})
        m.rows_in, m.rows_out, m.dropped, m.metrics = rows_in, rows_out, dropped, metrics
        m.config = TRAIN_CONFIG if stage == "train" else None
        finish_manifest(run / stage, m)
    write_parquet(
        [{"prompt_id": "p1", "problem": "1+1?", "answer": "2"}],
        run / "curate" / "kept" / "part-00000.parquet",
    )
    (run / "curate" / "card.md").write_text("---\nlicense: mit\n---\n# traces card\n")
    (run / "eval" / "results.json").write_text(json.dumps(RESULTS))
    patch_checkpoint(tiny_qwen2, run / "patch" / "release", "qwen-7b")
    finish_manifest(run / "patch", start_manifest("patch", "beef", {}))
    return run


def _recipe(run: Path, **push):
    return recipe_from_dict(
        {
            "name": "r1-repro",
            "student": "qwen-7b",
            "run_dir": str(run),
            "push": {"repo": "my-org/R1-Distill-Qwen-7B-repro", **push},
        }
    )


def test_push_uploads_release_card_and_dataset(run_dir, tmp_path, fake_hub):
    recipe = _recipe(run_dir, push_dataset=True, revision="v1", private=True)
    manifest = push_stage(recipe, run_dir, tmp_path / "push")

    reqs = fake_hub.requests
    creates = [json.loads(r["body"]) for r in reqs if r["path"] == "/api/repos/create"]
    assert [(c["organization"], c["name"], c.get("type"), c["visibility"]) for c in creates] == [
        ("my-org", "R1-Distill-Qwen-7B-repro", "model", "private"),
        ("my-org", "R1-Distill-Qwen-7B-repro-data", "dataset", "private"),
    ]
    assert any("/branch/v1" in r["path"] for r in reqs)
    assert all(r["auth"] == f"Bearer {FAKE_TOKEN}" for r in reqs if r["path"].startswith("/api/"))
    # one commit per repo, on the branch, with every release file + README; safetensors went through LFS
    model_commit = fake_hub.commits["my-org/R1-Distill-Qwen-7B-repro"]
    paths = {line["value"]["path"] for line in model_commit if line["key"] in ("file", "lfsFile")}
    release_files = {p.name for p in (run_dir / "patch" / "release").iterdir()}
    assert paths == release_files | {"README.md"}
    lfs = {line["value"]["path"]: line["value"]["oid"] for line in model_commit if line["key"] == "lfsFile"}
    weights = (run_dir / "patch" / "release" / "model.safetensors").read_bytes()
    assert fake_hub.lfs[lfs["model.safetensors"]] == weights
    readme = next(
        line["value"]
        for line in model_commit
        if line["key"] == "file" and line["value"]["path"] == "README.md"
    )
    card = base64.b64decode(readme["content"]).decode()
    assert card == (tmp_path / "push" / "model_card.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["datasets"] == [
        "my-org/R1-Distill-Qwen-7B-repro-data",
        "openai/gsm8k",
    ]
    assert any("/commit/v1" in r["path"] for r in reqs)
    data_commit = fake_hub.commits["my-org/R1-Distill-Qwen-7B-repro-data"]
    assert {line["value"]["path"] for line in data_commit if line["key"] != "header"} == {
        "data/part-00000.parquet",
        "README.md",
    }
    assert manifest.metrics["commits"]["my-org/R1-Distill-Qwen-7B-repro"]["commit"]
    # the token reaches the Hub in the Authorization header only: never the card, manifest or payloads
    saved = (tmp_path / "push" / "manifest.json").read_text()
    assert FAKE_TOKEN not in card and FAKE_TOKEN not in saved
    assert all(FAKE_TOKEN.encode() not in r["body"] for r in reqs)


def test_model_card_content(run_dir, tmp_path, fake_hub):
    push_stage(_recipe(run_dir), run_dir, tmp_path / "push", dry_run=True)
    card = (tmp_path / "push" / "model_card.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front == {
        "base_model": "Qwen/Qwen2.5-Math-7B",
        "license": "mit",
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "datasets": ["openai/gsm8k"],  # the prompt source's Hub id (no traces pushed)
        "tags": ["distill", "reasoning", "r1-distill", "deepseek-r1", "qwen2"],
    }
    for expected in [
        "temperature 0.6, top-p 0.95, n=4",  # teacher sampling
        "40 traces -> 12 kept (30.0% kept)",  # data counts and yield
        "| wrong | 20 (50.0%) |",  # filter yields
        "Decontamination: 8-gram",
        "8-gram overlap of 10 prompts: 3 contaminated",
        '| math500 | 500 | 1820332a | 3 | p7 ~ 41: "the sum of the roots of" |',
        "| learning rate | 2e-05 |",  # train's manifest, not the recipe's student default (4e-05)
        "| max length (tokens) | 4096 |",
        "| schedule | linear, warmup 10% |",
        "| LoRA | r=8 |",
        "| run: final_loss | 1.25 |",
        "| run: hardware | 2x cpu |",
        "| Model | AIME 2024 pass@1 | AIME 2024 cons@64 | MATH-500 pass@1 | MATH-500 cons@4 |",
        "| R1-Distill-Qwen-7B-repro (this model) | 50.0 ± 2.0 | 80.0 | 91.2 ± 0.4 | 93.0 |",
        "| deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (reported) | 55.5 | 83.3 | 92.8 | - |",
        "no system prompt",
        "vllm serve my-org/R1-Distill-Qwen-7B-repro",
        "| curate | cafe |",  # provenance
    ]:
        assert expected in card, expected
    assert not fake_hub.requests  # dry run: no network
    assert not (tmp_path / "push" / "manifest.json").exists()


@pytest.mark.parametrize(
    "results, expected",
    [
        (None, "Not evaluated yet"),
        ({"benchmarks": {}}, "Not evaluated yet"),
        (
            {"benchmarks": {"gsm8k": {"pass@1": 0.25, "k": 1, "n": 8}}},
            "| m (this model) | 25.0 |",
        ),  # no SE, k=1
        (
            {
                "benchmarks": {"math500": {"pass@1": 0.5, "pass@1_se": 0.1, "k": 4, "cons@k": 0.6, "n": 8}},
                "baseline": {
                    "model": "/m/Qwen2.5-Math-7B",
                    "benchmarks": {"math500": {"pass@1": 0.25, "k": 4}},
                },
            },
            "| Qwen2.5-Math-7B (before distillation) | 25.0 | - |\n| deepseek-ai/DeepSeek-R1-Distill-Qwen-7B (reported) | 92.8 |",
        ),  # the base row, next to ours and DeepSeek's
    ],
)
def test_eval_table_tolerates_partial_results(results, expected):
    assert expected in eval_table(results, "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "m")


def test_eval_table_is_evals_table_plus_deepseeks_row_and_the_verdict():
    """One renderer: the card's table is eval's table.md format, DeepSeek's row built as results too."""
    results = {
        **RESULTS,
        "baseline": {
            "model": "/m/base",
            "benchmarks": {"aime24": {**RESULTS["benchmarks"]["aime24"], "pass@1": 0.1}},
        },
        "verdict": {"line": "held-out pass@1: before 10.0 ± 2.0, after 50.0 ± 2.0, gain 40.0 ± 1.0 (paired)"},
    }
    table = eval_table(results, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "m")
    reported = {"aime24": {"pass@1": 0.289, "cons@k": 0.527, "k": 64}, "math500": {"pass@1": 0.839}}
    expected = render_table(
        [
            ("m (this model)", RESULTS["benchmarks"]),
            ("base (before distillation)", results["baseline"]["benchmarks"]),
            ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (reported)", reported),
        ]
    )
    assert table == expected + "\n" + results["verdict"]["line"] + "\n"
    assert "| base (before distillation) | 10.0 ± 2.0 | 80.0 | - | - |" in table  # no math500 for the base
    assert "| deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (reported) | 28.9 | 52.7 | 83.9 | - |" in table
    assert "AIME 2024: k=64, n=30, MATH-500: k=4, n=500." in table


def test_eval_table_without_reported_numbers_has_no_reported_row():
    gsm8k = {"benchmarks": {"gsm8k:test": {"pass@1": 0.5, "pass@1_se": 0.1, "k": 2, "cons@k": 0.5, "n": 4}}}
    for release in ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        table = eval_table(gsm8k, release, "m")
        assert "(reported)" not in table and "| m (this model) | 50.0 ± 10.0 | 50.0 |" in table


def test_card_numbers_come_from_finished_stages_only(run_dir, tmp_path, fake_hub):
    """results.json of an eval that did not finish (no manifest) is not shown; nor a hyper-parameter train's
    manifest did not record."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "eval" / "manifest.json").unlink()
    m = read_manifest(run / "train")
    m.config = None
    (run / "train" / "manifest.json").write_text(m.to_json())
    push_stage(_recipe(run), run, tmp_path / "push", dry_run=True)
    card = (tmp_path / "push" / "model_card.md").read_text()
    assert "Not evaluated yet" in card and "50.0 ± 2.0" not in card
    assert "| hyper-parameters | not recorded in train's manifest |" in card and "learning rate" not in card
    assert "| run: final_loss | 1.25 |" in card


def test_cli_dry_run_lists_files_without_network(run_dir, tmp_path, fake_hub):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r1-repro\nstudent: qwen-7b\nrun_dir: {run_dir}\n")
    result = CliRunner().invoke(app, ["push", str(recipe), "--repo", "org/name", "--dry-run"])
    assert result.exit_code == 0, result.output
    for name in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "config.json",
        "README.md",
        "## Evaluation",
    ]:
        assert name in result.output
    assert FAKE_TOKEN not in result.output
    assert not fake_hub.requests


def test_push_without_token_uploads_nothing(run_dir, tmp_path, fake_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached token either
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    with pytest.raises(DistillError, match="no Hugging Face token"):
        push_stage(_recipe(run_dir), run_dir, tmp_path / "push")
    assert not fake_hub.requests


@pytest.mark.parametrize(
    "push, match",
    [
        ({"repo": None}, "push.repo is not set"),
        ({"repo": "not-a-repo-id"}, "expected a Hub repo id"),
    ],
)
def test_push_bad_repo(run_dir, tmp_path, fake_hub, push, match):
    recipe = recipe_from_dict({"name": "x", "student": "qwen-7b", "push": push})
    with pytest.raises(DistillError, match=match):
        push_stage(recipe, run_dir, tmp_path / "push")
    assert not fake_hub.requests


def test_push_without_release(run_dir, tmp_path, fake_hub):
    run = tmp_path / "run"
    shutil.copytree(run_dir / "eval", run / "eval")
    with pytest.raises(DistillError, match="no release checkpoint"):
        push_stage(_recipe(run), run, tmp_path / "push")
    assert not fake_hub.requests


def test_card_records_a_logit_objectives_provenance():
    """kd: objective, teacher, K, α, τ, D and both vocabulary hashes, from train's manifest (config and metrics)."""
    from distill.push import _training_section

    kd = {"alpha": 0.3, "temperature": 2.0, "divergence": "jsd", "beta": 0.4}
    config = {**TRAIN_CONFIG, "objective": "kd", "teacher": "t/32B", "kd": kd}
    metrics = {
        "objective": "kd",
        "teacher": "t/32B",
        "kd_k": 20,
        "teacher_vocab": "aa11",
        "student_vocab": "aa11",
    }
    section = _training_section(
        {"train": {"config": config, "metrics": metrics, "seconds": 1, "versions": {}}}
    )
    for row in ["| objective | kd |", "| teacher | t/32B |", "| K (teacher top-K) | 20 |", "| α | 0.3 |"]:
        assert row in section, row
    for row in ["| τ | 2.0 |", "| D | jsd (β=0.4) |", "| teacher vocabulary hash | aa11 |"]:
        assert row in section, row
