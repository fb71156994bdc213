"""`distill curate RECIPE`: generate shards -> kept/ + dropped/ shards, a data card and the manifest.

Curation is STEPS, an ordered list of (reason, step). Each input shard is read once into a Shard: its Arrow
table, and per row a `reason` (None: kept so far), a `detail` and the grading columns. A step returns the rows
it drops, {(shard, row): detail}; the driver gives those still kept the step's reason, so each dropped row keeps
the first reason that applies and every drop is counted under a name of the list (rows_in - rows_out ==
sum(manifest.dropped), checked before the manifest is written). A new filter is one more entry.

  prompts   duplicate_prompt, near_duplicate_prompt (MinHash-LSH), contaminated (benchmark n-grams)
  rows      no_reference (where the recipe grades the domain), the R1 checks of checks.CHECKS (empty_answer
            among them), then duplicate_sample (same prompt) / duplicate_trace (another prompt),
            contaminated_trace (decontaminate.check_traces)
  verify    bad_reference: the rule graders run here (then an LLM judge, when configured, re-grades
            unparseable answers); then the verdict: wrong, unparseable, timeout; rows no grader handles are
            unverified
  select    not_selected: all_correct | max_k | shortest per prompt

Rule grades are cached per input shard under out/_work/<key>/ (the shard's file is its marker) and judge
verdicts in out/_work/<key>/judge.jsonl, so a rerun after a crash resumes where verification stopped.
The Arrow tables of every shard stay in memory for the run (the global steps need all rows); Python copies of
the columns a step reads live for that step only. kept/ and dropped/ mirror the input shard numbering;
manifest.json is written last.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.artifacts import (
    Manifest,
    atomic_path,
    finish_manifest,
    finish_replace,
    manifest_hash,
    prepare_stage,
    read_manifest,
    read_parquet,
    sha256_file,
    write_parquet,
)
from distill.config import CurateConfig, Recipe, config_hash
from distill.curate import checks, dedup
from distill.errors import DistillError
from distill.release import TRACE_JOIN

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
    "source",
    "license",
    "teacher",
    "sampling",
)
GRADED = ("verdict", "grader", "pred_answer", "judge_verdict")  # columns curate adds to every output row
CACHE_FORMAT = "grades-v2"  # part of the resume cache's key: a cache of another layout is never read


@dataclass
class Shard:
    """One input shard, read once: the generate rows, and what curation decided about each of them."""

    path: Path
    table: Any  # pyarrow.Table of the generate rows
    reason: list[str | None]  # drop reason; None = kept so far
    detail: list[str | None]  # what it matched: the prompt it repeats, the benchmark item and n-gram, ...
    verdict: list[str | None]  # correct | wrong | unparseable | timeout; None = no grader
    grader: list[str | None]
    pred_answer: list[str | None]
    judge_verdict: list[str | None]
    columns: dict[str, list[Any]] = field(default_factory=dict)  # Python copies, for one step

    @property
    def name(self) -> str:
        return self.path.name

    def column(self, name: str) -> list[Any]:
        if name not in self.columns:
            self.columns[name] = self.table.column(name).to_pylist()
        return self.columns[name]

    def alive(self) -> list[int]:
        return [i for i, reason in enumerate(self.reason) if reason is None]


@dataclass
class Run:
    cfg: CurateConfig
    shards: list[Shard]
    work: Path  # the resume cache of this config and input
    metrics: dict[str, Any] = field(default_factory=dict)  # what steps report (decontamination)


Drops = dict[tuple[int, int], str | None]  # (shard, row) -> detail
Step = Callable[[Run], Drops]


def curate(recipe: Recipe, src: Path, out: Path, force: bool = False) -> Manifest:
    cfg = recipe.curate
    if cfg.difficulty is not None:  # a bad range fails before anything is read or written
        from distill.curate.difficulty import check

        check(cfg.difficulty)
    src, out = Path(src), Path(out)
    inputs = {"generate": manifest_hash(src)}
    if cfg.decontaminate.benchmarks:
        from distill.curate.decontam import benchmarks_digest

        inputs["benchmarks"] = benchmarks_digest(cfg.decontaminate.benchmarks)
    cfg_hash = config_hash(cfg)
    manifest = prepare_stage("curate", out, cfg_hash, inputs, force)
    if manifest is None:
        return read_manifest(out)
    shards = [read_shard(path) for path in input_shards(src)]
    run = Run(cfg, shards, work_dir(out, CACHE_FORMAT + cfg_hash + json.dumps(inputs, sort_keys=True)))
    run_steps(run, STEPS)
    manifest = write_outputs(run, out, manifest)
    manifest.metrics = {**dedup_metrics(run), **run.metrics, **summarize(run, src)}
    from distill.curate.card import write_cards

    lengths = [
        (t or 0, r is None)
        for sh in shards
        for t, r in zip(sh.column("completion_tokens"), sh.reason, strict=True)
    ]
    write_cards(recipe, out, manifest, [t for t, _ in lengths], [t for t, kept in lengths if kept], force)
    shutil.rmtree(out / "_work", ignore_errors=True)
    return finish_manifest(out, manifest)


def run_steps(run: Run, steps: list[tuple[str, Step]]) -> None:
    """Each step in order; the rows it drops that are still kept get its reason (the first reason sticks)."""
    for reason, step in steps:
        for (s, i), detail in step(run).items():
            shard = run.shards[s]
            if shard.reason[i] is None:
                shard.reason[i], shard.detail[i] = reason, detail
        for shard in run.shards:
            shard.columns.clear()


# ---------------------------------------------------------------- input


def input_shards(src: Path) -> list[Path]:
    finish_replace(src)  # an import a kill interrupted after its commit point: its shards, whole
    shards = sorted(Path(src).glob("part-*.parquet"))
    if not shards:
        raise DistillError(f"{src}: no part-*.parquet shards to curate (run `distill generate` first)")
    return shards


def read_shard(path: Path) -> Shard:
    """The shard's rows; a corrupt shard or a missing column is a DistillError naming the shard."""
    import pyarrow.parquet as pq

    from distill.sources import trace_texts

    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DistillError(f"{path}: cannot read Parquet shard ({type(err).__name__}: {err})") from None
    try:
        table = trace_texts(table)  # an imported shard keeps reasoning and answer as spans of its completion
    except DistillError as err:
        raise DistillError(f"{path}: {err}") from None
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise DistillError(f"{path}: missing column(s) {', '.join(missing)} (not a generate shard?)")
    n = table.num_rows
    return Shard(path, table, *([None] * n for _ in range(6)))


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


