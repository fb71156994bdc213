"""`distill curate RECIPE`: generate shards -> kept/ + dropped/ shards, a data card and the manifest.

Order of the chain (each dropped row keeps the first reason that applies):
  1. prompts   duplicate_prompt, near_duplicate_prompt (MinHash-LSH), contaminated (benchmark n-grams)
  2. rows      the R1 checks of checks.CHECKS, then duplicate_sample (same prompt) / duplicate_trace
               (another prompt), contaminated_trace (decontaminate.check_traces)
  3. verify    bad_reference, then the verdict: wrong, unparseable, timeout (an LLM judge, when configured,
               re-grades unparseable answers); rows no grader handles are unverified
  4. select    all_correct | max_k | shortest per prompt; the correct rows left over are not_selected

Step 2-3 results are cached per input shard under out/_work/<key>/ (the shard's record file is its marker), and
judge verdicts in out/_work/<key>/judge.jsonl, so a rerun after a crash resumes where verification stopped.
The kept/ and dropped/ shards mirror the input shard numbering; manifest.json is written last.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from distill.artifacts import (
    Manifest,
    finish_manifest,
    manifest_hash,
    prepare_stage,
    read_manifest,
    read_parquet,
    write_parquet,
)
from distill.config import CurateConfig, Recipe, config_hash
from distill.curate import checks, dedup
from distill.errors import DistillError

REQUIRED = (
    "prompt_id",
    "domain",
    "problem",
    "reference",
    "sample_index",
    "reasoning",
    "answer",
    "completion",
    "flags",
    "completion_tokens",
)
PROMPT_REASONS = ("duplicate_prompt", "near_duplicate_prompt", "contaminated")
VERDICT_REASONS = ("wrong", "unparseable", "timeout")
# chain order, for the yields table of the card
REASONS = (
    *PROMPT_REASONS,
    "no_reference",
    "truncated",
    "malformed",
    "too_short",
    "too_long",
    "mixed_language",
    "long_paragraph",
    "code_in_reasoning",
    "repetition",
    "duplicate_sample",
    "duplicate_trace",
    "contaminated_trace",
    "bad_reference",
    *VERDICT_REASONS,
    "unverified",
    "not_selected",
)


def curate(recipe: Recipe, src: Path, out: Path, force: bool = False) -> Manifest:
    cfg = recipe.curate
    src, out = Path(src), Path(out)
    inputs = {"generate": manifest_hash(src)}
    if cfg.decontaminate.benchmarks:
        from distill.curate.decontam import benchmarks_digest

        inputs["benchmarks"] = benchmarks_digest(cfg.decontaminate.benchmarks)
    cfg_hash = config_hash(cfg)
    manifest = prepare_stage("curate", out, cfg_hash, inputs, force)
    if manifest is None:
        return read_manifest(out)
    shards = input_shards(src)
    prompts = read_prompts(shards)
    prompt_drops, metrics = prompt_filters(prompts, cfg)
    trace_drops, trace_report = (
        trace_contamination(shards, cfg) if cfg.decontaminate.check_traces else ({}, None)
    )
    if trace_report is not None:
        metrics["decontamination_traces"] = trace_report
    work = work_dir(out, cfg_hash + json.dumps(inputs, sort_keys=True))
    records = row_pass(shards, prompt_drops, trace_drops, cfg, work)
    judged: dict[tuple[int, int], str] = {}
    if cfg.verify.judge is not None:
        from distill.graders.judge import grader_name

        judged = judge_pass(shards, records, cfg, work / "judge.jsonl")
        apply_judge(records, judged, grader_name(cfg.verify.judge))
    select(records, cfg)
    manifest = write_outputs(shards, records, judged, work, out, manifest)
    metrics.update(summarize(shards, records, judged, cfg, src))
    manifest.metrics = metrics
    from distill.curate.card import write_cards

    tokens = [(r["completion_tokens"], r["reason"] is None) for recs in records for r in recs]
    write_cards(recipe, out, manifest, [t for t, _ in tokens], [t for t, kept in tokens if kept])
    shutil.rmtree(out / "_work", ignore_errors=True)
    return finish_manifest(out, manifest)


# ---------------------------------------------------------------- input


def input_shards(src: Path) -> list[Path]:
    shards = sorted(Path(src).glob("part-*.parquet"))
    if not shards:
        raise DistillError(f"{src}: no part-*.parquet shards to curate (run `distill generate` first)")
    return shards


def read_columns(shard: Path, columns: list[str]) -> dict[str, list[Any]]:
    """Some columns of a shard; a corrupt shard or a missing column is a DistillError naming the shard."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(shard).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DistillError(f"{shard}: missing column(s) {', '.join(missing)} (not a generate shard?)")
        return pq.read_table(shard, columns=columns).to_pydict()
    except DistillError:
        raise
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DistillError(f"{shard}: cannot read Parquet shard ({type(err).__name__}: {err})") from None


