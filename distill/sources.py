"""Public R1 trace sets as traces: adapters by name (each set's real layout), a column mapping, streaming, mixtures.

An adapter turns one record of a set into one or more traces (OpenR1-Math holds 2-4 generations per problem).
A trace is a flat dict: the prompt row's fields (PROMPT_FIELDS) plus sample_index, user (the chat's user turn),
completion (the raw assistant text), reasoning, answer, finish_reason, verified (the set's own verdict: True,
False, or None when it records none), completion_tokens and teacher. generate.source: dataset writes them as
generate shards (distill/generate/run.py), so curate -> train -> eval run unchanged. The column-wise path keeps
reasoning and answer as byte spans of the completion (trace_spans), so a shard holds the text once; curate reads
shards through trace_texts(), which slices them back out.

Records stream: Parquet a row group at a time, JSONL line by line (.jsonl.gz / .jsonl.zst decompressed as they
stream), the Hub with streaming=True, read READ_AHEAD batches ahead on a thread; memory is a few batches, not
the set. A local copy is a file or a folder as snapshot_download leaves it, read by its card's configs (`subset`).
A mixture takes each set's rows with a stable per-row draw (weight: the share kept, as open-r1's
dataset_mixture) up to its limit, and counts what it read and took per set: the realised mix.
Layouts, as their dataset cards give them:
  openr1-math          problem, answer, uuid, generations[], correctness_math_verify[], correctness_llama[],
                       is_reasoning_complete[], finish_reasons[] (may be null)
  mixture-of-thoughts  messages[{role, content}] (assistant: <think>...</think>answer), num_tokens, source
  openthoughts         system, conversations[{from: user|assistant, value}] with <|begin_of_thought|> ...
  bespoke-stratos      as openthoughts (Sky-T1's format)
  openthoughts3        difficulty, source, domain, conversations[{from: human|gpt, value}] (<think> tags)
  s1k                  question, solution, deepseek_thinking_trajectory, deepseek_attempt, cot_type,
                       deepseek_grade (Yes|No, when present)
  limo                 question, solution (the whole reasoning, ending in the boxed answer), answer
  am-r1                messages[{role, content, info}] (user info: reference_answer; assistant info:
                       think_content, answer_content); am_0.5M.jsonl.zst, am_0.9M.jsonl.zst
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.config import DatasetSource
from distill.data import content_id
from distill.errors import DistillError
from distill.release import END_THINK, THINK

CHARS_PER_TOKEN = 4  # estimate when a set gives no token count (R1's English traces: ~4 chars per token)
BATCH_ROWS = 1024  # records per Parquet read: memory is one batch
READ_AHEAD = 2  # batches read ahead on a thread (~25 MB each at R1 lengths) while the last ones are split
END = object()  # the end of a read_ahead stream
R1 = "deepseek-ai/DeepSeek-R1"
OT_THOUGHT = ("<|begin_of_thought|>", "<|end_of_thought|>")  # Sky-T1 / OpenThoughts / Bespoke-Stratos tags
OT_SOLUTION = ("<|begin_of_solution|>", "<|end_of_solution|>")
MOT_SOURCES = (("codeforces", "code"), ("math", "math"))  # Mixture-of-Thoughts `source` -> domain
DOMAIN_WORDS = {"math": "math", "code": "code", "science": "general", "puzzle": "general"}


@dataclass(frozen=True)
class Record:
    """One record of one set, and where it is (the set, the file, its 1-based row): every error names them."""

    data: dict[str, Any]
    dataset: str
    row: int  # 1-based, within `file` when it is known
    file: str | None = None  # the local file (or hub id) the record came from

    def where(self, column: str) -> str:
        at = f": {self.file}" if self.file else ""
        return f"dataset '{self.dataset}'{at}: row {self.row}: column '{column}'"

    def get(self, column: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        """The column's value, checked: missing or of another type is a DistillError naming set, column, row."""
        if column not in self.data or (self.data[column] is None and not optional):
            raise DistillError(f"{self.where(column)} is missing")
        value = self.data[column]
        if value is not None and not of_kind(value, kind):
            raise DistillError(
                f"{self.where(column)}: expected {kind_name(kind)}, got {type(value).__name__}"
            )
        return value

    def text(self, column: str) -> str:
        return self.get(column, str)

    def parallel(self, column: str, kind: type, n: int, optional: bool = False, nulls: bool = False) -> list:
        """A list with one value per generation (n of them), each of `kind` (or null where `nulls`): another
        length or a value of another type ("false" in a bool list) is a DistillError naming the item. A null
        column, where `optional`, is n nulls."""
        values = self.get(column, list, optional)
        if values is None:
            return [None] * n
        if len(values) != n:
            raise DistillError(f"{self.where(column)}: {len(values)} values for {n} generations")
        for j, value in enumerate(values):
            if not (of_kind(value, kind) or (nulls and value is None)):
                got = type(value).__name__
                raise DistillError(f"{self.where(column)}: item {j}: expected {kind_name(kind)}, got {got}")
        return values


def of_kind(value: Any, kind: type | tuple[type, ...]) -> bool:
    """isinstance, except that a bool is no int (True is an int to Python, not a token count to a set)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kind) and not (isinstance(value, bool) and bool not in kinds)


def kind_name(kind: type | tuple[type, ...]) -> str:
    return kind.__name__ if isinstance(kind, type) else "|".join(k.__name__ for k in kind)


Convert = Callable[[Record, DatasetSource], list[dict[str, Any]]]
Columnar = Callable[[Any, DatasetSource, "Adapter"], Any]

# A trace's fields, in order, and their Arrow types: the table every chunk of every set becomes.
TRACE_FIELDS = (
    ("prompt_id", "string"), ("domain", "string"), ("problem", "string"), ("reference", "string"),
    ("source", "string"), ("license", "string"), ("sample_index", "int64"), ("finish_reason", "string"),
    ("flags", "strings"), ("verified", "bool"), ("completion_tokens", "int64"), ("teacher", "string"),
    ("completion", "string"), ("reasoning", "string"), ("answer", "string"), ("trace_spans", "spans"),
)  # fmt: skip
# trace_spans: [reasoning start, end, answer start, end], UTF-8 byte offsets into the row's completion. The
# column-wise import sets them and leaves reasoning and answer null, so a shard stores the text once (as two
# copies it was half the import's CPU and twice its disk bytes); trace_texts() turns them back into text.
# What Python's str.strip() strips (every c with c.isspace()): Arrow's own trim knows a different set.
PY_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
PY_SPACE += "\u2028\u2029\u202f\u205f\u3000"
HEAD = 64  # characters of a completion's start searched for its leading whitespace and <think>
WINDOW = 256  # bytes of each end of the reasoning and the answer searched for the whitespace strip() takes


@dataclass(frozen=True)
class Adapter:
    name: str
    hub_id: str
    license: str
    domain: str  # default domain of its rows
    convert: Convert
    columnar: Columnar | None = None  # the same traces from a whole record batch, or None: use convert


def split_think(text: str) -> tuple[str, str, bool]:
    """R1's "<think>reasoning</think>answer" -> (reasoning, answer, well_formed)."""
    body = text.lstrip()
    body = body[len(THINK) :] if body.startswith(THINK) else body
    reasoning, closed, answer = body.partition(END_THINK)
    return reasoning.strip(), answer.strip(), bool(closed)


