"""LLM judge: a model compares the gold answer with the prediction where the rules cannot (off by default).

DeepSeek graded such answers with DeepSeek-V3 ("feeding the ground-truth and model predictions into
DeepSeek-V3 for judgment"). The judge is any teacher config (vllm in process, or an OpenAI-compatible server)
and is asked for one word; a thinking judge may reason first, only the text after its </think> is read.

    judge says "... CORRECT"            -> correct
    judge says "INCORRECT"              -> wrong
    judge says "they look similar"      -> unparseable (the rule verdict stays unparseable too)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from distill.config import TeacherConfig
from distill.release import THINK_CLOSE

PROMPT = """You are grading a student's final answer against the reference answer.

Problem:
{problem}

Reference answer:
{reference}

Student's final answer:
{prediction}

Do the two answers agree (same value, expression or choice; ignore formatting and units)? \
Reply with exactly one word: CORRECT or INCORRECT."""
PREDICTION_CHARS = 2000  # of the answer's end, when the rules extracted nothing
CACHE_BATCH = 256  # judge requests between cache appends: a crash loses at most this many verdicts
VERDICT_RE = re.compile(r"\b(INCORRECT|CORRECT)\b", re.IGNORECASE)


def judge_prompt(problem: str, reference: str, prediction: str) -> str:
    return PROMPT.format(
        problem=problem.strip(),
        reference=reference.strip(),
        prediction=prediction.strip()[-PREDICTION_CHARS:],
    )


def parse_judgement(text: str) -> str:
    """correct | wrong | unparseable, from the judge's last CORRECT/INCORRECT after any reasoning."""
    found = VERDICT_RE.findall(text.rsplit(THINK_CLOSE, 1)[-1])
    if not found:
        return "unparseable"
    return "correct" if found[-1].upper() == "CORRECT" else "wrong"


def grader_name(cfg: TeacherConfig) -> str:
    return f"judge:{cfg.model}"


def judge_requests(items: list[tuple[str, str, str]], cfg: TeacherConfig) -> list[Any]:
    """One greedy GenRequest per (problem, reference, prediction), rendered with the judge's chat template
    (loaded once; without one the server renders the messages)."""
    from distill.engines.backends import GenRequest
    from distill.engines.prompts import load_teacher_tokenizer, render

    tokenizer = load_teacher_tokenizer(cfg)
    requests = []
    for problem, reference, prediction in items:
        messages = [{"role": "user", "content": judge_prompt(problem, reference, prediction)}]
        text = render(tokenizer, messages, force_think=False) if tokenizer is not None else ""
        requests.append(GenRequest(messages, text, seed=0))
    return requests


def ask(backend: Any, requests: list[Any], max_tokens: int) -> list[str]:
    from distill.engines.backends import SamplingSpec

    outs = backend.generate(requests, SamplingSpec(n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens))
    return [parse_judgement(o[0].text) for o in outs]


def judge(
    items: list[tuple[str, str, str]], cfg: TeacherConfig, max_tokens: int = 1024, backend: Any = None
) -> list[str]:
    """Verdicts for (problem, reference, prediction) items; starts the judge's backend unless one is given."""
    from distill.engines.backends import make_backend

    if not items:
        return []
    requests = judge_requests(items, cfg)
    owned = backend is None
    backend = backend or make_backend(cfg)
    try:
        return ask(backend, requests, max_tokens)
    finally:
        if owned:
            backend.close()


def _cache_key(item: tuple[str, str, str], cfg: TeacherConfig, max_tokens: int) -> str:
    text = json.dumps([judge_prompt(*item), cfg.model, max_tokens])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def read_cache(path: Path) -> dict[str, str]:
    """Verdicts already paid for; a line torn by a crash mid-write is ignored."""
    found = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        found[row["key"]] = row["verdict"]
    return found


def judge_cached(
    items: list[tuple[str, str, str]], cfg: TeacherConfig, max_tokens: int, cache: Path
) -> list[str]:
    """judge() with a resume cache (JSONL, appended every CACHE_BATCH verdicts): a rerun after a crash only
    asks about items not judged yet, and starts no judge at all when every verdict is cached."""
    from distill.engines.backends import make_backend

    keys = [_cache_key(item, cfg, max_tokens) for item in items]
    done = read_cache(cache)
    todo = list({k: item for k, item in zip(keys, items, strict=True) if k not in done}.items())
    if todo:
        requests = judge_requests([item for _, item in todo], cfg)
        backend = make_backend(cfg)
        try:
            with open(cache, "a") as f:
                for start in range(0, len(todo), CACHE_BATCH):
                    batch = todo[start : start + CACHE_BATCH]
                    verdicts = ask(backend, requests[start : start + CACHE_BATCH], max_tokens)
                    for (key, _), verdict in zip(batch, verdicts, strict=True):
                        done[key] = verdict
                        f.write(json.dumps({"key": key, "verdict": verdict}) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
        finally:
            backend.close()
    return [done[k] for k in keys]