def read_prompts(shards: list[Path]) -> dict[str, dict[str, Any]]:
    """Unique prompts in first-seen order: {prompt_id: {problem, domain}}."""
    prompts: dict[str, dict[str, Any]] = {}
    for shard in shards:
        cols = read_columns(shard, ["prompt_id", "problem", "domain"])
        for pid, problem, domain in zip(cols["prompt_id"], cols["problem"], cols["domain"], strict=True):
            prompts.setdefault(pid, {"problem": problem or "", "domain": domain})
    return prompts


def work_dir(out: Path, key: str) -> Path:
    """out/_work/<key>: the resume cache for this config and input; caches for other keys are stale."""
    name = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = out / "_work"
    if root.exists():
        for stale in root.iterdir():
            if stale.name != name:
                shutil.rmtree(stale, ignore_errors=True)
    (root / name).mkdir(parents=True, exist_ok=True)
    return root / name


# ---------------------------------------------------------------- prompt level


def prompt_filters(
    prompts: dict[str, dict[str, Any]], cfg: CurateConfig
) -> tuple[dict[str, tuple[str, str]], dict[str, Any]]:
    """{prompt_id: (reason, detail)} for dropped prompts, and the dedup/decontamination metrics."""
    ids = list(prompts)
    texts = [prompts[p]["problem"] for p in ids]
    drops: dict[str, tuple[str, str]] = {}
    dd = cfg.dedup
    if dd.exact:
        for pid, match in zip(ids, dedup.exact_duplicates(texts), strict=True):
            if match is not None:
                drops[pid] = ("duplicate_prompt", ids[match])
    if dd.minhash_threshold is not None:
        alive = [i for i, p in enumerate(ids) if p not in drops]
        near = dedup.near_duplicates([texts[i] for i in alive], dd.minhash_threshold, dd.num_perm, dd.shingle)
        for i, match in zip(alive, near, strict=True):
            if match is not None:
                drops[ids[i]] = ("near_duplicate_prompt", ids[alive[match]])
    metrics: dict[str, Any] = {
        "dedup": {
            "prompts": len(ids),
            "exact_duplicates": sum(r == "duplicate_prompt" for r, _ in drops.values()),
            "near_duplicates": sum(r == "near_duplicate_prompt" for r, _ in drops.values()),
            "minhash_threshold": dd.minhash_threshold,
        }
    }
    if cfg.decontaminate.benchmarks:
        from distill.curate import decontam

        dc = cfg.decontaminate
        index = decontam.load_index(dc.benchmarks, dc.ngram)
        alive_ids = [p for p in ids if p not in drops]
        found, boiler = decontam.find_contamination(
            [prompts[p]["problem"] for p in alive_ids], index, dc.max_corpus_df
        )
        for pid, hit in zip(alive_ids, found, strict=True):
            if hit is not None:
                drops[pid] = ("contaminated", f'{hit["benchmark"]} {hit["item"]}: "{hit["ngram"]}"')
        metrics["decontamination"] = decontam.report(found, alive_ids, index, boiler)
    return drops, metrics


def trace_contamination(shards: list[Path], cfg: CurateConfig) -> tuple[dict[tuple[int, int], str], dict]:
    """Benchmark n-grams inside the traces themselves, streamed shard by shard: {(shard, row): detail}."""
    from distill.curate import decontam

    dc = cfg.decontaminate
    index = decontam.load_index(dc.benchmarks, dc.ngram)
    where: list[tuple[int, int]] = []
    groups: list[str] = []

    def batches():
        for s, shard in enumerate(shards):
            cols = read_columns(shard, ["prompt_id", "reasoning", "answer"])
            where.extend((s, i) for i in range(len(cols["prompt_id"])))
            groups.extend(cols["prompt_id"])
            yield [
                (r or "") + "\n" + (a or "") for r, a in zip(cols["reasoning"], cols["answer"], strict=True)
            ]

    hits, exact, n = decontam.scan(batches(), index)
    found, boiler = decontam.decide(hits, exact, n, index, dc.max_corpus_df, groups)
    ids = [f"{groups[d]}#{where[d][1]}" for d in range(n)]
    rep = decontam.report([found.get(d) for d in range(n)], ids, index, boiler)
    drops = {where[d]: f'{h["benchmark"]} {h["item"]}: "{h["ngram"]}"' for d, h in found.items()}
    return drops, rep