def between(text: str, tags: tuple[str, str]) -> str | None:
    start = text.find(tags[0])
    end = text.find(tags[1], start + 1)
    return text[start + len(tags[0]) : end].strip() if start >= 0 and end >= 0 else None


def trace(rec: Record, cfg: DatasetSource, adapter: Adapter, problem: str, **values: Any) -> dict[str, Any]:
    """A trace with the defaults filled in: id from the set (else a content hash), the adapter's domain."""
    completion = values.get("completion") or ""
    rid = values.pop("id", None)
    finish = values.pop("finish_reason", "stop")
    flags = ["truncated"] * (finish == "length") + ["malformed"] * values.pop("malformed", False)
    return {
        "prompt_id": f"{adapter.name}/{rid if rid is not None else content_id(problem)}",
        "domain": cfg.domain or values.pop("domain", None) or adapter.domain,
        "problem": problem,
        "reference": values.pop("reference", None),
        "source": f"{adapter.hub_id}" + (f":{cfg.subset}" if cfg.subset else ""),
        "license": adapter.license,
        "sample_index": values.pop("sample_index", 0),
        "finish_reason": finish,
        "flags": flags,
        "verified": values.pop("verified", None),
        "completion_tokens": values.pop("completion_tokens", None) or len(completion) // CHARS_PER_TOKEN,
        "teacher": values.pop("teacher", R1),
        **values,
    }


def think_trace(rec, cfg, adapter, problem: str, completion: str, **values) -> dict[str, Any]:
    """A trace from R1-style text; text without the closing tag is all reasoning, flagged malformed."""
    reasoning, answer, closed = split_think(completion)
    values["malformed"] = not closed
    return trace(
        rec, cfg, adapter, problem, completion=completion, reasoning=reasoning, answer=answer, **values
    )


# ---------------------------------------------------------------- the adapters


def turns(rec: Record, column: str, role_key: str, text_key: str) -> list[tuple[str, str]]:
    """[(role, text)] of a chat column, each turn checked."""
    out = []
    for i, turn in enumerate(rec.get(column, list)):
        if not isinstance(turn, dict) or not isinstance(turn.get(role_key), str):
            raise DistillError(f"{rec.where(column)}: turn {i} has no '{role_key}'")
        if not isinstance(turn.get(text_key), str):
            raise DistillError(f"{rec.where(column)}: turn {i} has no '{text_key}' text")
        out.append((turn[role_key], turn[text_key]))
    return out


def turn(rec: Record, chat: list[tuple[str, str]], column: str, roles: tuple[str, ...]) -> str:
    """The first turn of one of `roles` (the user's, the assistant's)."""
    for role, text in chat:
        if role in roles:
            return text
    raise DistillError(f"{rec.where(column)}: no '{roles[0]}' turn")


def openr1_math(rec: Record, cfg: DatasetSource, ad: Adapter) -> list[dict[str, Any]]:
    """One trace per generation; verified when math-verify or the Llama judge said correct (the card's rule),
    wrong when one said wrong and none correct, None when neither judged it. Every list runs parallel to
    generations, with the card's types (sequence: bool / string); correctness_llama and finish_reasons may be
    null (not judged, not recorded)."""
    problem, n = rec.text("problem"), len(rec.get("generations", list))
    gens = rec.parallel("generations", str, n)
    math_verify = rec.parallel("correctness_math_verify", bool, n, nulls=True)
    llama = rec.parallel("correctness_llama", bool, n, optional=True, nulls=True)
    complete = rec.parallel("is_reasoning_complete", bool, n)
    finish = rec.parallel("finish_reasons", str, n, optional=True)
    return [
        think_trace(
            rec, cfg, ad, problem, gen, id=rec.text("uuid"), reference=rec.text("answer"), sample_index=j,
            verified=either(math_verify[j], llama[j]),
            finish_reason=finish[j] or ("stop" if complete[j] else "length"),
        )
        for j, gen in enumerate(gens)
    ]  # fmt: skip


def either(*verdicts: bool | None) -> bool | None:
    """True when a judge said correct, False when one said wrong and none correct, None when none judged."""
    said = [v for v in verdicts if v is not None]
    return any(said) if said else None


def mixture_of_thoughts(rec: Record, cfg: DatasetSource, ad: Adapter) -> list[dict[str, Any]]:
    chat = turns(rec, "messages", "role", "content")
    origin = rec.text("source").lower()  # subset "all": the row's own source says its domain
    domain = DOMAIN_WORDS.get(cfg.subset or "") or next((d for w, d in MOT_SOURCES if w in origin), None)
    tokens = rec.get("num_tokens", int)
    problem, completion = turn(rec, chat, "messages", ("user",)), turn(rec, chat, "messages", ("assistant",))
    return [think_trace(rec, cfg, ad, problem, completion, domain=domain, completion_tokens=tokens)]


def openthoughts(rec: Record, cfg: DatasetSource, ad: Adapter) -> list[dict[str, Any]]:
    """Sky-T1 tags: the thought is the reasoning, the solution the answer; untagged text is malformed."""
    rec.get("system", str)
    chat = turns(rec, "conversations", "from", "value")
    problem = turn(rec, chat, "conversations", ("user", "human"))
    value = turn(rec, chat, "conversations", ("assistant", "gpt"))
    reasoning, answer = between(value, OT_THOUGHT), between(value, OT_SOLUTION)
    if reasoning is None or answer is None:
        raise DistillError(
            f"{rec.where('conversations')}: assistant turn lacks {OT_THOUGHT[0]} / {OT_SOLUTION[0]}"
        )
    return [trace(rec, cfg, ad, problem, completion=value, reasoning=reasoning, answer=answer)]


