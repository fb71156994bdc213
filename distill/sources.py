"""Public R1 trace sets as traces: adapters by name (each set's real layout), a column mapping, streaming, mixtures.

An adapter turns one record of a set into one or more traces (OpenR1-Math holds 2-4 generations per problem).
A trace is a flat dict: the prompt row's fields (PROMPT_FIELDS) plus sample_index, user (the chat's user turn),
completion (the raw assistant text), reasoning, answer, finish_reason, verified (the set's own verdict: True,
False, or None when it records none), completion_tokens and teacher. generate.source: dataset writes them as
generate shards (distill/generate/run.py), so curate -> train -> eval run unchanged.

Records stream: Parquet in record batches, JSONL line by line, the Hub with streaming=True; memory is one batch.
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
                       think_content, answer_content)
"""

from __future__ import annotations

import gzip
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
R1 = "deepseek-ai/DeepSeek-R1"
OT_THOUGHT = ("<|begin_of_thought|>", "<|end_of_thought|>")  # Sky-T1 / OpenThoughts / Bespoke-Stratos tags
OT_SOLUTION = ("<|begin_of_solution|>", "<|end_of_solution|>")
MOT_SOURCES = (("codeforces", "code"), ("math", "math"))  # Mixture-of-Thoughts `source` -> domain
DOMAIN_WORDS = {"math": "math", "code": "code", "science": "general", "puzzle": "general"}