# ---------------------------------------------------------------- row level


def row_pass(
    shards: list[Path],
    prompt_drops: dict[str, tuple[str, str]],
    trace_drops: dict[tuple[int, int], str],
    cfg: CurateConfig,
    work: Path,
) -> list[list[dict[str, Any]]]:
    """Checks, sample dedup and verification for every row, one shard at a time (cached per shard)."""
    from distill.graders import VerifierPool
    from distill.ui import progress

    seen: dict[str, str] = {}  # trace hash -> prompt_id of its first kept row
    records: list[list[dict[str, Any]]] = []
    with VerifierPool(cfg.verify) as pool, progress() as bar:
        task = bar.add_task("curate", total=len(shards), info="")
        for s, shard in enumerate(shards):
            cache = work / shard.name
            if cache.exists():
                recs = read_parquet(cache)
                seen.update((r["trace_hash"], r["prompt_id"]) for r in recs if r["trace_hash"])
            else:
                recs = shard_records(shard, s, prompt_drops, trace_drops, seen, cfg, pool)
                write_parquet(recs, cache)
            records.append([{k: v for k, v in r.items() if k != "pred_answer"} for r in recs])
            kept = sum(r["verdict"] == "correct" for r in recs)
            bar.update(task, advance=1, info=f"{shard.name}: {kept}/{len(recs)} correct")
    return records


def shard_records(
    shard: Path,
    s: int,
    prompt_drops: dict[str, tuple[str, str]],
    trace_drops: dict[tuple[int, int], str],
    seen: dict[str, str],
    cfg: CurateConfig,
    pool: Any,
) -> list[dict[str, Any]]:
    rows = read_parquet(shard)
    missing = [c for c in REQUIRED if rows and c not in rows[0]]
    if missing:
        raise DistillError(f"{shard}: missing column(s) {', '.join(missing)} (not a generate shard?)")
    recs = []
    for i, row in enumerate(rows):
        reason, detail = prompt_drops.get(row["prompt_id"], (None, None))
        if reason is None:
            reason = checks.first_failure(row, cfg.filters)
        trace_hash = None
        if reason is None:
            trace_hash = dedup.text_hash((row["reasoning"] or "") + "\n</think>\n" + (row["answer"] or ""))
            first = seen.get(trace_hash)
            if first is not None:
                reason = "duplicate_sample" if first == row["prompt_id"] else "duplicate_trace"
                detail, trace_hash = first, None
            else:
                seen[trace_hash] = row["prompt_id"]
        if reason is None and (s, i) in trace_drops:
            reason, detail = "contaminated_trace", trace_drops[(s, i)]
        recs.append(
            {
                "prompt_id": row["prompt_id"],
                "sample_index": row["sample_index"],
                "domain": row["domain"],
                "completion_tokens": row["completion_tokens"] or 0,
                "reason": reason,
                "detail": detail,
                "verdict": None,
                "grader": None,
                "pred_answer": None,
                "trace_hash": trace_hash,
            }
        )
    todo = [i for i, r in enumerate(recs) if r["reason"] is None]
    verdicts = pool.map([(rows[i]["domain"], rows[i]["reference"], rows[i]["answer"]) for i in todo])
    for i, v in zip(todo, verdicts, strict=True):
        if v is None:
            continue
        recs[i].update(verdict=v.verdict, grader=v.grader, pred_answer=v.pred_answer)
        if v.verdict == "bad_reference":
            recs[i].update(reason="bad_reference", verdict=None)
    return recs