def openthoughts3(rec: Record, cfg: DatasetSource, ad: Adapter) -> list[dict[str, Any]]:
    chat = turns(rec, "conversations", "from", "value")
    problem = turn(rec, chat, "conversations", ("human", "user"))
    value = turn(rec, chat, "conversations", ("gpt", "assistant"))
    domain = DOMAIN_WORDS.get(rec.text("domain"), "general")
    return [think_trace(rec, cfg, ad, problem, value, domain=domain, teacher="Qwen/QwQ-32B")]


def s1k(rec: Record, cfg: DatasetSource, ad: Adapter) -> list[dict[str, Any]]:
    """s1K-1.1's deepseek_grade is "Yes" or "No" (the card); anything else is an error, not a "No"."""
    reasoning, answer = rec.text("deepseek_thinking_trajectory"), rec.text("deepseek_attempt")
    grade = rec.get("deepseek_grade", str, optional=True) if "deepseek_grade" in rec.data else None
    if grade is not None and grade.strip().lower() not in ("yes", "no"):
        raise DistillError(f"{rec.where('deepseek_grade')}: expected Yes or No, got {grade[:20]!r}")
    return [
        trace(
            rec, cfg, ad, rec.text("question"), reference=rec.text("solution"),
            completion=f"{reasoning}\n{END_THINK}\n\n{answer}", reasoning=reasoning, answer=answer,
            domain="math" if rec.text("cot_type") == "math" else "general",
            verified=None if grade is None else grade.strip().lower() == "yes",
        )
    ]  # fmt: skip


def limo(rec: Record, cfg: DatasetSource, ad: Adapter) -> list[dict[str, Any]]:
    """LIMO's solution is the whole chain ending in the boxed answer: its last paragraph is the answer."""
    solution = rec.text("solution").strip()
    reasoning, _, answer = solution.rpartition("\n\n")
    return [
        trace(
            rec, cfg, ad, rec.text("question"), reference=rec.text("answer"), completion=solution,
            reasoning=reasoning.strip() or solution, answer=answer.strip(),
        )
    ]  # fmt: skip


def am_r1(rec: Record, cfg: DatasetSource, ad: Adapter) -> list[dict[str, Any]]:
    """The card's unified format: the assistant's info splits its "<think>...</think> <answer>...</answer>"
    content into think_content and answer_content; the user's info may carry a reference_answer."""
    messages = rec.get("messages", list)
    chat = turns(rec, "messages", "role", "content")
    roles = [role for role, _ in chat]
    if "user" not in roles or "assistant" not in roles:
        raise DistillError(f"{rec.where('messages')}: needs a user and an assistant turn")
    user, bot = messages[roles.index("user")], messages[roles.index("assistant")]
    info_user, info = user.get("info"), bot.get("info")
    if info_user is not None and not isinstance(info_user, dict):
        raise DistillError(
            f"{rec.where('messages')}: user info is a {type(info_user).__name__}, not an object"
        )
    reference = (info_user or {}).get("reference_answer")
    if reference is not None and not isinstance(reference, str):
        raise DistillError(f"{rec.where('messages')}: user info.reference_answer is not text")
    if not isinstance(info, dict) or not isinstance(info.get("think_content"), str):
        raise DistillError(f"{rec.where('messages')}: assistant info.think_content is missing")
    if not isinstance(info.get("answer_content"), str):
        raise DistillError(f"{rec.where('messages')}: assistant info.answer_content is missing")
    return [
        trace(
            rec, cfg, ad, user["content"], reference=reference or None, completion=bot["content"],
            reasoning=info["think_content"].strip(), answer=info["answer_content"].strip(),
        )
    ]  # fmt: skip


MAPPED = ("problem", "reasoning", "answer", "completion", "reference", "prompt_id", "domain", "verified")


def mapped(rec: Record, cfg: DatasetSource, ad: Adapter) -> list[dict[str, Any]]:
    """Any other layout: `columns` names the problem and either reasoning + answer or an R1 completion."""
    col = cfg.columns
    problem = rec.text(col["problem"])
    extra = {"reference": rec.get(col["reference"], str, optional=True)} if "reference" in col else {}
    if "prompt_id" in col:
        extra["id"] = rec.get(col["prompt_id"], (str, int))
    if "domain" in col:
        extra["domain"] = rec.text(col["domain"])
    if "verified" in col:
        extra["verified"] = rec.get(col["verified"], bool, optional=True)
    if "completion" in col:
        return [think_trace(rec, cfg, ad, problem, rec.text(col["completion"]), **extra)]
    reasoning, answer = rec.text(col["reasoning"]), rec.text(col["answer"])
    completion = f"{reasoning}\n{END_THINK}\n\n{answer}"
    return [trace(rec, cfg, ad, problem, completion=completion, reasoning=reasoning, answer=answer, **extra)]


# ---------------------------------------------------------------- column-wise: a record batch at a time


def trace_schema():
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "bool": pa.bool_(),
        "strings": pa.list_(pa.string()),
        "spans": SPANS(),
    }
    return pa.schema([(name, types[kind]) for name, kind in TRACE_FIELDS])


def spans_field():
    """The imported shards' trace_spans column (TRACE_FIELDS says what it holds)."""
    import pyarrow as pa

    return pa.field("trace_spans", SPANS())


def SPANS():  # noqa: N802 (a constant built on first use: pyarrow loads only when a set is read)
    import pyarrow as pa

    return pa.list_(pa.field("element", pa.int32()), 4)  # Parquet's name for a list's item


def chunk_traces(
    chunk: Any, rows: list[int], first: int, src: DatasetSource, adapter: Adapter, file: str | None = None
) -> Any:
    """The traces of a chunk's taken rows (0-based; the chunk's first record is row `first` of `file`) as one
    table: column-wise when the adapter can and the batch has its plain layout, else record by record (which
    also names any bad column, file and row)."""
    import pyarrow as pa

    if isinstance(chunk, list):
        records = [chunk[i] for i in rows]
    else:
        picked = chunk if len(rows) == chunk.num_rows else chunk.take(pa.array(rows))
        table = adapter.columnar(picked, src, adapter) if adapter.columnar else None
        if table is not None:
            return table
        records = picked.to_pylist()
    traces = [
        t
        for i, data in zip(rows, records, strict=True)
        for t in adapter.convert(Record(data, src.adapter, first + i, file), src, adapter)
    ]
    return pa.Table.from_pylist(traces, schema=trace_schema())


