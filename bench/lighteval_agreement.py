"""distill's verdicts and pass@1 against lighteval 0.13.0's metrics on the same completions (MATH-500, AIME 2024,
GPQA Diamond), every disagreement listed:

    /work/main/.venv/bin/python -m venv /tmp/levenv                     # lighteval in its own venv (see below)
    echo "$(.venv/bin/python -c 'import site; print(site.getsitepackages()[0])')" \\
        > /tmp/levenv/lib/python3.11/site-packages/main-venv.pth
    /tmp/levenv/bin/pip install lighteval==0.13.0
    .venv/bin/python bench/lighteval_agreement.py --samples runs/eval/smollm2-135m/samples.parquet \\
        --lighteval-python /tmp/levenv/bin/python --out /tmp/agreement

lighteval 0.13.0 pins latex2sympy2_extended==1.0.6 where math-verify 0.9.0 (distill's grader) needs 1.11.0, so it
cannot share distill's environment without changing distill's grading: it runs in its own venv, this script hands it
the completions as JSON and reads its verdicts back. No model, no hub: only its metric functions.

Completions compared (one row per sample):
  model       the samples.parquet of a `distill eval` run (--samples; real model output);
  solutions   each problem's published solution (MATH-500 `solution`, AIME 2024 `solution`) closed by "</think>" as a
              completion of its own problem (right) and of the next problem (wrong unless both answers match);
  letters     GPQA Diamond: the gold letter and a wrong letter in the answer formats models write ("Answer: C",
              "**Answer:** C", "The answer is (C)", "\\boxed{C}", "C) <option text>").
lighteval's side follows its tasks exactly: `math_500` (gold = "ANSWER: " + solution, Metrics.pass_at_k_math),
`aime24` (gold = answer, Metrics.pass_at_k_math), `gpqa:diamond` (gold = the letter, Metrics.gpqa_instruct_pass_at_k),
each on the text after lighteval's remove_reasoning_tags([("<think>", "</think>")]); distill's side is the eval
stage's: parse_trace on the "<think>\\n"-prefilled completion, then distill.graders on the answer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

BENCHMARKS = ("math500", "aime24", "gpqa_diamond")
LETTER_FORMATS = ("Answer: {L}", "**Answer:** {L}", "The answer is ({L}).", "$\\boxed{{{L}}}$", "{L}) {text}")


# ---------------------------------------------------------------- lighteval's side (runs in its own venv)


def lighteval_verdicts(rows: list[dict]) -> list[dict]:
    """Per sample: lighteval's 0/1 score; per problem group: its pass@1 (PassAtK with k=1, n=the group's size)."""
    from lighteval.metrics.metrics import Metrics
    from lighteval.models.model_output import ModelResponse
    from lighteval.tasks.requests import Doc
    from lighteval.utils.utils import remove_reasoning_tags

    def metric(bench: str, n: int):
        params = {"k": 1, "n": n}
        m = Metrics.gpqa_instruct_pass_at_k if bench == "gpqa_diamond" else Metrics.pass_at_k_math
        return m(sample_params=params).sample_level_fn

    out = []
    for row in rows:
        doc = Doc(
            query=row["query"], choices=row["choices"], gold_index=row["gold_index"], task_name=row["bench"]
        )
        text = remove_reasoning_tags(row["completion"], [("<think>", "</think>")])
        score = metric(row["bench"], 1).compute(doc=doc, model_response=ModelResponse(text=[text]))
        out.append({"id": row["id"], "lighteval": float(score)})
    return out


# ---------------------------------------------------------------- distill's side


def lighteval_doc(bench: str, record: dict, prompt: dict) -> dict:
    """The Doc fields of lighteval's task for this problem (its prompt function's choices and gold_index)."""
    if bench == "math500":
        return {"query": prompt["problem"], "choices": [f"ANSWER: {record['solution']}"], "gold_index": 0}
    if bench == "aime24":
        return {"query": prompt["problem"], "choices": [str(record["answer"])], "gold_index": 0}
    letters = ["A", "B", "C", "D"]  # distill's own option order: the completion answered distill's prompt
    return {"query": prompt["problem"], "choices": letters, "gold_index": letters.index(prompt["reference"])}


def option_text(problem: str, letter: str) -> str:
    line = next((ln for ln in problem.splitlines() if ln.startswith(f"{letter}) ")), f"{letter}) ")
    return line[3:]


def constructed(bench: str, prompts: list[dict], records: list[dict]) -> list[dict]:
    """The `solutions` and `letters` sets (see the module doc)."""
    rows = []
    for i, (p, rec) in enumerate(zip(prompts, records, strict=True)):
        if bench == "gpqa_diamond":
            wrong = "A" if p["reference"] != "A" else "B"
            for letter in (p["reference"], wrong):
                for j, fmt in enumerate(LETTER_FORMATS):
                    text = "I compared the options.\n</think>\n\n" + fmt.format(
                        L=letter, text=option_text(p["problem"], letter)
                    )
                    rows.append(
                        {"set": "letters", "index": i, "completion": text, "variant": f"{letter}/{j}"}
                    )
            continue
        nxt = records[(i + 1) % len(records)]
        rows.append(
            {
                "set": "solutions",
                "index": i,
                "completion": f"Let me solve it.\n</think>\n\n{rec['solution']}",
                "variant": "own",
            }
        )
        rows.append(
            {
                "set": "solutions",
                "index": i,
                "completion": f"Let me solve it.\n</think>\n\n{nxt['solution']}",
                "variant": "next",
            }
        )
    return rows


def distill_verdicts(rows: list[dict]) -> list[str]:
    """The eval stage's grading of each completion: parse_trace on the prefilled completion, then the graders."""
    from distill.config import VerifyConfig
    from distill.engines.traces import parse_trace
    from distill.graders import verify_batch

    items = []
    for r in rows:
        trace = parse_trace(r["completion"], r.get("finish_reason", "stop"), True, prefilled=True)
        items.append((r["domain"], r["reference"], trace.answer or r["completion"]))
    return [v.verdict if v else "ungraded" for v in verify_batch(items, VerifyConfig())]


