"""distill export: a curated run (public traces imported, then curate's real graders) as a chat dataset that
`datasets` loads and a chat template renders, in both formats; bad input exits 2 with nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.config import recipe_from_dict
from distill.curate.run import curate
from distill.errors import DistillError
from distill.export import export
from distill.generate.run import generate
from distill.release import END_THINK, THINK


@pytest.fixture(scope="module")
def curated_run(tmp_path_factory) -> Path:
    """Two LIMO-layout problems, one answered right and one wrong; curate grades them (math-verify)."""
    tmp = tmp_path_factory.mktemp("export")
    rows = [
        {"question": "What is 2 + 2?", "solution": "Two plus two.\n\n\\boxed{4}", "answer": "4"},
        {"question": "What is 3 + 3?", "solution": "Three and three.\n\n\\boxed{7}", "answer": "6"},
    ]
    data = tmp / "limo.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = recipe_from_dict(
        {
            "name": "exp",
            "run_dir": str(tmp / "run"),
            "generate": {"source": "dataset", "datasets": [{"adapter": "limo", "path": str(data)}]},
            "curate": {"decontaminate": {"benchmarks": []}, "verify": {"workers": 1}},
        }
    )
    run = recipe.run_path()
    generate(recipe, None, run / "generate")
    manifest = curate(recipe, run / "generate", run / "curate")
    assert manifest.rows_out == 1 and manifest.dropped == {"wrong": 1}
    return run


def load(folder: Path):
    import datasets

    return datasets.load_dataset("parquet", data_files=str(folder / "train-*.parquet"), split="train")


def test_messages_loads_and_renders(curated_run, smollm2_path):
    from transformers import AutoTokenizer

    out = export(curated_run, "messages")
    ds = load(out)
    assert ds.num_rows == 1 and set(ds.column_names) == {
        "messages",
        "prompt_id",
        "domain",
        "source",
        "license",
    }
    row = ds[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["content"] == f"{THINK}\nTwo plus two.\n{END_THINK}\n\n\\boxed{{4}}"
    assert row["prompt_id"].startswith("limo/") and row["license"] == "Apache-2.0"
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
    assert "<|im_start|>user\nWhat is 2 + 2?<|im_end|>" in text
    assert f"<|im_start|>assistant\n{THINK}\nTwo plus two.\n{END_THINK}\n\n\\boxed{{4}}<|im_end|>" in text
    assert (out / "README.md").is_file()


def test_sharegpt_loads_and_renders(curated_run, smollm2_path):
    from transformers import AutoTokenizer

    ds = load(export(curated_run, "sharegpt"))
    row = ds[0]
    assert [t["from"] for t in row["conversations"]] == ["human", "gpt"] and row["system"] == ""
    # LLaMA-Factory's sharegpt reader: from/value with human/gpt tags -> role/content
    roles = {"human": "user", "gpt": "assistant"}
    chat = [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]
    text = AutoTokenizer.from_pretrained(smollm2_path).apply_chat_template(chat, tokenize=False)
    assert f"assistant\n{THINK}\nTwo plus two." in text


def test_bad_input(tmp_path, curated_run):
    with pytest.raises(DistillError, match="--format: unknown format 'alpaca'"):
        export(curated_run, "alpaca", tmp_path / "x")
    with pytest.raises(DistillError, match=r"curate: no manifest.json \(run `distill curate` first\)"):
        export(tmp_path / "nowhere", "messages")
    assert not (tmp_path / "x").exists()
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "export", str(curated_run), "--format", "alpaca"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 2 and "unknown format 'alpaca'" in done.stderr