def split_think_columns(completion: Any) -> tuple[Any, Any] | None:
    """split_think on a whole string array, as byte spans: (spans, closed), spans an int32 numpy array [n, 4] of
    [reasoning start, end, answer start, end] within each row's text, whose slices equal split_think's parts row
    for row; None when a row opens with about HEAD characters of whitespace or a part has WINDOW bytes of it at
    an end (the record path takes that batch).

    The text is scanned once, for the closing tag; leading whitespace and <think> are found in each row's first
    HEAD characters, the strip() of each part in its first and last WINDOW bytes. No text is copied."""
    import numpy as np
    import pyarrow.compute as pc

    head = pc.utf8_slice_codeunits(completion, 0, HEAD)
    body = pc.utf8_ltrim(head, characters=PY_SPACE)
    cut_short = pc.and_(pc.equal(pc.utf8_length(head), HEAD), pc.less(pc.binary_length(body), len(THINK)))
    if pc.any(cut_short).as_py():  # the head may end inside the whitespace or the <think> tag
        return None
    opened = pc.starts_with(body, THINK).to_numpy(zero_copy_only=False)
    lead = pc.subtract(pc.binary_length(head), pc.binary_length(body)).to_numpy() + len(THINK) * opened
    offsets = value_offsets(completion)
    start, end = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64)
    tag = first_found(completion.buffers()[2], END_THINK.encode(), start, end)
    closed = tag >= 0
    cut = np.where(closed, start + tag, end)
    bounds = np.stack([start + lead, cut, np.where(closed, cut + len(END_THINK), end), end], axis=1)
    ends = stripped_ends(completion.buffers()[2], bounds[:, [0, 2]], bounds[:, [1, 3]])
    if ends is None:
        return None
    left, right = ends  # [n, 2] bytes stripped from the reasoning and the answer, each end
    first, last = bounds[:, [0, 2]] + left, bounds[:, [1, 3]] - right
    last = np.maximum(first, last)  # an all-whitespace part strips to empty from both ends
    spans = np.stack([first[:, 0], last[:, 0], first[:, 1], last[:, 1]], axis=1) - start[:, None]
    return spans.astype(np.int32), closed


def stripped_ends(data: Any, lo: Any, hi: Any) -> tuple[Any, Any] | None:
    """Bytes str.strip() takes from the start and the end of each UTF-8 value [lo, hi) of `data` (byte indices,
    ascending in memory), as (left, right) shaped like lo; None when a value has WINDOW bytes of whitespace at
    an end (it may have more). Only each value's first and last WINDOW bytes are read (utf8_slice_codeunits of
    the head and tail characters cost ~20 us a row at R1 lengths, profiled)."""
    import numpy as np

    buf = np.frombuffer(data or b"", np.uint8)
    lo, hi = lo.ravel(), hi.ravel()
    head_end = char_start(buf, np.minimum(hi, lo + WINDOW), lo)
    tail_start = char_start(buf, np.maximum(lo, hi - WINDOW), lo)
    kept_head = trimmed_lengths(data, lo, head_end, "ltrim")
    kept_tail = trimmed_lengths(data, tail_start, hi, "rtrim")
    if (((kept_head == 0) & (head_end < hi)) | ((kept_tail == 0) & (tail_start > lo))).any():
        return None
    left, right = head_end - lo - kept_head, hi - tail_start - kept_tail
    return left.reshape(-1, 2), right.reshape(-1, 2)


def char_start(buf: Any, at: Any, floor: Any) -> Any:
    """Each byte index moved back to the first byte of its UTF-8 character (not below floor)."""
    at = at.copy()
    for _ in range(3):  # a character has at most 3 continuation bytes
        inside = (at < len(buf)) & (at > floor)
        inside[inside] = buf[at[inside]] & 0xC0 == 0x80
        at -= inside
    return at


def trimmed_lengths(data: Any, lo: Any, hi: Any, side: str) -> Any:
    """Byte lengths of the values [lo, hi) of data with PY_SPACE trimmed from one side. The values, with the
    gaps between them, are laid out as one array without a copy; only the values are taken (short)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    bounds = np.stack([lo, hi], axis=1).ravel().astype(np.int32)
    spaced = pa.StringArray.from_buffers(len(bounds) - 1, pa.py_buffer(bounds), data)
    values = pc.take(spaced, pa.array(np.arange(0, len(bounds) - 1, 2)))
    trim = pc.utf8_ltrim if side == "ltrim" else pc.utf8_rtrim
    return pc.binary_length(trim(values, characters=PY_SPACE)).to_numpy().astype(np.int64)


def value_offsets(array: Any) -> Any:
    """The int32 value offsets of a string or list array, as numpy, without a copy (ListArray.offsets
    rebuilds them: ~0.1 s per batch)."""
    import numpy as np

    return np.frombuffer(array.buffers()[1], np.int32)[array.offset : array.offset + len(array) + 1]


def first_found(data: Any, needle: bytes, start: Any, end: Any) -> Any:
    """Per value [start, end) of `data` (an Arrow buffer or bytes): the byte index of needle's first whole
    occurrence in it, else -1. One regex scan of the buffer in place (no copy to bytes: that copy cost as
    much as the scan); Arrow's find_substring is ~5x slower on R1 text. The tag cannot overlap itself, so
    non-overlapping matches are all of them."""
    import re

    import numpy as np

    hits = np.fromiter((m.start() for m in re.finditer(re.escape(needle), memoryview(data or b""))), np.int64)
    row = np.searchsorted(end, hits, side="right")  # the value each hit starts in
    whole = (row < len(end)) & (hits + len(needle) <= end[np.minimum(row, len(end) - 1)])
    hits, row = hits[whole], row[whole]
    rows, first = np.unique(row, return_index=True)  # hits ascend: a row's first hit is its first index
    out = np.full(len(start), -1, np.int64)
    out[rows] = hits[first] - start[rows]
    return out


def chat_turns(batch: Any, column: str, role_key: str, text_key: str, roles: tuple[str, str]) -> Any:
    """(first turn text, second turn text) of a chat column when every row's first two turns have `roles`,
    no turn lacks its role or text, and nothing is null; else None (the record path decides)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    chat = batch.column(column) if column in batch.schema.names else None
    kind = None if chat is None else chat.type
    if kind is None or not pa.types.is_list(kind) or not pa.types.is_struct(kind.value_type):
        return None
    names = {
        kind.value_type.field(i).name: kind.value_type.field(i).type
        for i in range(kind.value_type.num_fields)
    }
    if names.get(role_key) != pa.string() or names.get(text_key) != pa.string() or chat.null_count:
        return None
    flat = pc.list_flatten(chat)
    role, text = pc.struct_field(flat, role_key), pc.struct_field(flat, text_key)
    if (
        flat.null_count
        or role.null_count
        or text.null_count
        or pc.min(pc.list_value_length(chat)).as_py() < 2
    ):
        return None
    offsets = value_offsets(chat)
    starts = pa.array(offsets[:-1] - offsets[0])
    second = pc.add(starts, 1)
    if not (
        pc.all(pc.equal(pc.take(role, starts), roles[0])).as_py()
        and pc.all(pc.equal(pc.take(role, second), roles[1])).as_py()
    ):
        return None
    return pc.take(text, starts), pc.take(text, second)