def live_prompts(run: Run) -> dict[str, str]:
    """{prompt_id: problem} of the prompts with a row still kept, in first-seen order."""
    prompts: dict[str, str] = {}
    for shard in run.shards:
        ids, problems = shard.column("prompt_id"), shard.column("problem")
        for i in shard.alive():
            prompts.setdefault(ids[i], problems[i] or "")
    return prompts


def prompt_rows(run: Run, drops: dict[str, str]) -> Drops:
    """Prompt-level drops ({prompt_id: detail}) as the drops of every row of those prompts."""
    return {
        (s, i): drops[pid]
        for s, shard in enumerate(run.shards)
        for i, pid in enumerate(shard.column("prompt_id"))
        if pid in drops
    }


def duplicate_prompts(run: Run) -> Drops:
    """A prompt whose normalised text equals an earlier one's; the detail names the first."""
    if not run.cfg.dedup.exact:
        return {}
    prompts = live_prompts(run)
    ids = list(prompts)
    matches = dedup.exact_duplicates(prompts.values())
    return prompt_rows(run, {pid: ids[m] for pid, m in zip(ids, matches, strict=True) if m is not None})


def near_duplicate_prompts(run: Run) -> Drops:
    """A prompt whose MinHash Jaccard with an earlier kept prompt reaches dedup.minhash_threshold."""
    dd = run.cfg.dedup
    if dd.minhash_threshold is None:
        return {}
    prompts = live_prompts(run)
    ids = list(prompts)
    near = dedup.near_duplicates(list(prompts.values()), dd.minhash_threshold, dd.num_perm, dd.shingle)
    return prompt_rows(run, {pid: ids[m] for pid, m in zip(ids, near, strict=True) if m is not None})