def judge_pass(
    shards: list[Path], records: list[list[dict[str, Any]]], cfg: CurateConfig, cache: Path
) -> dict[tuple[int, int], str]:
    """Ask the judge about unparseable answers, general rows with a reference, and a `judge_sample` share of
    rule-graded rows (to count disagreements); verdicts are cached in `cache` for a resume.
    Returns {(shard, row): judge verdict}."""
    from distill.graders.judge import judge_cached

    vc = cfg.verify
    want: dict[int, list[int]] = defaultdict(list)  # shard -> rows
    for s, recs in enumerate(records):
        for i, r in enumerate(recs):
            if r["reason"] is not None or r["domain"] == "code":  # only running its tests can grade code
                continue
            unsure = r["verdict"] in (None, "unparseable")
            sampled = r["verdict"] in ("correct", "wrong") and _sampled(r, vc.judge_sample)
            if unsure or sampled:
                want[s].append(i)
    items: list[tuple[str, str, str]] = []
    keep: list[tuple[int, int]] = []
    for s, rows in want.items():
        cols = read_columns(shards[s], ["problem", "reference", "answer"])
        for i in rows:
            if cols["reference"][i]:  # nothing to compare with otherwise
                items.append((cols["problem"][i], str(cols["reference"][i]), cols["answer"][i] or ""))
                keep.append((s, i))
    return dict(zip(keep, judge_cached(items, vc.judge, vc.judge_max_tokens, cache), strict=True))


def _sampled(rec: dict[str, Any], share: float) -> bool:
    """A stable per-row coin flip: the same rows are cross-checked on every rerun."""
    return share > 0 and random.Random(f"{rec['prompt_id']}#{rec['sample_index']}").random() < share


# ---------------------------------------------------------------- selection and output


def apply_judge(records: list[list[dict[str, Any]]], judged: dict[tuple[int, int], str], grader: str) -> None:
    """The judge decides where the rules could not (unparseable, or no rule grader); elsewhere it only votes."""
    for (s, i), verdict in judged.items():
        rec = records[s][i]
        if rec["verdict"] is None or (rec["verdict"] == "unparseable" and verdict != "unparseable"):
            rec.update(verdict=verdict, grader=grader)


def select(records: list[list[dict[str, Any]]], cfg: CurateConfig) -> None:
    """Give every row a final reason (None = kept): verdict outcomes, unverified rows, the selection policy."""
    sel = cfg.select
    candidates: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in (r for recs in records for r in recs):
        if rec["reason"] is not None:
            continue
        if rec["verdict"] in VERDICT_REASONS:
            rec["reason"] = rec["verdict"]
        elif rec["verdict"] is None and not sel.keep_unverified_domains:
            rec["reason"] = "unverified"
        else:
            candidates[rec["prompt_id"]].append(rec)
    for group in candidates.values():
        group.sort(key=lambda r: r["sample_index"])
        if sel.policy == "max_k":
            chosen = group[: sel.k]
        elif sel.policy == "shortest":
            chosen = [min(group, key=lambda r: (r["completion_tokens"], r["sample_index"]))]
        else:
            chosen = group
        ids = {id(r) for r in chosen}
        for rec in group:
            if id(rec) not in ids:
                rec["reason"] = "not_selected"


def write_outputs(
    shards: list[Path],
    records: list[list[dict[str, Any]]],
    judged: dict[tuple[int, int], str],
    work: Path,
    out: Path,
    manifest: Manifest,
) -> Manifest:
    """kept/part-N and dropped/part-N for each input shard part-N (an empty side is not written)."""
    for sub in ("kept", "dropped"):
        shutil.rmtree(out / sub, ignore_errors=True)  # outputs of an earlier run with other shards
    import pyarrow as pa
    import pyarrow.parquet as pq

    added = [pa.field(name, pa.string()) for name in ("verdict", "grader", "pred_answer", "judge_verdict")]
    dropped: Counter = Counter()
    for s, shard in enumerate(shards):
        rows, cache = read_parquet(shard), read_parquet(work / shard.name)
        base = [f for f in pq.read_schema(shard) if f.name not in {a.name for a in added}]
        schemas = {
            "kept": pa.schema(base + added),
            "dropped": pa.schema(
                base + added + [pa.field("drop_reason", pa.string()), pa.field("drop_detail", pa.string())]
            ),
        }
        kept_rows, dropped_rows = [], []
        for i, (row, rec) in enumerate(zip(rows, cache, strict=True)):
            final = records[s][i]
            extra = {
                "verdict": final["verdict"],
                "grader": final["grader"],
                "pred_answer": rec["pred_answer"],
                "judge_verdict": judged.get((s, i)),
            }
            if final["reason"] is None:
                kept_rows.append({**row, **extra})
            else:
                dropped_rows.append(
                    {**row, **extra, "drop_reason": final["reason"], "drop_detail": final["detail"]}
                )
                dropped[final["reason"]] += 1
        for sub, part in (("kept", kept_rows), ("dropped", dropped_rows)):
            if part:
                entry = write_parquet(part, out / sub / shard.name, schema=schemas[sub])
                manifest.outputs.append({**entry, "file": f"{sub}/{entry['file']}"})
        manifest.rows_in += len(rows)
        manifest.rows_out += len(kept_rows)
    manifest.dropped = {r: dropped[r] for r in REASONS if dropped[r]}
    return manifest


