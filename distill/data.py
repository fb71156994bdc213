"""Data-source registry: named prompt sets and benchmarks -> prompt rows, from DISTILL_DATA_DIR or the Hub."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.errors import DistillError

# Prompt row (design.md): prompt_id, domain, problem, reference, source, license.
PROMPT_FIELDS = ("prompt_id", "domain", "problem", "reference", "source", "license")


@dataclass(frozen=True)
class DataSource:
    name: str
    hub_id: str
    hub_config: str | None
    files: dict[str, str]  # split -> file under DISTILL_DATA_DIR/<name>/ (jsonl, jsonl.gz, csv.gz)
    domain: str  # math | code | mcq | general
    license: str
    to_row: str  # key into ROW_BUILDERS: how a raw record becomes (problem, reference, id)
    benchmark: bool = False  # evaluation set: decontaminate training prompts against it
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split -> hub split name


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in text, braces balanced; None if absent."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    start = text.find("{", idx)
    if start < 0:
        return None
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i]
    return None


def gsm8k_answer(solution: str) -> str:
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def _math_row(r: dict) -> tuple[str, str | None, str | None]:
    ref = r.get("answer") or r.get("final_answer") or last_boxed(r.get("solution") or "")
    if isinstance(ref, list):  # olympiadbench: a list of final answers
        ref = ", ".join(str(x) for x in ref)
    rid = r.get("unique_id") or r.get("id") or r.get("idx")
    return r.get("problem") or r.get("question"), None if ref is None else str(ref).strip(), rid


def _aime_row(r: dict) -> tuple[str, str | None, str | None]:
    problem, ref, rid = _math_row(r)
    if ref is not None and re.fullmatch(r"-?\d+\.0", ref):  # amc23 stores 27.0
        ref = ref[:-2]
    return problem, ref, rid


def _gsm8k_row(r: dict) -> tuple[str, str | None, str | None]:
    return r["question"], gsm8k_answer(r["answer"]), None


def _humaneval_row(r: dict) -> tuple[str, str | None, str | None]:
    tests = {"format": "humaneval", "prompt": r["prompt"], "test": r["test"], "entry_point": r["entry_point"]}
    problem = "Complete the following Python function.\n\n```python\n" + r["prompt"] + "```"
    return problem, json.dumps(tests), r["task_id"]


def _mbpp_row(r: dict) -> tuple[str, str | None, str | None]:
    test_list = r.get("test_list") or r.get("test")
    tests = {"format": "mbpp", "setup": r.get("test_setup_code") or "", "tests": list(test_list)}
    tests["challenge"] = list(r.get("challenge_test_list") or [])  # graded only when asked
    text = r.get("text") or r.get("prompt")
    problem = f"{text}\nYour code should pass these tests:\n\n" + "\n".join(test_list)
    return problem, json.dumps(tests), str(r["task_id"])


def _gpqa_row(r: dict) -> tuple[str, str | None, str | None]:
    """GPQA: shuffle the four choices with a seed from the record id, so the letter is stable."""
    choices = [r["Correct Answer"], r["Incorrect Answer 1"], r["Incorrect Answer 2"], r["Incorrect Answer 3"]]
    order = list(range(4))
    random.Random(r["Record ID"]).shuffle(order)
    letters = "ABCD"
    body = "\n".join(f"{letters[i]}) {choices[j].strip()}" for i, j in enumerate(order))
    answer = letters[order.index(0)]
    return f"{r['Question'].strip()}\n\n{body}", answer, r["Record ID"]


# LiveCodeBench's own prompt lines (lcb_runner/prompts/code_generation.py), for LeetCode starters and stdin programs
LCB_STARTER = "You will use the following starter code to write the solution to the problem and enclose your code within delimiters."
LCB_STDIN = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the "
    "sample inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, "
    "it reads the inputs, runs the algorithm and writes output to STDOUT."
)
# release windows by contest date, inclusive months; "YYYY-MM..YYYY-MM" selects any other window
LCB_WINDOWS = {"deepseek-r1": ("2024-08", "2025-01")}


def livecodebench_window(split: str) -> tuple[str, str]:
    """A window "2024-08..2025-01" or a named one -> (first month, last month)."""
    if split in LCB_WINDOWS:
        return LCB_WINDOWS[split]
    found = re.fullmatch(r"(\d{4}-(?:0[1-9]|1[0-2]))\.\.(\d{4}-(?:0[1-9]|1[0-2]))", split)
    if found is None or found.group(1) > found.group(2):
        raise DistillError(
            f"data set 'livecodebench': unknown window '{split}' "
            f"(use YYYY-MM..YYYY-MM, e.g. 2024-08..2025-01, or one of: {', '.join(LCB_WINDOWS)})"
        )
    return found.group(1), found.group(2)


def _livecodebench_row(r: dict) -> tuple[str, str | None, str | None]:
    from distill.graders.stdio import from_livecodebench

    where = f"livecodebench row {r.get('question_id')!r}"
    if not isinstance(r.get("question_content"), str) or not r.get("question_id"):
        raise DistillError(f"{where}: malformed LiveCodeBench row (no question_id or question_content)")
    starter = r.get("starter_code") or ""
    code = starter or "# YOUR CODE HERE"
    ask = f"{LCB_STARTER if starter else LCB_STDIN}\n```python\n{code}\n```"
    return f"{r['question_content']}\n\n{ask}", json.dumps(from_livecodebench(r, where)), r["question_id"]


ROW_BUILDERS: dict[str, Callable[[dict], tuple[str, str | None, str | None]]] = {
    "math": _math_row,
    "aime": _aime_row,
    "gsm8k": _gsm8k_row,
    "humaneval": _humaneval_row,
    "mbpp": _mbpp_row,
    "gpqa": _gpqa_row,
    "livecodebench": _livecodebench_row,
}

# Generated, not downloaded: one-step arithmetic word problems a 135M model solves now and then, so the CPU demo's
# rejection sampling keeps something (SmolLM2-135M gets ~1% of GSM8K and MATH Level 1 samples right).
# Every 8-word window of a template that holds one number also holds the (split-specific) name, or it holds both
# numbers: with disjoint (template, a, b) problems, no train prompt shares an 8-gram with dev or test that the
# benchmark side indexes (number-free windows are template phrasing), whatever the corpus size (tests/test_demo.py).
ARITH_TEMPLATES = [
    ("{name} has {a} apples. Then {name} buys {b} more. How many apples does {name} have now?", "add"),
    ("{name} had {a} stickers and {name} gave {b} away. How many stickers does {name} have left?", "sub"),
    ("{name} has {b} boxes. In each box {name} puts {a} pencils. How many pencils does {name} have?", "mul"),
    ("{name} reads {a} pages a day. In {b} days {name} reads how many pages?", "mul"),
    ("{name} sees {a} birds on a tree. {name} sees {b} more. How many birds does {name} see?", "add"),
    (
        "{name} has {a} cookies and {b} friends. {name} gives each friend the same number. How many cookies does each friend get?",
        "div",
    ),
]
ARITH_A, ARITH_B = range(2, 21), range(2, 10)  # the first and second number, the same for every split
# split -> (problems, names): every (template, a, b) problem is in one split only; 6 x 19 x 8 = 912 in all
ARITH_SPLITS = {
    "test": (200, ["Nina", "Paul", "Rosa", "Ivan", "Zoe", "Hugo", "Mia", "Raj"]),
    "dev": (200, ["Ella", "Finn", "Gia", "Omar", "Ines", "Kai", "Lucy", "Noah"]),
    "train": (512, ["Tom", "Anna", "Ben", "Maya", "Leo", "Sara", "Dev", "Lina"]),
}


def arith_problems() -> dict[str, list[tuple[int, int, int]]]:
    """Every (template, a, b) once, shuffled with a fixed seed and cut into the splits in ARITH_SPLITS order."""
    combos = [(t, a, b) for t in range(len(ARITH_TEMPLATES)) for a in ARITH_A for b in ARITH_B]
    random.Random(0).shuffle(combos)
    out, start = {}, 0
    for split, (count, _) in ARITH_SPLITS.items():
        out[split], start = combos[start : start + count], start + count
    return out


def arith_records(split: str) -> list[dict]:
    """Deterministic synthetic records: the same split always yields the same problems and answers."""
    _, names = ARITH_SPLITS[split]
    rng = random.Random(split)
    records = []
    for i, (t, a, b) in enumerate(arith_problems()[split]):
        template, op = ARITH_TEMPLATES[t]
        # sub and div are stated backwards from their answer a: no negative results, no remainders
        first = {"sub": a + b, "div": a * b}.get(op, a)
        answer = {"add": a + b, "sub": a, "mul": a * b, "div": a}[op]
        problem = template.format(name=rng.choice(names), a=first, b=b)
        records.append({"id": f"{split}-{i}", "problem": problem, "answer": str(answer)})
    return records


QWEN_EVAL = "MIT (QwenLM/Qwen2.5-Math evaluation)"
SOURCES: dict[str, DataSource] = {
    s.name: s
    for s in [
        DataSource(
            "arith",
            "(generated by distill.data.arith_records)",
            None,
            {"train": "<generated>", "dev": "<generated>", "test": "<generated>"},
            "math",
            "CC0 (generated)",
            "aime",
        ),
        DataSource(
            "gsm8k",
            "openai/gsm8k",
            "main",
            {"train": "train.jsonl", "test": "test.jsonl"},
            "math",
            "MIT",
            "gsm8k",
        ),
        DataSource(
            "math",
            "DigitalLearningGmbH/MATH-lighteval",
            None,
            {"train": "train.jsonl", "test": "test.jsonl"},
            "math",
            "MIT",
            "math",
        ),
        DataSource(
            "math500",
            "HuggingFaceH4/MATH-500",
            None,
            {"test": "test.jsonl"},
            "math",
            "MIT",
            "math",
            benchmark=True,
        ),
        DataSource(
            "aime24",
            "HuggingFaceH4/aime_2024",
            None,
            {"test": "test.jsonl"},
            "math",
            QWEN_EVAL,
            "aime",
            benchmark=True,
            hub_splits={"test": "train"},
        ),
        DataSource(
            "aime25",
            "opencompass/AIME2025",
            None,
            {"test": "aime2025-I.jsonl,aime2025-II.jsonl"},
            "math",
            "MIT",
            "aime",
            benchmark=True,
        ),
        DataSource(
            "amc23", "math-ai/amc23", None, {"test": "test.jsonl"}, "math", QWEN_EVAL, "aime", benchmark=True
        ),
        DataSource(
            "minerva_math",
            "math-ai/minervamath",
            None,
            {"test": "test.jsonl"},
            "math",
            "CC BY-NC-SA (MIT OCW); evaluation only",
            "math",
            benchmark=True,
        ),
        DataSource(
            "olympiadbench",
            "Hothan/OlympiadBench",
            "OE_TO_maths_en_COMP",
            {"test": "test.jsonl"},
            "math",
            "Apache-2.0 (OpenBMB); check upstream",
            "math",
            benchmark=True,
            hub_splits={"test": "train"},
        ),
        DataSource(
            "gpqa_diamond",
            "Idavidrein/gpqa",
            "gpqa_diamond",
            {"test": "gpqa_diamond.csv.gz"},
            "mcq",
            "CC BY 4.0 (do not post examples in plain text)",
            "gpqa",
            benchmark=True,
            hub_splits={"test": "train"},
        ),
        DataSource(
            "humaneval",
            "openai/openai_humaneval",
            None,
            {"test": "HumanEval.jsonl.gz"},
            "code",
            "MIT",
            "humaneval",
            benchmark=True,
        ),
        DataSource(
            "mbpp",
            "google-research-datasets/mbpp",
            "full",
            {"train": "mbpp.jsonl", "test": "mbpp_test.jsonl"},
            "code",
            "CC BY 4.0",
            "mbpp",
            benchmark=True,
        ),
        DataSource(
            "livecodebench",
            "livecodebench/code_generation_lite",
            None,
            {"test": "test.jsonl"},  # split: a release window instead, e.g. livecodebench:2024-08..2025-01
            "code",
            "CC BY 4.0 (LiveCodeBench); problems from LeetCode, AtCoder, Codeforces",
            "livecodebench",
            benchmark=True,
        ),
    ]
}
BENCHMARKS = [s.name for s in SOURCES.values() if s.benchmark]


def split_spec(name: str, split: str | None = None) -> tuple[str, str | None]:
    """`gsm8k:test` -> ("gsm8k", "test"): recipes name a benchmark split inline."""
    if ":" in name:
        name, split = name.split(":", 1)
    return name, split


def get_source(name: str) -> DataSource:
    name, _ = split_spec(name)
    if name not in SOURCES:
        raise DistillError(f"unknown data set '{name}' (known: {', '.join(SOURCES)})")
    return SOURCES[name]


def data_dir() -> Path | None:
    value = os.environ.get("DISTILL_DATA_DIR")
    return Path(value) if value else None


def _read_records(path: Path) -> list[dict]:
    if not path.exists():
        raise DistillError(f"data file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        if ".csv" in path.suffixes:
            return list(csv.DictReader(f))
        return [_json_line(line, path, i) for i, line in enumerate(f, 1) if line.strip()]


def _json_line(line: str, path: Path, lineno: int) -> dict:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise DistillError(f"{path}: row {lineno}: invalid JSON ({err.msg})") from None


def _hub_records(src: DataSource, split: str) -> list[dict]:
    import datasets  # heavy; only when the Hub path is taken

    hub_split = src.hub_splits.get(split, split)
    try:
        return list(datasets.load_dataset(src.hub_id, src.hub_config, split=hub_split))
    except Exception as err:
        raise DistillError(
            f"data set '{src.name}': cannot load {src.hub_id} from the Hub ({type(err).__name__}); "
            "set DISTILL_DATA_DIR to a local copy"
        ) from None


def raw_records(name: str, split: str | None = None) -> list[dict]:
    """Records of a registry source: from DISTILL_DATA_DIR/<name>/ when set, else from the Hub."""
    name, split = split_spec(name, split)
    src = get_source(name)
    split = split or ("train" if "train" in src.files else "test")
    if name == "livecodebench" and split != "test":  # a release window: the file filtered by contest date
        first, last = livecodebench_window(split)
        return [r for r in raw_records(name, "test") if first <= str(r.get("contest_date", ""))[:7] <= last]
    if split not in src.files:
        raise DistillError(f"data set '{name}' has no split '{split}' (has: {', '.join(src.files)})")
    if src.files[split] == "<generated>":
        return arith_records(split)
    root = data_dir()
    if root is None:
        return _hub_records(src, split)
    records: list[dict] = []
    for fname in src.files[split].split(","):
        records.extend(_read_records(root / name / fname))
    return records


def content_id(problem: str) -> str:
    return hashlib.sha256(problem.strip().encode()).hexdigest()[:16]


def load_prompts(name: str, split: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Prompt rows of a registry source, with stable ids (source id, else a content hash)."""
    name, split = split_spec(name, split)
    src = get_source(name)
    build = ROW_BUILDERS[src.to_row]
    rows = []
    for i, rec in enumerate(raw_records(name, split)[:limit]):
        problem, reference, rid = build(rec)
        if not problem:
            raise DistillError(f"data set '{name}': row {i + 1}: empty problem")
        rows.append(
            {
                "prompt_id": f"{name}/{rid}" if rid is not None else f"{name}/{content_id(problem)}",
                "domain": src.domain,
                "problem": problem,
                "reference": reference,
                "source": name,
                "license": src.license,
            }
        )
    return rows