def contaminated_prompts(run: Run) -> Drops:
    """A prompt sharing a (non-boilerplate) benchmark n-gram; reported in metrics["decontamination"]."""
    dc = run.cfg.decontaminate
    if not dc.benchmarks:
        return {}
    from distill.curate import decontam

    index = decontam.load_index(dc.benchmarks, dc.ngram)
    prompts = live_prompts(run)
    found, boiler = decontam.find_contamination(list(prompts.values()), index, dc.max_corpus_df)
    run.metrics["decontamination"] = decontam.report(found, list(prompts), index, boiler)
    return prompt_rows(run, {pid: hit_detail(h) for pid, h in zip(prompts, found, strict=True) if h})


def off_difficulty(run: Run) -> Drops:
    """Prompts whose pass rate under curate.difficulty's model falls outside `keep` (curate/difficulty.py)."""
    dc = run.cfg.difficulty
    if dc is None:
        return {}
    from distill.curate import difficulty

    prompts: dict[str, dict[str, Any]] = {}
    for shard in run.shards:
        ids, problem, domain, ref = (shard.column(c) for c in ("prompt_id", "problem", "domain", "reference"))
        for i in shard.alive():
            prompts.setdefault(ids[i], {"problem": problem[i], "domain": domain[i], "reference": ref[i]})
    rates = difficulty.pass_rates(prompts, dc, run.cfg.verify, run.work / "difficulty.json")
    drops = {pid: d for pid, r in rates.items() if (d := difficulty.outside(r, dc.keep)) is not None}
    run.metrics["difficulty"] = difficulty.report(rates, dc, len(drops))
    return prompt_rows(run, drops)


def hit_detail(hit: dict[str, Any]) -> str:
    return f'{hit["benchmark"]} {hit["item"]}: "{hit["ngram"]}"'


# ---------------------------------------------------------------- row level


class RowView:
    """One row as the checks read it (`row.get(column)`), over the shard's Python columns: no dict per row."""

    __slots__ = ("i", "shard")

    def __init__(self, shard: Shard, i: int):
        self.shard, self.i = shard, i

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self.shard.column(name)[self.i]
        except KeyError:  # a column generate did not write (finish_reason in hand-made shards)
            return default


def row_check(check: Callable[[Any, Any], bool]) -> Step:
    """A step from one of checks.CHECKS: the rows still kept that the check fails."""

    def step(run: Run) -> Drops:
        filters = run.cfg.filters
        return {
            (s, i): None
            for s, shard in enumerate(run.shards)
            for i in shard.alive()
            if check(RowView(shard, i), filters)
        }

    return step


def missing_reference(run: Run) -> Drops:
    """Rows without a gold answer where the recipe grades their domain (checks.needs_reference): a set whose
    verification is off, or whose own verdicts the recipe trusts, keeps them."""
    verify = run.cfg.verify
    return {
        (s, i): None
        for s, shard in enumerate(run.shards)
        for i in shard.alive()
        if checks.no_reference(RowView(shard, i), verify)
    }


def repeated_traces(run: Run) -> dict[tuple[int, int], tuple[str, str]]:
    """{row: (its prompt, the prompt of the first kept row with the same normalised trace)} for each kept row
    that repeats an earlier one, in shard and row order."""
    first: dict[str, str] = {}
    out: dict[tuple[int, int], tuple[str, str]] = {}
    for s, shard in enumerate(run.shards):
        ids, reasoning, answer = (shard.column(c) for c in ("prompt_id", "reasoning", "answer"))
        for i in shard.alive():
            key = dedup.text_hash((reasoning[i] or "") + TRACE_JOIN + (answer[i] or ""))
            if key in first:
                out[(s, i)] = (ids[i], first[key])
            else:
                first[key] = ids[i]
    return out


