"""SFT data: render kept traces with the R1 training template, mask the prompt, pack best-fit-decreasing, collate.

A kept row becomes `bos <｜User｜>{problem+directive}<｜Assistant｜><think>\\n{reasoning}\\n</think>\\n\\n{answer}eos`
with the student's release tokenizer, so training ids equal the ids the released model sees at inference.
The loss covers only the tokens after `<｜Assistant｜>` (the think block, the answer and EOS).

train.objective: kd trains on the teacher's own sampled ids (completion_token_ids) after the student's release
generation prompt `bos <｜User｜>{problem+directive}<｜Assistant｜><think>\n`, so trained position t lines up with the
teacher's top-K row t (teacher_top_ids / teacher_top_logprobs) and nothing is re-tokenised. EOS: a completion that
ends in the teacher's EOS id (a stop, not a truncation) gets the student's release EOS there instead, label and
top-K alike (the teacher's "stop here" is the student's "stop here"); elsewhere teacher ids are kept as they are.
With kd.target: sampled the cached top-K log-probs are each row's as sampled (distill.logits.as_sampled at the
temperature and top_p of its `sampling` field), the distribution its ids were drawn from.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifacts import atomic_dir, atomic_write_text
from distill.errors import DistillError
from distill.logits import COLUMNS as LOGIT_COLUMNS
from distill.logits import as_sampled
from distill.logits import decode as decode_logprobs
from distill.release import ASSISTANT, chat_template

IGNORE = -100  # target of a position that is not trained (prompt, padding, sample end)
ENCODE_BATCH = 512  # rows rendered and tokenized together (the fast tokenizer parallelises a batch)
TRAIN_FIELDS = ("messages", "reasoning", "answer")
# and `sampling` where the shard has it (kd.target: sampled reads it)
KD_FIELDS = ("messages", *LOGIT_COLUMNS)


@dataclass(frozen=True)
class KDRows:
    """How kd reads rows: the teacher's and the student's EOS ids, and the teacher distribution it keeps
    ("sampled": each row's as sampled; "raw": as stored)."""

    teacher_eos: int
    student_eos: int
    target: str  # kd.target


def training_template() -> str:
    return chat_template(train=True)


def training_chat(row: dict[str, Any], where: str) -> list[dict[str, str]]:
    """The chat a kept row is trained on: the last user turn generate sent (problem + directive), then the
    assistant turn with its reasoning (stripped: the template supplies the newlines around it)."""
    users = [m for m in row.get("messages") or [] if m.get("role") == "user"]
    if not users or not isinstance(users[-1].get("content"), str):
        raise DistillError(f"{where}: field 'messages' has no user turn with text content")
    if not isinstance(row.get("answer"), str):
        raise DistillError(f"{where}: field 'answer' is missing or not text")
    reasoning = row.get("reasoning") or ""
    return [
        {"role": "user", "content": users[-1]["content"]},
        {"role": "assistant", "content": row["answer"].strip(), "reasoning_content": reasoning.strip()},
    ]


def render(chat: list[dict[str, str]], tokenizer, template: str) -> str:
    return tokenizer.apply_chat_template(chat, chat_template=template, tokenize=False)


def encode(texts: list[str], tokenizer) -> list[list[int]]:
    """Token ids of rendered texts; the template already wrote bos, so the tokenizer must not add one."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def prompt_length(ids: list[int], assistant_id: int, where: str) -> int:
    """Tokens up to and including `<｜Assistant｜>`: the prefix that gets no loss."""
    try:
        return ids.index(assistant_id) + 1
    except ValueError:
        raise DistillError(
            f"{where}: the rendered sample has no {ASSISTANT} token (is the tokenizer in the release layout?)"
        ) from None


@dataclass
class TokenData:
    """Every trainable sample back to back: sample i is ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray  # int32, memory-mapped from the cache
    offsets: np.ndarray  # int64, n + 1
    n_prompt: np.ndarray  # int32: leading tokens of each sample with no loss
    stats: dict[str, Any]  # rows_in, samples, truncated, dropped {reason: rows}
    top_ids: np.ndarray | None = None  # kd: int32 [trained tokens, K], one row per completion token
    top_logprobs: np.ndarray | None = None  # kd: fp16 [trained tokens, K]
    top_offsets: np.ndarray | None = None  # kd: int64 [n + 1], where each sample's rows start

    def __len__(self) -> int:
        return len(self.n_prompt)

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sample(self, i: int) -> tuple[np.ndarray, int]:
        return np.asarray(self.ids[self.offsets[i] : self.offsets[i + 1]]), int(self.n_prompt[i])

    def teacher_rows(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample i's teacher top-K (ids, log-probs), one row per trained position, in order."""
        start, end = self.top_offsets[i], self.top_offsets[i + 1]
        return np.asarray(self.top_ids[start:end]), np.asarray(self.top_logprobs[start:end])


def cache_key(input_hash: str, tokenizer, template: str, max_length: int, overlong: str) -> str:
    """What the token cache depends on: the curate output, the exact vocabulary, the template, the cut."""
    vocab = tokenizer.backend_tokenizer.to_str()
    parts = [input_hash, vocab, template, str(max_length), overlong]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def kept_rows(shard: Path) -> list[dict[str, Any]]:
    """The fields training reads (traces are long: the raw completion and prompt text stay on disk)."""
    import pyarrow.parquet as pq

    try:
        if pq.read_metadata(shard).num_rows == 0:
            return []
        names = pq.read_schema(shard).names
        missing = [c for c in TRAIN_FIELDS if c not in names]
        table = None if missing else pq.read_table(shard, columns=list(TRAIN_FIELDS))
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DistillError(f"{shard}: cannot read Parquet shard ({type(err).__name__}: {err})") from None
    if missing:
        raise DistillError(f"{shard}: missing field(s) {', '.join(missing)} (expected curate's kept rows)")
    return table.to_pylist()


def encode_shard(shard: Path, tokenizer, template: str, assistant_id: int):
    """Yield (ids, prompt length) for each row of one kept shard, rendering and tokenizing in batches."""
    rows = kept_rows(shard)
    for start in range(0, len(rows), ENCODE_BATCH):
        batch = rows[start : start + ENCODE_BATCH]
        wheres = [f"{shard}: row {start + i}" for i in range(len(batch))]
        texts = [render(training_chat(r, w), tokenizer, template) for r, w in zip(batch, wheres, strict=True)]
        for ids, where in zip(encode(texts, tokenizer), wheres, strict=True):
            yield ids, prompt_length(ids, assistant_id, where)


def kd_rows(shard: Path) -> list[dict[str, Any]]:
    """The fields kd reads; shards (or rows) without the teacher log-prob columns are one clear error."""
    import pyarrow.parquet as pq

    try:
        if pq.read_metadata(shard).num_rows == 0:
            return []
        names = pq.read_schema(shard).names
        missing = [c for c in KD_FIELDS if c not in names]
        extra = ["sampling"] if "sampling" in names else []
        table = None if missing else pq.read_table(shard, columns=[*KD_FIELDS, *extra])
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DistillError(f"{shard}: cannot read Parquet shard ({type(err).__name__}: {err})") from None
    if missing:
        raise DistillError(
            f"{shard}: train.objective=kd needs the teacher log-prob columns, missing: {', '.join(missing)} "
            "(generate with generate.logprobs: K > 0)"
        )
    return table.to_pylist()


def row_sampling(row: dict[str, Any], where: str) -> tuple[float, float]:
    """(temperature, top_p) the row's teacher sampled with, from its `sampling` JSON."""
    try:
        spec = json.loads(row.get("sampling") or "")
        return float(spec["temperature"]), float(spec["top_p"])
    except (ValueError, TypeError, KeyError):
        raise DistillError(
            f"{where}: field 'sampling' has no temperature and top_p ({str(row.get('sampling'))[:80]!r}); "
            "kd.target: sampled needs them (kd.target: raw uses the log-probs as stored)"
        ) from None


def kd_sample(row: dict[str, Any], prompt: list[int], kd: KDRows, k: int, where: str):
    """(ids, prompt length, top ids [T, k], top log-probs [T, k]) of one kd row."""
    lp = decode_logprobs(row)
    if lp is None or len(lp.token_ids) == 0:
        raise DistillError(
            f"{where}: no teacher log-probs (teacher_top_ids is null or empty); kd needs every row's"
        )
    if kd.target == "sampled":
        lp.top_logprobs = as_sampled(lp.top_logprobs, *row_sampling(row, where))
    top_ids = np.full((len(lp.token_ids), k), -1, dtype=np.int32)
    top_lp = np.full((len(lp.token_ids), k), -np.inf, dtype=np.float32)
    keep = min(k, lp.top_ids.shape[1])  # rows are best first: a wider row is cut, a narrower one padded
    top_ids[:, :keep], top_lp[:, :keep] = lp.top_ids[:, :keep], lp.top_logprobs[:, :keep]
    completion = lp.token_ids.copy()
    teacher_eos, student_eos = kd.teacher_eos, kd.student_eos
    if completion[-1] == teacher_eos and teacher_eos != student_eos:
        completion[-1] = student_eos
        last = top_ids[-1] == teacher_eos
        if student_eos in top_ids[-1]:  # already ranked (a self-distilled pair): keep that one entry
            top_ids[-1][last], top_lp[-1][last] = -1, -np.inf
        else:
            top_ids[-1][last] = student_eos
    return prompt + completion.tolist(), len(prompt), top_ids, top_lp


def encode_kd_shard(shard: Path, tokenizer, template: str, kd: KDRows, k: int | None):
    """Yield (ids, prompt length, top ids, top log-probs) per row: the release generation prompt, then the
    teacher's sampled ids. k None: the first row's K (every later row is cut or padded to it)."""
    for i, row in enumerate(kd_rows(shard)):
        where = f"{shard}: row {i}"
        chat = training_chat({**row, "answer": ""}, where)[:1]
        text = tokenizer.apply_chat_template(
            chat, chat_template=template, tokenize=False, add_generation_prompt=True
        )
        if k is None:
            lp = decode_logprobs(row)
            k = lp.top_ids.shape[1] if lp is not None and lp.top_ids.ndim == 2 else 1
        yield kd_sample(row, encode([text], tokenizer)[0], kd, k, where)


def build_tokens(
    src: Path, tokenizer, max_length: int, overlong: str, folder: Path, key: str, kd: KDRows | None = None
) -> None:
    """Render and tokenize every kept row, shard by shard (traces are long: never all in memory), into
    folder/ids.bin + offsets.npy + n_prompt.npy (kd: also top_ids.bin and
    top_logprobs.bin, one row per trained token); key.json is written last and the folder appears at once."""
    kept = Path(src) / "kept"
    shards = sorted(kept.glob("part-*.parquet"))
    if not shards:
        raise DistillError(
            f"{kept}: no part-*.parquet shards: the curated dataset is empty (curate's manifest.json says "
            "why rows were dropped), or --data is not a curate stage dir"
        )
    with atomic_dir(folder) as tmp:
        stats = _write_tokens(shards, tokenizer, max_length, overlong, tmp, kd)
        atomic_write_text(tmp / "key.json", json.dumps({"key": key, "stats": stats}))


def _samples(shards: list[Path], tokenizer, kd: KDRows | None):
    """(ids, prompt length, top ids | None, top log-probs | None) of every kept row, shard by shard."""
    template, assistant_id = training_template(), tokenizer.convert_tokens_to_ids(ASSISTANT)
    k = None
    for shard in shards:
        if kd is None:
            for ids, n in encode_shard(shard, tokenizer, template, assistant_id):
                yield ids, n, None, None
            continue
        for ids, n, top_ids, top_lp in encode_kd_shard(shard, tokenizer, template, kd, k):
            k = top_ids.shape[1]
            yield ids, n, top_ids, top_lp


def _write_tokens(shards, tokenizer, max_length: int, overlong: str, tmp: Path, kd) -> dict[str, Any]:
    offsets, n_prompt = [0], []
    stats: dict[str, Any] = {"rows_in": 0, "truncated": 0, "dropped": {}}
    with contextlib.ExitStack() as files:
        f = files.enter_context(open(tmp / "ids.bin", "wb"))
        tops = [files.enter_context(open(tmp / n, "wb")) for n in ("top_ids.bin", "top_logprobs.bin")]
        for ids, n, top_ids, top_lp in _samples(shards, tokenizer, kd):
            stats["rows_in"] += 1
            ids, reason = fit(ids, n, max_length, overlong)
            if reason == "truncated":
                stats["truncated"] += 1
            elif reason is not None:
                stats["dropped"][reason] = stats["dropped"].get(reason, 0) + 1
                continue
            f.write(np.asarray(ids, dtype=np.int32).tobytes())
            offsets.append(offsets[-1] + len(ids))
            n_prompt.append(n)
            if top_ids is not None:
                stats["k"] = top_ids.shape[1]
                tops[0].write(top_ids[: len(ids) - n].astype("<i4").tobytes())
                tops[1].write(top_lp[: len(ids) - n].astype("<f2").tobytes())
    stats["samples"] = len(n_prompt)
    np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(tmp / "n_prompt.npy", np.asarray(n_prompt, dtype=np.int32))
    return stats


def fit(ids: list[int], n_prompt: int, max_length: int, overlong: str) -> tuple[list[int], str | None]:
    """Apply max_length: (ids, None) when the sample fits; else cut to max_length ("truncated": it keeps its
    first max_length tokens and loses its EOS) or drop it ("overlong"). A prompt that leaves no completion
    token inside max_length is always dropped ("prompt_too_long")."""
    if len(ids) <= max_length:
        return ids, None
    if n_prompt >= max_length:
        return ids, "prompt_too_long"
    if overlong == "drop":
        return ids, "overlong"
    return ids[:max_length], "truncated"


def read_key(folder: Path) -> str | None:
    path = folder / "key.json"
    return json.loads(path.read_text())["key"] if path.exists() else None


def load_tokens(folder: Path) -> TokenData:
    meta = json.loads((folder / "key.json").read_text())
    offsets = np.load(folder / "offsets.npy")
    ids = np.memmap(folder / "ids.bin", dtype=np.int32, mode="r") if offsets[-1] else np.zeros(0, np.int32)
    data = TokenData(ids, offsets, np.load(folder / "n_prompt.npy"), meta["stats"])
    k = meta["stats"].get("k")
    if k:  # kd: teacher rows per trained token
        data.top_ids = np.memmap(folder / "top_ids.bin", dtype="<i4", mode="r").reshape(-1, k)
        data.top_logprobs = np.memmap(folder / "top_logprobs.bin", dtype="<f2", mode="r").reshape(-1, k)
        data.top_offsets = np.concatenate([[0], np.cumsum(data.lengths() - data.n_prompt)]).astype(np.int64)
    return data


def teacher_batch(data: TokenData, indices: list[int]) -> dict[str, Any]:
    """kd: the teacher's top-K rows of a micro-batch, in the order collate_* lays out its trained positions
    (sample after sample, each sample's completion tokens in order)."""
    import torch

    rows = [data.teacher_rows(i) for i in indices]
    return {
        "top_ids": torch.from_numpy(np.concatenate([r[0] for r in rows]).astype(np.int64)),
        "top_logprobs": torch.from_numpy(np.concatenate([r[1] for r in rows]).astype(np.float32)),
    }


def pack_bfd(lengths: list[int] | np.ndarray, capacity: int) -> list[list[int]]:
    """Best-fit decreasing: take samples longest first and put each into the open bin with the least room
    that still fits it, opening a new bin when none does. E.g. capacity 10, lengths [6, 5, 4, 3, 2] ->
    [[0, 2], [1, 3, 4]] (6+4 and 5+3+2: two full bins). Returns sample indices per bin."""
    order = sorted(range(len(lengths)), key=lambda i: -int(lengths[i]))
    smallest = int(min(lengths)) if len(lengths) else 0
    rooms: list[tuple[int, int]] = []  # (room left, bin), sorted; bins with no room for any sample leave it
    bins: list[list[int]] = []
    for i in order:
        size = int(lengths[i])
        j = bisect.bisect_left(rooms, (size, -1))
        if j == len(rooms):
            bins.append([i])
            room, b = capacity - size, len(bins) - 1
        else:
            room, b = rooms.pop(j)
            bins[b].append(i)
            room -= size
        if room >= smallest:
            bisect.insort(rooms, (room, b))
    return bins


def training_units(lengths: np.ndarray, capacity: int, packing: bool) -> list[list[int]]:
    """What a micro-batch is made of: packed bins, or single samples to be padded together."""
    return pack_bfd(lengths, capacity) if packing else [[i] for i in range(len(lengths))]


def epoch_micro_batches(
    units: list[list[int]], micro_batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """This epoch's micro-batches (sample indices), micro_batch_size units each (packed bins become one flat
    row); the order is shuffled per epoch and is the same on every rank."""
    order = list(units)
    random.Random(seed * 100_003 + epoch).shuffle(order)
    return [sum(order[k : k + micro_batch_size], []) for k in range(0, len(order), micro_batch_size)]


def steps_per_epoch(n_micro: int, world: int, accum: int) -> int:
    return max(1, -(-n_micro // (world * accum)))


def step_micro_batches(
    micro: list[list[int]], step_in_epoch: int, world: int, rank: int, accum: int
) -> list[list[int]]:
    """The accum micro-batches of one optimizer step for one rank. The epoch's list wraps around so every
    rank runs the same number of micro-steps (a rank with fewer would hang the others' collectives)."""
    first = (step_in_epoch * world + rank) * accum
    return [micro[(first + k) % len(micro)] for k in range(accum)]


def targets(ids: np.ndarray, n_prompt: int) -> np.ndarray:
    """Next-token targets, already shifted: position t is trained to predict ids[t + 1] when that token is
    past the prompt. The last position predicts nothing, so packed samples never predict each other."""
    out = np.full(len(ids), IGNORE, dtype=np.int64)
    out[n_prompt - 1 : -1] = ids[n_prompt:]
    return out


def trained(target: np.ndarray) -> dict[str, Any]:
    """The loss's view of a batch: flat indices of trained positions and their labels, found on the host
    (so the GPU never stops to look for them)."""
    import torch

    positions = np.flatnonzero(target.reshape(-1) != IGNORE)
    return {
        "positions": torch.from_numpy(positions),
        "labels": torch.from_numpy(target.reshape(-1)[positions]),
    }


def collate_packed(samples: list[tuple[np.ndarray, int]]) -> dict[str, Any]:
    """Padding-free: all samples in one row [1, T]; position_ids restart at 0 per sample, which is what
    flash-attention (varlen) and transformers' sdpa/eager block-diagonal mask read the boundaries from."""
    import torch

    lengths = [len(ids) for ids, _ in samples]
    cu = np.concatenate([[0], np.cumsum(lengths)])
    target = np.concatenate([targets(ids, n) for ids, n in samples])
    return {
        "input_ids": torch.from_numpy(np.concatenate([ids for ids, _ in samples]).astype(np.int64))[None],
        "position_ids": torch.from_numpy(np.concatenate([np.arange(n) for n in lengths]))[None],
        "targets": torch.from_numpy(target)[None],
        **trained(target),
        "cu_seq_lens": torch.from_numpy(cu.astype(np.int32)),  # flash-attn varlen boundaries
        "max_seq_len": max(lengths),
        "seq_lens": lengths,
    }


def collate_padded(samples: list[tuple[np.ndarray, int]], pad_id: int) -> dict[str, Any]:
    """Right-padded [B, T] with an attention mask. Targets of padding are IGNORE by position, never by
    comparing ids with pad_id: pad may equal EOS, and EOS must stay trained."""
    import torch

    width = max(len(ids) for ids, _ in samples)
    input_ids = np.full((len(samples), width), pad_id, dtype=np.int64)
    target = np.full((len(samples), width), IGNORE, dtype=np.int64)
    mask = np.zeros((len(samples), width), dtype=np.int64)
    for row, (ids, n) in enumerate(samples):
        input_ids[row, : len(ids)], target[row, : len(ids)], mask[row, : len(ids)] = ids, targets(ids, n), 1
    positions = np.broadcast_to(np.arange(width), (len(samples), width)).copy()
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(mask),
        "position_ids": torch.from_numpy(positions),
        "targets": torch.from_numpy(target),
        **trained(target),
        "seq_lens": [len(ids) for ids, _ in samples],
    }


def token_utilisation(lengths: np.ndarray, groups: list[list[int]], capacity: int, packing: bool) -> float:
    """Real tokens / token slots. A packed bin (groups = bins) reserves `capacity` slots; a padded batch
    (groups = micro-batches) computes B x its longest sample."""
    real = sum(int(lengths[i]) for g in groups for i in g)
    if packing:
        return real / (len(groups) * capacity)
    return real / sum(len(g) * max(int(lengths[i]) for i in g) for g in groups)