def mot_columns(batch: Any, cfg: DatasetSource, ad: Adapter) -> Any:
    """mixture_of_thoughts on a record batch, column-wise (equal row for row; tested); None when the batch is
    not plainly [user, assistant, ...] chats with int token counts and ASCII sources."""
    import pyarrow as pa
    import pyarrow.compute as pc

    turns2 = chat_turns(batch, "messages", "role", "content", ("user", "assistant"))
    names = batch.schema.names
    if turns2 is None or "num_tokens" not in names or "source" not in names:
        return None
    tokens, origin = batch.column("num_tokens"), batch.column("source")
    if (
        not pa.types.is_integer(tokens.type)
        or origin.type != pa.string()
        or tokens.null_count
        or origin.null_count
    ):
        return None
    if not pc.all(pc.string_is_ascii(origin)).as_py():  # Python's lower() and Arrow's differ beyond ASCII
        return None
    problem, completion = turns2
    split = split_think_columns(completion)
    if split is None:
        return None
    spans, closed = split
    n = len(problem)
    fixed = cfg.domain or DOMAIN_WORDS.get(cfg.subset or "")
    domain = pa.repeat(pa.scalar(fixed), n) if fixed else mot_domains(pc.utf8_lower(origin), ad.domain)
    values = {
        "prompt_id": pa.array([f"{ad.name}/{content_id(p)}" for p in problem.to_pylist()], pa.string()),
        "domain": domain,
        "problem": problem,
        "reference": pa.nulls(n, pa.string()),
        "source": pa.repeat(pa.scalar(ad.hub_id + (f":{cfg.subset}" if cfg.subset else "")), n),
        "license": pa.repeat(pa.scalar(ad.license), n),
        "sample_index": pa.repeat(pa.scalar(0, pa.int64()), n),
        "finish_reason": pa.repeat(pa.scalar("stop"), n),
        "flags": pc.if_else(
            pa.array(closed),
            pa.scalar([], pa.list_(pa.string())),
            pa.scalar(["malformed"], pa.list_(pa.string())),
        ),
        "verified": pa.nulls(n, pa.bool_()),
        "completion_tokens": token_counts(tokens, completion),
        "teacher": pa.repeat(pa.scalar(R1), n),
        "completion": completion,
        "reasoning": pa.nulls(n, pa.string()),  # in trace_spans: the text once
        "answer": pa.nulls(n, pa.string()),
        "trace_spans": pa.FixedSizeListArray.from_arrays(pa.array(spans.ravel()), type=SPANS()),
    }
    return pa.Table.from_pydict(values, schema=trace_schema())


def token_counts(tokens: Any, completion: Any) -> Any:
    """The set's token counts; where one is 0, the estimate from the text's length (as trace() does). The
    length pass (~2% of an import's CPU) runs only for a batch that has a 0."""
    import pyarrow as pa
    import pyarrow.compute as pc

    tokens, zero = tokens.cast(pa.int64()), pc.equal(tokens, 0)
    if not pc.any(zero).as_py():
        return tokens
    estimate = pc.divide(pc.utf8_length(completion), CHARS_PER_TOKEN).cast(pa.int64())
    return pc.if_else(zero, estimate, tokens)


def mot_domains(origin: Any, default: str) -> Any:
    """Each row's domain from its source (MOT_SOURCES, first match), else the adapter's."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = pa.repeat(pa.scalar(default), len(origin))
    for word, domain in reversed(MOT_SOURCES):
        out = pc.if_else(pc.match_substring(origin, word), domain, out)
    return out


def trace_texts(table: Any) -> Any:
    """A generate shard's table with reasoning and answer as text in every row, without trace_spans: rows that
    keep them as spans of their completion (the column-wise import) get the slices; the rest (the teacher's
    shards, the record path) are returned as they are. A span outside its text or inside a UTF-8 character is
    a DistillError."""
    import pyarrow as pa

    if "trace_spans" not in table.column_names:
        return table
    spans = table.column("trace_spans")
    if spans.null_count < len(spans):
        table = pa.Table.from_batches([batch_texts(b) for b in table.to_batches()], table.schema)
    return table.drop_columns(["trace_spans"])


def batch_texts(batch: Any) -> Any:
    """trace_texts on one record batch (its columns' chunks line up)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    spans, completion = batch.column("trace_spans"), batch.column("completion")
    has = spans.is_valid().to_numpy(zero_copy_only=False)
    if not has.any():
        return batch
    offsets = value_offsets(completion).astype(np.int64)
    start = offsets[:-1, None]
    bounds = np.repeat(start, 4, axis=1)  # rows without spans: four empty parts at their start
    bounds[has] += np.asarray(pc.list_flatten(spans), np.int64).reshape(-1, 4)
    data = np.frombuffer(completion.buffers()[2] or b"", np.uint8)
    inside = (np.diff(bounds, axis=1) >= 0).all() and (bounds[:, 0] >= start[:, 0]).all()
    inside = inside and (bounds[:, 3] <= offsets[1:]).all()
    if not inside or (data[bounds[bounds < len(data)]] & 0xC0 == 0x80).any():  # a UTF-8 continuation byte
        raise DistillError("trace_spans: a span lies outside its completion or splits a UTF-8 character")
    parts = pa.StringArray.from_buffers(
        bounds.size - 1, pa.py_buffer(bounds.ravel().astype(np.int32)), completion.buffers()[2]
    )
    every = np.arange(0, bounds.size - 1, 4)
    texts = {"reasoning": pc.take(parts, every), "answer": pc.take(parts, every + 2)}
    if not has.all():
        valid = pa.array(has)
        texts = {k: pc.if_else(valid, v, batch.column(k)) for k, v in texts.items()}
    columns = [texts.get(name, batch.column(name)) for name in batch.schema.names]
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        Adapter("openr1-math", "open-r1/OpenR1-Math-220k", "Apache-2.0", "math", openr1_math),
        Adapter("mixture-of-thoughts", "open-r1/Mixture-of-Thoughts", "Apache-2.0", "general", mixture_of_thoughts,
                mot_columns),
        Adapter("openthoughts", "open-thoughts/OpenThoughts-114k", "Apache-2.0", "general", openthoughts),
        Adapter("openthoughts3", "open-thoughts/OpenThoughts3-1.2M", "Apache-2.0", "general", openthoughts3),
        Adapter("bespoke-stratos", "bespokelabs/Bespoke-Stratos-17k", "Apache-2.0", "general", openthoughts),
        Adapter("s1k", "simplescaling/s1K-1.1", "MIT", "math", s1k),
        Adapter("limo", "GAIR/LIMO", "Apache-2.0", "math", limo),
        Adapter("am-r1", "a-m-team/AM-DeepSeek-R1-Distilled-1.4M", "CC BY-NC 4.0", "general", am_r1),
        Adapter("columns", "(local columns)", "see the source", "general", mapped),
    ]
}  # fmt: skip