def build_rows(samples: Path | None, limit: int) -> list[dict]:
    """Every completion with what both sides need: distill's prompt row, lighteval's Doc fields."""
    from distill.artifacts import read_parquet
    from distill.data import load_prompts, raw_records

    by_id = {}
    rows = []
    for bench in BENCHMARKS:
        prompts = load_prompts(bench, "test", limit)
        records = raw_records(bench, "test")[: len(prompts)]
        for p, rec in zip(prompts, records, strict=True):
            by_id[p["prompt_id"]] = (bench, p, rec)
        for r in constructed(bench, prompts, records):
            p = prompts[r["index"]]
            rows.append(
                {
                    **r,
                    "bench": bench,
                    "prompt_id": p["prompt_id"],
                    "domain": p["domain"],
                    "reference": p["reference"],
                }
            )
    for s in read_parquet(samples) if samples else []:
        if s["prompt_id"] in by_id and s["model"] == "student":
            rows.append(
                {
                    **{k: s[k] for k in ("prompt_id", "domain", "reference", "completion", "finish_reason")},
                    "set": "model",
                    "bench": by_id[s["prompt_id"]][0],
                    "variant": str(s["sample_index"]),
                    "stored_verdict": s["verdict"],
                }
            )
    for i, r in enumerate(rows):
        bench, p, rec = by_id[r["prompt_id"]]  # a "next" solution is graded against its own problem's gold
        r.update(id=i, **lighteval_doc(bench, rec, p))
    return rows


def run_lighteval(rows: list[dict], python: str, work: Path) -> dict[int, float]:
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.json").write_text(json.dumps(rows))
    cmd = [python, __file__, "--worker", str(work / "in.json"), str(work / "out.json")]
    subprocess.run(cmd, check=True)
    return {r["id"]: r["lighteval"] for r in json.loads((work / "out.json").read_text())}


def report(rows: list[dict]) -> str:
    """Agreement per benchmark and set, pass@1 per benchmark on the model samples by both, every disagreement."""
    lines = [
        "| benchmark | set | completions | agree | rate | distill correct | lighteval correct |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["bench"], r["set"]) for r in rows})
    for bench, name in keys:
        group = [r for r in rows if (r["bench"], r["set"]) == (bench, name)]
        agree = sum(r["agree"] for r in group)
        lines.append(
            f"| {bench} | {name} | {len(group)} | {agree} | {100 * agree / len(group):.1f}% | "
            f"{sum(r['distill'] == 'correct' for r in group)} | {sum(r['lighteval'] == 1.0 for r in group)} |"
        )
    total = sum(r["agree"] for r in rows)
    lines.append(f"| all | all | {len(rows)} | {total} | {100 * total / len(rows):.1f}% | | |")
    lines += ["", "pass@1 on the model samples (mean over problems of the fraction correct):", ""]
    for bench in BENCHMARKS:
        model = [r for r in rows if r["bench"] == bench and r["set"] == "model"]
        if model:
            lines.append(
                f"- {bench}: distill {100 * pass1(model, lambda r: r['distill'] == 'correct'):.1f}, "
                f"lighteval {100 * pass1(model, lambda r: r['lighteval'] == 1.0):.1f} ({len({r['prompt_id'] for r in model})} problems)"
            )
    lines += ["", "Disagreements:", ""]
    for r in rows:
        if not r["agree"]:
            tail = r["completion"][-160:].replace("\n", " ")
            lines.append(
                f"- {r['bench']} {r['set']} {r['prompt_id']} [{r['variant']}] gold {r['reference']!r}: "
                f"distill {r['distill']}, lighteval {r['lighteval']:.0f}; ends: …{tail}"
            )
    return "\n".join(lines) + "\n"


def pass1(rows: list[dict], ok) -> float:
    groups: dict[str, list[bool]] = {}
    for r in rows:
        groups.setdefault(r["prompt_id"], []).append(ok(r))
    return sum(sum(g) / len(g) for g in groups.values()) / len(groups)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=Path, help="samples.parquet of a `distill eval` run")
    ap.add_argument("--limit", type=int, default=50, help="problems per benchmark for the constructed sets")
    ap.add_argument("--lighteval-python", default="/tmp/levenv/bin/python")
    ap.add_argument("--out", type=Path, default=Path("/tmp/lighteval-agreement"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        rows = json.loads(Path(args.worker[0]).read_text())
        Path(args.worker[1]).write_text(json.dumps(lighteval_verdicts(rows)))
        return
    rows = build_rows(args.samples, args.limit)
    for r, verdict in zip(rows, distill_verdicts(rows), strict=True):
        r["distill"] = verdict
        if "stored_verdict" in r and r["stored_verdict"] != verdict:  # the grader changed since that eval ran
            print(
                f"{r['prompt_id']}: regraded {verdict} by this distill, the eval stage stored {r['stored_verdict']}"
            )
    scores = run_lighteval(rows, args.lighteval_python, args.out)
    for r in rows:
        r["lighteval"] = scores[r["id"]]
        r["agree"] = (r["distill"] == "correct") == (r["lighteval"] == 1.0)
    text = report(rows)
    (args.out / "rows.json").write_text(json.dumps(rows, indent=1))
    (args.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