def summarize(
    shards: list[Path],
    records: list[list[dict[str, Any]]],
    judged: dict[tuple[int, int], str],
    cfg: CurateConfig,
    src: Path,
) -> dict[str, Any]:
    """Verification counts per domain and grader, judge agreement, sources, teacher and sampling."""
    verification: dict[str, Counter] = defaultdict(Counter)
    graders: Counter = Counter()
    for rec in (r for recs in records for r in recs):
        if rec["verdict"] is not None:
            verification[rec["domain"]][rec["verdict"]] += 1
            graders[rec["grader"]] += 1
        elif rec["reason"] == "bad_reference":
            verification[rec["domain"]]["bad_reference"] += 1
    metrics: dict[str, Any] = {
        "verification": {d: dict(c) for d, c in verification.items()},
        "graders": dict(graders),
        "selection": cfg.select.policy,
    }
    if cfg.verify.judge is not None:
        metrics["judge"] = judge_agreement(records, judged)
    metrics.update(provenance(shards, records, src))
    return metrics


def judge_agreement(
    records: list[list[dict[str, Any]]], judged: dict[tuple[int, int], str]
) -> dict[str, Any]:
    """Where the rule grader and the judge both gave correct/wrong: how often they disagree, and examples."""
    both = disagree = 0
    examples = []
    for (s, i), jv in judged.items():
        rec = records[s][i]
        if (
            rec["grader"]
            and not rec["grader"].startswith("judge:")
            and rec["verdict"] in ("correct", "wrong")
            and jv in ("correct", "wrong")
        ):
            both += 1
            if jv != rec["verdict"]:
                disagree += 1
                if len(examples) < 5:
                    examples.append(
                        {
                            "prompt_id": rec["prompt_id"],
                            "sample_index": rec["sample_index"],
                            "rule": f"{rec['grader']}: {rec['verdict']}",
                            "judge": jv,
                        }
                    )
    decided = sum(
        1 for (s, i) in judged if records[s][i]["grader"] and records[s][i]["grader"].startswith("judge:")
    )
    return {
        "asked": len(judged),
        "decided": decided,
        "both_graded": both,
        "disagreements": disagree,
        "examples": examples,
    }


def provenance(shards: list[Path], records: list[list[dict[str, Any]]], src: Path) -> dict[str, Any]:
    """Sources with licenses and counts in/out; the teacher and sampling settings the rows record."""
    sources: dict[str, dict[str, Any]] = {}
    teachers: Counter = Counter()
    samplings: Counter = Counter()
    for s, shard in enumerate(shards):
        cols = read_columns(shard, ["source", "license", "teacher", "sampling"])
        columns = (cols["source"], cols["license"], cols["teacher"], cols["sampling"])
        for i, (source, lic, teacher, sampling) in enumerate(zip(*columns, strict=True)):
            entry = sources.setdefault(source, {"license": lic, "rows_in": 0, "rows_out": 0})
            entry["rows_in"] += 1
            entry["rows_out"] += records[s][i]["reason"] is None
            teachers[teacher] += 1
            samplings[sampling] += 1
    generated = read_manifest(src)
    keys = ("teacher", "n", "prompts", "truncated_rate", "malformed_rate", "template_default_system")
    return {
        "sources": sources,
        "teachers": dict(teachers),
        "sampling": [json.loads(s) if s else {} for s in samplings],
        "generate": {k: generated.metrics[k] for k in keys if generated and k in generated.metrics},
    }