def check(sources: list[DatasetSource]) -> None:
    """Bad settings before anything is read: unknown adapter, weights, limits, column maps."""
    if not sources:
        raise DistillError("generate.datasets: empty (generate.source: dataset needs at least one set)")
    for i, src in enumerate(sources):
        where = f"generate.datasets[{i}]"
        if src.adapter not in ADAPTERS:
            raise DistillError(
                f"{where}.adapter: unknown adapter '{src.adapter}' (known: {', '.join(ADAPTERS)})"
            )
        if not 0 < src.weight <= 1:
            raise DistillError(f"{where}.weight: {src.weight} is not in (0, 1] (the share of its rows taken)")
        if src.limit is not None and src.limit < 1:
            raise DistillError(f"{where}.limit: {src.limit} must be >= 1")
        if src.adapter == "columns":
            check_columns(src, where)
        if src.adapter == "columns" and src.path is None:
            raise DistillError(f"{where}.path: adapter 'columns' reads local files; set path")


def check_columns(src: DatasetSource, where: str) -> None:
    col = src.columns
    unknown = sorted(set(col) - set(MAPPED))
    if unknown:
        raise DistillError(f"{where}.columns: unknown field '{unknown[0]}' (fields: {', '.join(MAPPED)})")
    if "problem" not in col or not ("completion" in col or {"reasoning", "answer"} <= set(col)):
        raise DistillError(f"{where}.columns: map 'problem' and 'completion' (or 'reasoning' and 'answer')")


# ---------------------------------------------------------------- reading


def source_name(src: DatasetSource) -> str:
    return src.path or ADAPTERS[src.adapter].hub_id + (f":{src.subset}" if src.subset else "")


JSONL = (".jsonl", ".json")  # a JSON object per line (the Hub's .json data files are JSON Lines too)
CODECS = {".gz": "gzip", ".zst": "zstd"}  # compressed JSONL as the Hub ships it (AM-DeepSeek-R1: .jsonl.zst)
READ_BYTES = 1 << 20  # bytes read from a (decompressing) stream at a time: memory stays flat


def file_kind(path: Path) -> str | None:
    """'parquet', 'jsonl', 'jsonl.gz' / 'jsonl.zst', or None for a file that is no data file. A JSONL file under
    a codec distill does not read (.bz2, .xz) is a DistillError, not a silent skip."""
    suffixes = [x.lower() for x in path.suffixes[-2:]]
    if suffixes[-1:] == [".parquet"]:
        return "parquet"
    if suffixes[-1:] and suffixes[-1] in JSONL:
        return "jsonl"
    if len(suffixes) == 2 and suffixes[0] in JSONL:
        if suffixes[1] not in CODECS:
            known = ", ".join(CODECS)
            raise DistillError(f"{path}: unknown compression '{suffixes[1]}' (distill reads {known})")
        return "jsonl" + suffixes[1]
    return None


def data_files(path: Path, subset: str | None = None, split: str = "train") -> list[Path]:
    """The data files of a local copy: one file, or a folder as `huggingface-cli download` / snapshot_download
    leave it (hidden folders such as .cache/ skipped). A snapshot's README.md says its subsets (the card's
    `configs`: name -> data_files per split), and the folder is read as `datasets` would read it: `subset`, else
    the `default` config. Without a card, a folder of subset folders (Mixture-of-Thoughts' math/, code/, science/,
    all/) or subset files (AM's am_0.5M.jsonl.zst) is read by `subset`; the Hub's default config lives in data/."""
    if path.is_file():
        if file_kind(path) is None:
            raise DistillError(f"{path}: not a .parquet / .jsonl / .jsonl.gz / .jsonl.zst file")
        return [path]
    if not path.is_dir():
        raise DistillError(f"{path}: no such file or folder")
    configs = card_configs(path)
    if configs:
        files = config_files(path, configs, subset, split)
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not hidden(p, path) and file_kind(p))
        files = subset_files(path, files, subset) if subset is not None else files
        folders = sorted({p.relative_to(path).parts[0] for p in files if p.parent != path})
        if subset is None and len(folders) > 1:  # Mixture-of-Thoughts' all/ repeats math/, code/ and science/
            raise DistillError(
                f"{path}: holds the subsets {', '.join(folders)}: set subset to the one to read"
            )
    if not files:
        raise DistillError(f"{path}: no .parquet / .jsonl / .jsonl.gz / .jsonl.zst files")
    return files


def card_configs(root: Path) -> dict[str, list[tuple[str | None, str]]] | None:
    """The dataset card's `configs` (README.md's YAML header): {config name: [(split or None, file pattern)]};
    None when the folder has no card or the card lists none."""
    import yaml

    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8", errors="replace") if readme.is_file() else ""
    if not text.startswith("---"):
        return None
    try:
        header = yaml.safe_load(text.split("---", 2)[1]) or {}
    except yaml.YAMLError as err:
        raise DistillError(
            f"{readme}: the card's YAML header does not parse ({type(err).__name__})"
        ) from None
    configs = header.get("configs") if isinstance(header, dict) else None
    if not isinstance(configs, list) or not configs:
        return None
    return {
        str(c.get("config_name", "default")): config_patterns(c.get("data_files"), readme) for c in configs
    }


def config_patterns(files: Any, readme: Path) -> list[tuple[str | None, str]]:
    """A config's data_files (a pattern, a list of them, or a list of {split, path}) as (split, pattern) pairs."""
    out: list[tuple[str | None, str]] = []
    for entry in files if isinstance(files, list) else [files]:
        split, paths = (entry.get("split"), entry.get("path")) if isinstance(entry, dict) else (None, entry)
        for pattern in paths if isinstance(paths, list) else [paths]:
            if not isinstance(pattern, str):
                raise DistillError(f"{readme}: configs: a data_files entry that is not a file pattern")
            out.append((split, pattern))
    return out