def duplicate_samples(run: Run) -> Drops:
    """Another sample of the same prompt with the same trace came first."""
    return {row: first for row, (pid, first) in repeated_traces(run).items() if pid == first}


def duplicate_traces(run: Run) -> Drops:
    """The same trace came first for another prompt (the detail names it). Runs after duplicate_samples,
    which never drops a first occurrence, so both see the same first rows."""
    return {row: first for row, (pid, first) in repeated_traces(run).items() if pid != first}


def contaminated_traces(run: Run) -> Drops:
    """Benchmark n-grams inside the traces themselves. Every row is scanned (dropped ones too), so the
    boilerplate document frequency counts the whole corpus; reported in metrics["decontamination_traces"]."""
    dc = run.cfg.decontaminate
    if not dc.check_traces:
        return {}
    from distill.curate import decontam

    index = decontam.load_index(dc.benchmarks, dc.ngram)
    where = [(s, i) for s, shard in enumerate(run.shards) for i in range(shard.table.num_rows)]
    groups = [pid for shard in run.shards for pid in shard.column("prompt_id")]

    def batches():
        for shard in run.shards:
            yield [
                (r or "") + "\n" + (a or "")
                for r, a in zip(shard.column("reasoning"), shard.column("answer"), strict=True)
            ]

    hits, exact, n = decontam.scan(batches(), index)
    found, boiler = decontam.decide(hits, exact, n, index, dc.max_corpus_df, groups)
    ids = [f"{groups[d]}#{where[d][1]}" for d in range(n)]
    run.metrics["decontamination_traces"] = decontam.report(
        [found.get(d) for d in range(n)], ids, index, boiler
    )
    return {where[d]: hit_detail(h) for d, h in found.items()}


# ---------------------------------------------------------------- verification


def grade(run: Run) -> Drops:
    """Rule-grade every kept row (math-verify, the code sandbox, MCQ letters), then let the LLM judge decide
    where the rules could not. Drops the rows whose reference no grader could parse."""
    rule_grades(run)
    bad: Drops = {}
    for s, shard in enumerate(run.shards):
        for i in shard.alive():
            if shard.verdict[i] == "bad_reference":  # the reference failed, not the answer: no verdict
                bad[(s, i)], shard.verdict[i] = None, None
    if run.cfg.verify.judge is not None:
        from distill.graders.judge import grader_name

        judged = judge_pass(run, skip=bad)
        apply_judge(run, judged, grader_name(run.cfg.verify.judge))
    if run.cfg.verify.trust_source_flags:
        trust_source_flags(run, bad)
    return bad


def trust_source_flags(run: Run, bad: Drops) -> None:
    """Imported sets' own verdicts (source_verified) replace the graders' where the set has one."""
    for s, shard in enumerate(run.shards):
        if "source_verified" not in shard.table.column_names:
            continue
        flags = shard.column("source_verified")
        for i in shard.alive():
            if flags[i] is not None:
                bad.pop((s, i), None)
                shard.verdict[i], shard.grader[i] = ("correct" if flags[i] else "wrong"), "source"


GRADE_SCHEMA = (("row", "int64"), ("verdict", "string"), ("grader", "string"), ("pred_answer", "string"))


def rule_grades(run: Run) -> None:
    """Grades one shard at a time, each cached in work/<shard name> before it is used (a rerun reads it)."""
    import pyarrow as pa

    from distill.graders import VerifierPool
    from distill.ui import progress

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in GRADE_SCHEMA])
    with VerifierPool(run.cfg.verify) as pool, progress() as bar:
        task = bar.add_task("curate", total=len(run.shards), info="")
        for shard in run.shards:
            cache = run.work / shard.name
            if not cache.exists():
                write_parquet(grade_shard(shard, pool), cache, schema=schema)
            for g in read_parquet(cache):
                i = g["row"]
                shard.verdict[i], shard.grader[i], shard.pred_answer[i] = (
                    g["verdict"],
                    g["grader"],
                    g["pred_answer"],
                )
            correct = shard.verdict.count("correct")
            bar.update(task, advance=1, info=f"{shard.name}: {correct}/{len(shard.verdict)} correct")


