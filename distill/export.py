"""`distill export RUN_DIR --format messages|sharegpt`: curate's kept/ rows as a standard chat dataset (Parquet).

  messages  `messages: [{role, content}]` (system/user turns as sent, then the assistant): what TRL's SFTTrainer,
            axolotl's `type: chat_template` and LLaMA-Factory's sharegpt loader with role/content tags read as is
  sharegpt  `conversations: [{from: human|gpt, value}]` plus a `system` column: LLaMA-Factory's sharegpt default
            tags, axolotl's sharegpt-style mapping
The assistant turn is R1's training text: "<think>\\n" + reasoning + "\\n</think>\\n\\n" + answer. Every row keeps
prompt_id, domain, source and license. Files: train-NNNNN-of-NNNNN.parquet (what `datasets` reads as the
train split) and a README.md; the folder appears whole or not at all (artifacts.atomic_dir).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.artifacts import atomic_dir, atomic_write_text, read_manifest
from distill.errors import DistillError
from distill.release import END_THINK, THINK

FORMATS = ("messages", "sharegpt")
KEPT_COLUMNS = ("prompt_id", "domain", "source", "license", "messages", "reasoning", "answer")
SHAREGPT_FROM = {"user": "human", "assistant": "gpt"}


def assistant_text(reasoning: str | None, answer: str | None) -> str:
    return f"{THINK}\n{reasoning or ''}\n{END_THINK}\n\n{answer or ''}"


def chat(row: dict[str, Any]) -> list[dict[str, str]]:
    """The chat as sent (system and user turns), then the assistant's R1 training text."""
    sent = [{"role": m["role"], "content": m["content"]} for m in row["messages"] if m["role"] != "assistant"]
    return [*sent, {"role": "assistant", "content": assistant_text(row["reasoning"], row["answer"])}]


def to_messages(row: dict[str, Any]) -> dict[str, Any]:
    return {"messages": chat(row)}


def to_sharegpt(row: dict[str, Any]) -> dict[str, Any]:
    turns = chat(row)
    system = "\n\n".join(t["content"] for t in turns if t["role"] == "system")
    talk = [{"from": SHAREGPT_FROM[t["role"]], "value": t["content"]} for t in turns if t["role"] != "system"]
    return {"conversations": talk, "system": system}


def schema(fmt: str):
    import pyarrow as pa

    meta = [(name, pa.string()) for name in ("prompt_id", "domain", "source", "license")]
    if fmt == "messages":
        turn = pa.struct([("role", pa.string()), ("content", pa.string())])
        return pa.schema([("messages", pa.list_(turn)), *meta])
    turn = pa.struct([("from", pa.string()), ("value", pa.string())])
    return pa.schema([("conversations", pa.list_(turn)), ("system", pa.string()), *meta])


def kept_shards(run_dir: Path) -> list[Path]:
    curate = Path(run_dir) / "curate"
    if read_manifest(curate) is None:
        raise DistillError(f"{curate}: no manifest.json (run `distill curate` first)")
    shards = sorted((curate / "kept").glob("part-*.parquet"))
    if not shards:
        raise DistillError(f"{curate}/kept: no rows were kept; nothing to export")
    return shards


def export(run_dir: Path, fmt: str, out: Path | None = None) -> Path:
    """Write the export folder (default RUN_DIR/export/<fmt>); returns it."""
    import pyarrow.parquet as pq

    if fmt not in FORMATS:
        raise DistillError(f"--format: unknown format '{fmt}' (one of: {', '.join(FORMATS)})")
    shards = kept_shards(run_dir)
    out = Path(out) if out else Path(run_dir) / "export" / fmt
    convert = to_messages if fmt == "messages" else to_sharegpt
    rows = 0
    with atomic_dir(out) as tmp:
        for i, shard in enumerate(shards):
            kept = pq.read_table(shard, columns=list(KEPT_COLUMNS)).to_pylist()
            table = [{**convert(r), **{k: r[k] for k in KEPT_COLUMNS[:4]}} for r in kept]
            pq.write_table(
                pa_table(table, fmt), tmp / f"train-{i:05d}-of-{len(shards):05d}.parquet", compression="zstd"
            )
            rows += len(table)
        atomic_write_text(tmp / "README.md", card(fmt, rows, Path(run_dir).name))
    return out


def pa_table(rows: list[dict[str, Any]], fmt: str):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=schema(fmt))


def card(fmt: str, rows: int, name: str) -> str:
    column = "messages" if fmt == "messages" else "conversations"
    return (
        f"# {name}: curated R1 traces ({fmt})\n\n{rows} rows; column `{column}`, assistant turns in R1's training "
        f"form ({THINK} reasoning {END_THINK} answer); prompt_id, domain, source, license per row.\n\n"
        '```python\nfrom datasets import load_dataset\nds = load_dataset("parquet", data_files="train-*.parquet", '
        'split="train")\n```\n'
    )