@dataclass(frozen=True)
class Record:
    """One record of one set, and where it is (the set, its 1-based row): every error names both."""

    data: dict[str, Any]
    dataset: str
    row: int

    def where(self, column: str) -> str:
        return f"dataset '{self.dataset}': row {self.row}: column '{column}'"

    def get(self, column: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        """The column's value, checked: missing or of another type is a DistillError naming set, column, row."""
        if column not in self.data or (self.data[column] is None and not optional):
            raise DistillError(f"{self.where(column)} is missing")
        value = self.data[column]
        if value is not None and not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else "|".join(k.__name__ for k in kind)
            raise DistillError(f"{self.where(column)}: expected {want}, got {type(value).__name__}")
        return value

    def text(self, column: str) -> str:
        return self.get(column, str)


Convert = Callable[[Record, DatasetSource], list[dict[str, Any]]]


@dataclass(frozen=True)
class Adapter:
    name: str
    hub_id: str
    license: str
    domain: str  # default domain of its rows
    convert: Convert


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
    """One trace per generation; verified when math-verify or the Llama judge said correct (the card's rule)."""
    problem, gens = rec.text("problem"), rec.get("generations", list)
    math_verify = rec.get("correctness_math_verify", list)
    llama = rec.get("correctness_llama", list, optional=True) or [None] * len(gens)
    complete = rec.get("is_reasoning_complete", list)
    finish = rec.get("finish_reasons", list, optional=True)
    for column, values in (("correctness_math_verify", math_verify), ("is_reasoning_complete", complete)):
        if len(values) != len(gens):
            raise DistillError(f"{rec.where(column)}: {len(values)} values for {len(gens)} generations")
    return [
        think_trace(
            rec, cfg, ad, problem, gen, id=rec.text("uuid"), reference=rec.text("answer"), sample_index=j,
            verified=bool(math_verify[j]) or bool(llama[j]),
            finish_reason=finish[j] if finish else ("stop" if complete[j] else "length"),
        )
        for j, gen in enumerate(gens)
    ]  # fmt: skip


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
    reasoning, answer = rec.text("deepseek_thinking_trajectory"), rec.text("deepseek_attempt")
    grade = rec.get("deepseek_grade", str, optional=True) if "deepseek_grade" in rec.data else None
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
    messages = rec.get("messages", list)
    chat = turns(rec, "messages", "role", "content")
    roles = [role for role, _ in chat]
    if "user" not in roles or "assistant" not in roles:
        raise DistillError(f"{rec.where('messages')}: needs a user and an assistant turn")
    user, bot = messages[roles.index("user")], messages[roles.index("assistant")]
    info_user, info = user.get("info") or {}, bot.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("think_content"), str):
        raise DistillError(f"{rec.where('messages')}: assistant info.think_content is missing")
    if not isinstance(info.get("answer_content"), str):
        raise DistillError(f"{rec.where('messages')}: assistant info.answer_content is missing")
    return [
        trace(
            rec, cfg, ad, user["content"], reference=info_user.get("reference_answer") or None,
            completion=bot["content"], reasoning=info["think_content"].strip(),
            answer=info["answer_content"].strip(),
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


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        Adapter("openr1-math", "open-r1/OpenR1-Math-220k", "Apache-2.0", "math", openr1_math),
        Adapter("mixture-of-thoughts", "open-r1/Mixture-of-Thoughts", "Apache-2.0", "general", mixture_of_thoughts),
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


def data_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(p for ext in ("*.parquet", "*.jsonl", "*.jsonl.gz", "*.json") for p in path.rglob(ext))
    if not files:
        raise DistillError(f"{path}: no .parquet / .jsonl files (or the path does not exist)")
    return files


def file_records(path: Path) -> Iterator[dict[str, Any]]:
    """A file's records, a batch (Parquet) or a line (JSONL) at a time."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            reader = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises several types for a corrupt file
            raise DistillError(f"{path}: cannot read Parquet ({type(err).__name__}: {err})") from None
        for batch in reader.iter_batches(batch_size=BATCH_ROWS):
            yield from batch.to_pylist()
        return
    with (gzip.open if path.suffix == ".gz" else open)(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield json_line(line, path, lineno)


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
    if src.path is None:
        yield from hub_records(src)
        return
    for path in data_files(Path(src.path)):
        yield from file_records(path)


def fingerprint(sources: list[DatasetSource]) -> str:
    """What the local files are (path, size, mtime): an edited file reruns the import. Hub sets: their id."""
    seen = [
        [str(p), p.stat().st_size, p.stat().st_mtime_ns] if s.path else [source_name(s)]
        for s in sources
        for p in (data_files(Path(s.path)) if s.path else [None])
    ]
    return hashlib.sha256(json.dumps(seen).encode()).hexdigest()[:16]


def drawn(name: str, row: int, weight: float) -> bool:
    """A stable per-row coin with P(True) = weight: the same rows on every run."""
    if weight >= 1:
        return True
    digest = hashlib.blake2b(f"{name}#{row}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < weight * 2**64


# ---------------------------------------------------------------- mixtures


@dataclass
class Mixture:
    """The traces of several sets in recipe order, and the realised mix: rows read and taken per set."""

    sources: list[DatasetSource]
    mix: dict[str, dict[str, Any]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    teachers: set[str] = field(default_factory=set)

    def traces(self) -> Iterator[dict[str, Any]]:
        for src in self.sources:
            yield from self.source_traces(src)

    def source_traces(self, src: DatasetSource) -> Iterator[dict[str, Any]]:
        adapter, name = ADAPTERS[src.adapter], source_name(src)
        entry = self.mix.setdefault(name, {"adapter": src.adapter, "weight": src.weight, "limit": src.limit})
        entry.update(rows_read=0, rows_taken=0, traces=0)
        for row, data in enumerate(records(src), 1):
            if src.limit is not None and entry["rows_taken"] >= src.limit:
                break
            entry["rows_read"] += 1
            if not drawn(name, row, src.weight):
                continue
            out = adapter.convert(Record(data, src.adapter, row), src, adapter)
            entry["rows_taken"] += 1
            entry["traces"] += len(out)
            self.count(out)
            yield from out

    def count(self, traces: list[dict[str, Any]]) -> None:
        c = self.counts
        c["prompts"] += 1
        for t in traces:
            c["traces"] += 1
            c["truncated"] += "truncated" in t["flags"]
            c["malformed"] += "malformed" in t["flags"]
            c[f"verified_{str(t['verified']).lower()}"] += 1
            self.teachers.add(t["teacher"])

    def batches(self, size: int) -> Iterator[list[dict[str, Any]]]:
        batch: list[dict[str, Any]] = []
        for t in self.traces():
            batch.append(t)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

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


def card_section(metrics: dict[str, Any]) -> list[str]:
    """The data card's realised mix (curate's metrics carry generate's): per set or prompt source, what was
    read and taken, and its share."""
    mix = metrics.get("generate", {}).get("mixture")
    if not mix:
        return []
    keys = list(next(iter(mix.values())))
    out = ["## Realised mix", "", "| source | " + " | ".join(k.replace("_", " ") for k in keys) + " |"]
    out.append("|---" * (len(keys) + 1) + "|")
    for name, entry in mix.items():
        cells = [f"{entry[k]:.1%}" if k == "share" else str(entry[k]) for k in keys]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*out, ""]