def grade_shard(shard: Shard, pool: Any) -> list[dict[str, Any]]:
    """{row, verdict, grader, pred_answer} of each kept row a grader handles (verdict may be bad_reference)."""
    todo = shard.alive()
    domain, reference, answer = (shard.column(c) for c in ("domain", "reference", "answer"))
    verdicts = pool.map([(domain[i], reference[i], answer[i]) for i in todo])
    return [
        {"row": i, "verdict": v.verdict, "grader": v.grader, "pred_answer": v.pred_answer}
        for i, v in zip(todo, verdicts, strict=True)
        if v is not None
    ]


def judge_pass(run: Run, skip: Drops) -> dict[tuple[int, int], str]:
    """Ask the judge about unparseable answers, ungraded rows with a reference, and a `judge_sample` share of
    rule-graded rows (to count disagreements); code is left to its tests. Verdicts are cached in
    work/judge.jsonl for a resume. Returns {(shard, row): judge verdict}."""
    from distill.graders.judge import judge_cached

    vc = run.cfg.verify
    items: list[tuple[str, str, str]] = []
    keep: list[tuple[int, int]] = []
    for s, shard in enumerate(run.shards):
        problem, reference, answer = (shard.column(c) for c in ("problem", "reference", "answer"))
        for i in shard.alive():
            if (s, i) in skip or shard.column("domain")[i] == "code" or not reference[i]:
                continue  # only running its tests can grade code; nothing to compare with without a reference
            unsure = shard.verdict[i] in (None, "unparseable")
            sampled = shard.verdict[i] in ("correct", "wrong") and sampled_row(shard, i, vc.judge_sample)
            if unsure or sampled:
                items.append((problem[i], str(reference[i]), answer[i] or ""))
                keep.append((s, i))
    verdicts = judge_cached(items, vc.judge, vc.judge_max_tokens, run.work / "judge.jsonl")
    return dict(zip(keep, verdicts, strict=True))


def sampled_row(shard: Shard, i: int, share: float) -> bool:
    """A stable per-row coin flip: the same rows are cross-checked on every rerun."""
    key = f"{shard.column('prompt_id')[i]}#{shard.column('sample_index')[i]}"
    return share > 0 and random.Random(key).random() < share


def apply_judge(run: Run, judged: dict[tuple[int, int], str], grader: str) -> None:
    """The judge decides where the rules could not (unparseable, or no rule grader); elsewhere it only votes."""
    for (s, i), verdict in judged.items():
        shard = run.shards[s]
        shard.judge_verdict[i] = verdict
        if shard.verdict[i] is None or (shard.verdict[i] == "unparseable" and verdict != "unparseable"):
            shard.verdict[i], shard.grader[i] = verdict, grader


def verdict_is(verdict: str | None) -> Step:
    """A step dropping the kept rows graded `verdict`."""

    def step(run: Run) -> Drops:
        return {
            (s, i): None for s, sh in enumerate(run.shards) for i in sh.alive() if sh.verdict[i] == verdict
        }

    return step


def unverified(run: Run) -> Drops:
    """Rows no grader handled (no verdict), unless select.keep_unverified_domains."""
    if run.cfg.select.keep_unverified_domains:
        return {}
    return verdict_is(None)(run)