def config_files(
    root: Path, configs: dict[str, list[tuple[str | None, str]]], subset: str | None, split: str
):
    """The files of one config and split of the card, as `datasets` picks them (no subset: the default config)."""
    name = subset if subset is not None else ("default" if "default" in configs or len(configs) > 1 else None)
    name = name if name is not None else next(iter(configs))
    if name not in configs:
        known = ", ".join(configs)
        why = f"no subset '{name}'" if subset is not None else "holds several subsets and no default"
        raise DistillError(f"{root}: {why} (the card's configs: {known}): set subset to the one to read")
    patterns = [p for s, p in configs[name] if s in (None, split)]
    if not patterns:
        splits = ", ".join(sorted({s for s, _ in configs[name] if s}))
        raise DistillError(f"{root}: subset '{name}' has no split '{split}' (splits: {splits})")
    files = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file() and file_kind(p)})
    if not files:
        raise DistillError(
            f"{root}: subset '{name}': no data file matches {', '.join(patterns)} (the card's)"
        )
    return files


def hidden(p: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in p.relative_to(root).parts)


def subset_files(root: Path, files: list[Path], subset: str) -> list[Path]:
    """The files of one subset: its folder (data/ for "default"), else the root files named after it."""
    for folder in (subset, "data") if subset == "default" else (subset,):
        inside = [
            p for p in files if p.relative_to(root).parts[0] == folder and len(p.relative_to(root).parts) > 1
        ]
        if inside:
            return inside
    named = [p for p in files if p.parent == root and data_stem(p) == subset]
    if named:
        return named
    have = sorted({p.relative_to(root).parts[0] if p.parent != root else data_stem(p) for p in files})
    raise DistillError(f"{root}: no subset '{subset}' (folders / files: {', '.join(have) or 'none'})")


def data_stem(path: Path) -> str:
    """The file's name without its data suffixes: am_0.9M.jsonl.zst -> am_0.9M."""
    kind = file_kind(path) or ""
    return path.name.rsplit(".", 1 + ("." in kind))[0]