def load_prompt_file(
    path: str | Path, columns: dict[str, str], domain: str | None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Prompt rows from any JSONL/Parquet file; `columns` maps our fields (problem, reference, ...) to its."""
    path = Path(path)
    if path.suffix == ".parquet":
        from distill.artifacts import read_parquet

        records = read_parquet(path)
    else:
        records = _read_records(path)
    return _map_columns(records[:limit], columns, domain, str(path))


def _map_columns(
    records: Iterable[dict], columns: dict[str, str], domain: str | None, where: str
) -> list[dict]:
    col = {"problem": "problem", "reference": "answer", "prompt_id": "id", "domain": "domain", **columns}
    rows = []
    for i, rec in enumerate(records, 1):
        problem = rec.get(col["problem"])
        if not isinstance(problem, str) or not problem.strip():
            raise DistillError(f"{where}: row {i}: missing or empty field '{col['problem']}' (the problem)")
        ref = rec.get(col["reference"])
        rid = rec.get(col["prompt_id"])
        rows.append(
            {
                "prompt_id": str(rid) if rid is not None else content_id(problem),
                "domain": rec.get(col["domain"]) or domain or "general",
                "problem": problem,
                "reference": None if ref is None else (ref if isinstance(ref, str) else json.dumps(ref)),
                "source": where,
                "license": rec.get("license") or "unknown",
            }
        )
    return rows


def load_hub_dataset(
    hub_id: str, split: str, columns: dict[str, str], domain: str | None, limit: int | None = None
) -> list[dict[str, Any]]:
    import datasets

    try:
        ds = datasets.load_dataset(hub_id, split=split)
    except Exception as err:
        raise DistillError(f"cannot load data set '{hub_id}' ({type(err).__name__}: {err})") from None
    return _map_columns(list(ds)[:limit], columns, domain, hub_id)


def load_source(
    source: str,
    split: str | None = None,
    limit: int | None = None,
    columns: dict[str, str] | None = None,
    domain: str | None = None,
) -> list[dict[str, Any]]:
    """A prompt source from a recipe: registry name, local JSONL/Parquet path, or hub dataset id."""
    if split_spec(source)[0] in SOURCES:
        rows = load_prompts(source, split, limit)
        return [{**r, "domain": domain or r["domain"]} for r in rows]
    if Path(source).suffix in {".jsonl", ".json", ".parquet", ".gz"} or Path(source).exists():
        return load_prompt_file(source, columns or {}, domain, limit)
    if "/" in source:
        return load_hub_dataset(source, split or "train", columns or {}, domain, limit)
    raise DistillError(f"unknown data set '{source}' (known: {', '.join(SOURCES)}; or a file path / hub id)")