def not_selected(run: Run) -> Drops:
    """The selection policy per prompt over the rows left: all_correct, the first k, or the shortest."""
    sel = run.cfg.select
    groups: dict[str, list[tuple[int, int, int, int]]] = defaultdict(list)  # pid -> (sample, tokens, s, i)
    for s, shard in enumerate(run.shards):
        ids, samples, tokens = (shard.column(c) for c in ("prompt_id", "sample_index", "completion_tokens"))
        for i in shard.alive():
            groups[ids[i]].append((samples[i], tokens[i] or 0, s, i))
    drops: Drops = {}
    for group in groups.values():
        group.sort(key=lambda r: r[0])
        if sel.policy == "max_k":
            chosen = group[: sel.k]
        elif sel.policy == "shortest":
            chosen = [min(group, key=lambda r: (r[1], r[0]))]
        else:
            chosen = group
        chosen_rows = {(s, i) for _, _, s, i in chosen}
        drops.update({(s, i): None for _, _, s, i in group if (s, i) not in chosen_rows})
    return drops


STEPS: list[tuple[str, Step]] = [
    ("duplicate_prompt", duplicate_prompts),
    ("near_duplicate_prompt", near_duplicate_prompts),
    ("contaminated", contaminated_prompts),
    ("difficulty", off_difficulty),
    ("no_reference", missing_reference),
    *((reason, row_check(check)) for reason, check in checks.CHECKS.items()),
    ("duplicate_sample", duplicate_samples),
    ("duplicate_trace", duplicate_traces),
    ("contaminated_trace", contaminated_traces),
    ("bad_reference", grade),
    ("wrong", verdict_is("wrong")),
    ("unparseable", verdict_is("unparseable")),
    ("timeout", verdict_is("timeout")),
    ("unverified", unverified),
    ("not_selected", not_selected),
]
REASONS = tuple(reason for reason, _ in STEPS)  # chain order: the card's yields table


# ---------------------------------------------------------------- output


def write_outputs(run: Run, out: Path, manifest: Manifest) -> Manifest:
    """kept/part-N and dropped/part-N for each input shard part-N (an empty side is not written); the
    manifest counts every row of every shard, and the counts must add up."""
    for sub in ("kept", "dropped"):
        shutil.rmtree(out / sub, ignore_errors=True)  # outputs of an earlier run with other shards
    dropped: Counter = Counter()
    for shard in run.shards:
        kept, gone = split_shard(shard)
        for sub, part in (("kept", kept), ("dropped", gone)):
            if part.num_rows:
                entry = write_table(part, out / sub / shard.name)
                manifest.outputs.append({**entry, "file": f"{sub}/{entry['file']}"})
        manifest.rows_in += shard.table.num_rows
        manifest.rows_out += kept.num_rows
        dropped.update(r for r in shard.reason if r is not None)
    reasons = [reason for reason, _ in STEPS]  # read at call time: a step added to STEPS is counted too
    manifest.dropped = {r: dropped[r] for r in reasons if dropped[r]}
    if manifest.rows_in - manifest.rows_out != sum(manifest.dropped.values()):
        raise RuntimeError(f"curate lost count of dropped rows: {dict(dropped)} vs {manifest.dropped}")
    return manifest


def split_shard(shard: Shard) -> tuple[Any, Any]:
    """(kept, dropped) tables: the generate columns plus GRADED, and drop_reason / drop_detail on the dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = shard.table.drop_columns([c for c in GRADED if c in shard.table.column_names])
    for name in GRADED:
        table = table.append_column(pa.field(name, pa.string()), pa.array(getattr(shard, name), pa.string()))
    kept = pa.array([r is None for r in shard.reason])
    gone = table.filter(pc.invert(kept))
    gone = gone.append_column(
        pa.field("drop_reason", pa.string()), pa.array([r for r in shard.reason if r], pa.string())
    )
    details = [d for r, d in zip(shard.reason, shard.detail, strict=True) if r]
    gone = gone.append_column(pa.field("drop_detail", pa.string()), pa.array(details, pa.string()))
    return table.filter(kept), gone


def write_table(table: Any, path: Path) -> dict[str, Any]:
    """One Parquet shard, atomically (as artifacts.write_parquet, from a table); its manifest entry."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return {"file": path.name, "rows": table.num_rows, "sha256": sha256_file(path)}