def file_records(path: Path) -> Iterator[dict[str, Any]]:
    """A JSONL file's records, a line at a time; a .gz / .zst file decompresses as it streams. A corrupt or
    cut-off stream, or bytes that are not UTF-8, is a DistillError naming the file and the row."""
    count = 0
    for lineno, raw in enumerate(file_lines(path), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DistillError(
                f"{path}: row {lineno}: not UTF-8 text ({err.reason} at byte {err.start})"
            ) from None
        if line.strip():
            count += 1
            yield json_line(line, path, lineno)
    if not count:
        raise DistillError(f"{path}: empty file (no records)")


def file_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes, decompressed on the way (READ_BYTES at a time)."""
    lineno = 1
    try:
        with open_stream(path) as stream:
            tail = b""
            while chunk := stream.read(READ_BYTES):
                lines = (tail + chunk).split(b"\n")
                tail = lines.pop()
                for line in lines:
                    yield line
                    lineno += 1
            if tail:
                yield tail
    except (OSError, EOFError) as err:  # a cut-off or corrupt .gz / .zst stream
        raise DistillError(f"{path}: row {lineno}: cannot decompress ({err})") from None


def open_stream(path: Path) -> Any:
    """A binary stream of the file's (decompressed) bytes: gzip and zstd through pyarrow, which ships both."""
    import pyarrow as pa

    codec = CODECS.get(path.suffix.lower()) if file_kind(path) != "jsonl" else None
    raw = pa.OSFile(str(path))
    return pa.CompressedInputStream(raw, codec) if codec else raw


def json_line(line: str, path: Path, lineno: int) -> dict[str, Any]:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as err:
        raise DistillError(f"{path}: row {lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(rec, dict):
        raise DistillError(f"{path}: row {lineno}: not a JSON object")
    return rec


def hub_records(src: DatasetSource) -> Iterator[dict[str, Any]]:
    import datasets  # heavy; only for a hub id

    hub_id = ADAPTERS[src.adapter].hub_id
    try:
        yield from datasets.load_dataset(hub_id, src.subset, split=src.split, streaming=True)
    except Exception as err:
        raise DistillError(
            f"dataset '{src.adapter}': cannot stream {hub_id} from the Hub ({type(err).__name__}); "
            "set path to a local copy"
        ) from None


def records(src: DatasetSource) -> Iterator[dict[str, Any]]:
    """The set's records one by one (per-row consumers; the import reads chunks())."""
    for _, chunk in chunks(src):
        yield from chunk.to_pylist() if not isinstance(chunk, list) else chunk


def chunks(src: DatasetSource) -> Iterator[tuple[str, Any]]:
    """(file, a batch of its records) in order: a pyarrow RecordBatch from Parquet, else a list of dicts; the
    file is the hub id for a set streamed from the Hub."""
    if src.path is None:
        for batch in batched(hub_records(src)):
            yield ADAPTERS[src.adapter].hub_id, batch
        return
    for path in data_files(Path(src.path), src.subset, src.split):
        batches = parquet_batches(path) if file_kind(path) == "parquet" else batched(file_records(path))
        for batch in batches:
            yield str(path), batch


def parquet_batches(path: Path) -> Iterator[Any]:
    """The file's record batches, one row group at a time: a single iter_batches over the whole file keeps
    every row group's compressed pages it has read (memory grew with the file: 2.4 GB peak at 1M R1 rows)."""
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DistillError(f"{path}: cannot read Parquet ({type(err).__name__}: {err})") from None
    if reader.metadata.num_rows == 0:
        raise DistillError(f"{path}: empty file (no records)")
    for group in range(reader.num_row_groups):
        yield from reader.iter_batches(batch_size=BATCH_ROWS, row_groups=[group])


def read_ahead(items: Iterator[Any], depth: int = READ_AHEAD) -> Iterator[Any]:
    """`items` produced on a background thread, up to `depth` ahead, so reading (Parquet decoding releases the
    GIL) overlaps the work on the chunks before. A reader error is raised in its place in the stream; closing
    this generator (or dropping it, when a limit ends the loop early) stops the reader."""
    import queue
    import threading

    ready, stop = queue.Queue(depth), threading.Event()
    threading.Thread(target=pump, args=(items, ready, stop), daemon=True).start()
    try:
        while (entry := ready.get())[0] is not END:
            yield entry[0]
        if entry[1] is not None:
            raise entry[1]
    finally:
        stop.set()


def pump(items: Iterator[Any], ready: Any, stop: Any) -> None:
    """read_ahead's reader: each item, then END with the error that ended the stream (or None)."""
    try:
        for item in items:
            if not hand_over(ready, stop, (item, None)):
                return
        hand_over(ready, stop, (END, None))
    except BaseException as err:  # the consumer raises it
        hand_over(ready, stop, (END, err))


def hand_over(ready: Any, stop: Any, entry: tuple[Any, BaseException | None]) -> bool:
    """Puts entry once there is room; False when the consumer stopped first."""
    import queue

    while not stop.is_set():
        try:
            ready.put(entry, timeout=0.1)  # s: how often a reader blocked on a full queue checks stop
            return True
        except queue.Full:
            continue
    return False


def batched(items: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for item in items:
        batch.append(item)
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch


def fingerprint(sources: list[DatasetSource]) -> str:
    """What the local files are (path, size, mtime): an edited file reruns the import. Hub sets: their id."""
    seen = [
        [str(p), p.stat().st_size, p.stat().st_mtime_ns] if s.path else [source_name(s)]
        for s in sources
        for p in (data_files(Path(s.path), s.subset, s.split) if s.path else [None])
    ]
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:16]


def count_rows(sources: list[DatasetSource]) -> int:
    """The records the sets would give (each weight as its expected share, then the limit), from Parquet
    footers and JSONL line counts: no record is parsed. A Hub set cannot be counted without streaming it."""
    total = 0
    for i, src in enumerate(sources):
        if src.path is None:
            raise DistillError(
                f"generate.datasets[{i}]: {source_name(src)} is read from the Hub; counting its rows means "
                "streaming it: set plan.prompts, or path to a local copy"
            )
        files = data_files(Path(src.path), src.subset, src.split)
        taken = round(sum(file_rows(p) for p in files) * src.weight)
        total += taken if src.limit is None else min(taken, src.limit)
    return total


def file_rows(path: Path) -> int:
    if file_kind(path) == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return sum(1 for line in file_lines(path) if line.strip())


def drawn(name: str, row: int, weight: float) -> bool:
    """A stable per-row coin with P(True) = weight: the same rows on every run."""
    if weight >= 1:
        return True
    digest = hashlib.blake2b(f"{name}#{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < weight * 2**64


# ---------------------------------------------------------------- mixtures


@dataclass
class Mixture:
    """The traces of several sets in recipe order, as Arrow tables of TRACE_FIELDS (one per record batch), and
    the realised mix: rows read and taken per set."""

    sources: list[DatasetSource]
    mix: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    teachers: set[str] = field(default_factory=set)

    def tables(self) -> Iterator[Any]:
        for src in self.sources:
            yield from self.source_tables(src)

    def source_tables(self, src: DatasetSource) -> Iterator[Any]:
        adapter, name = ADAPTERS[src.adapter], source_name(src)
        entry = self.mix.setdefault(name, {"adapter": src.adapter, "weight": src.weight, "limit": src.limit})
        entry.update(rows_read=0, rows_taken=0, traces=0)
        first = 1  # the 1-based row number of the chunk's first record in the set (the draw's key)
        file, in_file = None, 1  # and in its file (errors name it)
        for origin, chunk in read_ahead(chunks(src)):
            file, in_file = origin, (in_file if origin == file else 1)
            rows = self.take(entry, src, name, first, len(chunk))
            if rows:
                table = chunk_traces(chunk, rows, in_file, src, adapter, file)
                entry["traces"] += table.num_rows
                self.count(table, len(rows))
                yield table
            first += len(chunk)
            in_file += len(chunk)
            if src.limit is not None and entry["rows_taken"] >= src.limit:
                return

    def take(self, entry: dict[str, Any], src: DatasetSource, name: str, first: int, n: int) -> list[int]:
        """The chunk's rows (0-based) drawn by the weight, up to the limit; counts them as read and taken."""
        left = None if src.limit is None else src.limit - entry["rows_taken"]
        if src.weight >= 1:  # every row drawn: no per-row coin
            taken = list(range(n if left is None else min(n, left)))
            entry["rows_read"] += len(taken)
            entry["rows_taken"] += len(taken)
            return taken
        taken: list[int] = []
        for i in range(n):
            if left is not None and len(taken) >= left:
                break
            entry["rows_read"] += 1
            if drawn(name, first + i, src.weight):
                taken.append(i)
        entry["rows_taken"] += len(taken)
        return taken

    def count(self, table: Any, prompts: int) -> None:
        import pyarrow.compute as pc

        c = self.counts
        c["prompts"] += prompts
        c["traces"] += table.num_rows
        flags = pc.list_flatten(table["flags"])
        c["truncated"] += pc.sum(pc.equal(flags, "truncated")).as_py() or 0
        c["malformed"] += pc.sum(pc.equal(flags, "malformed")).as_py() or 0
        verified = table["verified"]
        c["verified_true"] += pc.sum(verified).as_py() or 0
        c["verified_false"] += table.num_rows - verified.null_count - (pc.sum(verified).as_py() or 0)
        c["verified_none"] += verified.null_count
        self.teachers.update(pc.unique(table["teacher"]).to_pylist())

    def metrics(self) -> dict[str, Any]:
        """Totals of the traces taken, in the keys curate's card reads from a generate manifest."""
        c = self.counts
        rows = max(c["traces"], 1)
        return {
            "prompts": c["prompts"],
            "traces": c["traces"],
            "teacher": ", ".join(sorted(self.teachers)),
            "truncated_rate": round(c["truncated"] / rows, 4),
            "malformed_rate": round(c["malformed"] / rows, 4),
            "verified": {
                "true": c["verified_true"],
                "false": c["verified_false"],
                "none": c["verified_none"],
            },
        }

    def realised(self) -> dict[str, dict[str, Any]]:
        """The mix with each set's share of all traces taken."""
        total = sum(e["traces"] for e in self.mix.values()) or 1
        return {name: {**e, "share": round(e["traces"] / total, 4)} for name, e in self.mix.items()}


MIX_COLUMNS = ("adapter", "weight", "limit", "rows_read", "rows_taken", "prompts", "traces", "share")


def card_section(metrics: dict[str, Any]) -> list[str]:
    """The data card's realised mix (curate's metrics carry generate's): per set or prompt source, what was
    read and taken, and its share."""
    mix = metrics.get("generate", {}).get("mixture")
    if not mix:
        return []
    # manifests are written with sorted keys: put the columns back in reading order
    first = next(iter(mix.values()))
    keys = [k for k in MIX_COLUMNS if k in first] + [k for k in first if k not in MIX_COLUMNS]
    out = ["## Realised mix", "", "| source | " + " | ".join(k.replace("_", " ") for k in keys) + " |"]
    out.append("|---" * (len(keys) + 1) + "|")
    for name, entry in mix.items():
        cells = [f"{entry[k]:.1%}" if k == "share" else str(entry[k]) for k in keys]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*out, ""]