# ---------------------------------------------------------------- metrics


def dedup_metrics(run: Run) -> dict[str, Any]:
    """Prompts seen, and how many were exact / near duplicates."""
    first: dict[str, str | None] = {}  # prompt -> its reason (the same for every row of a dropped prompt)
    for shard in run.shards:
        for pid, reason in zip(shard.column("prompt_id"), shard.reason, strict=True):
            first.setdefault(pid, reason)
    reasons = Counter(first.values())
    return {
        "dedup": {
            "prompts": len(first),
            "exact_duplicates": reasons["duplicate_prompt"],
            "near_duplicates": reasons["near_duplicate_prompt"],
            "minhash_threshold": run.cfg.dedup.minhash_threshold,
        }
    }


def summarize(run: Run, src: Path) -> dict[str, Any]:
    """Verification counts per domain and grader, judge agreement, sources, teacher and sampling."""
    verification: dict[str, Counter] = defaultdict(Counter)
    graders: Counter = Counter()
    for shard in run.shards:
        for i, domain in enumerate(shard.column("domain")):
            if shard.verdict[i] is not None:
                verification[domain][shard.verdict[i]] += 1
                graders[shard.grader[i]] += 1
            elif shard.reason[i] == "bad_reference":
                verification[domain]["bad_reference"] += 1
    metrics: dict[str, Any] = {
        "verification": {d: dict(c) for d, c in verification.items()},
        "graders": dict(graders),
        "selection": run.cfg.select.policy,
    }
    if run.cfg.verify.judge is not None:
        metrics["judge"] = judge_agreement(run)
    return {**metrics, **provenance(run, src)}


def judge_agreement(run: Run) -> dict[str, Any]:
    """Where the rule grader and the judge both gave correct/wrong: how often they disagree, and examples."""
    asked = decided = both = disagree = 0
    examples = []
    for shard in run.shards:
        for i, jv in enumerate(shard.judge_verdict):
            if jv is None:
                continue
            asked += 1
            grader, verdict = shard.grader[i], shard.verdict[i]
            decided += bool(grader and grader.startswith("judge:"))
            rule = grader and not grader.startswith("judge:") and verdict in ("correct", "wrong")
            if not (rule and jv in ("correct", "wrong")):
                continue
            both += 1
            if jv != verdict:
                disagree += 1
                if len(examples) < 5:
                    examples.append(
                        {
                            "prompt_id": shard.column("prompt_id")[i],
                            "sample_index": shard.column("sample_index")[i],
                            "rule": f"{grader}: {verdict}",
                            "judge": jv,
                        }
                    )
    return {
        "asked": asked,
        "decided": decided,
        "both_graded": both,
        "disagreements": disagree,
        "examples": examples,
    }


def provenance(run: Run, src: Path) -> dict[str, Any]:
    """Sources with licenses and counts in/out; the teacher and sampling settings the rows record."""
    sources: dict[str, dict[str, Any]] = {}
    teachers: Counter = Counter()
    samplings: Counter = Counter()
    for shard in run.shards:
        columns = (shard.column(c) for c in ("source", "license", "teacher", "sampling"))
        for source, lic, teacher, sampling, reason in zip(*columns, shard.reason, strict=True):
            entry = sources.setdefault(source, {"license": lic, "rows_in": 0, "rows_out": 0})
            entry["rows_in"] += 1
            entry["rows_out"] += reason is None
            teachers[teacher] += 1
            samplings[sampling] += 1
    generated = read_manifest(src)
    keys = ("teacher", "n", "prompts", "truncated_rate", "malformed_rate", "template_default_system")
    keys += ("mixture",)  # generate.source: dataset: the realised mix of the sets
    return {
        "sources": sources,
        "teachers": dict(teachers),
        "sampling": [json.loads(s) if s else {} for s in samplings],
        "generate": {k: generated.metrics[k] for k in keys if generated and k in generated.metrics},
    }
