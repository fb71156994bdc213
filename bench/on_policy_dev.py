"""on_policy's settings against sft on pipelines/demo-logit.yaml: train candidate on_policy phases, score them.

    # choose on arith:dev (every candidate from the untrained start, 16 steps x 4 prompts x 1 sample x <= 128 tokens);
    # RUN: a copy of runs/demo-logit (generate, curate, train-sft, train), so sft and kd are skipped by their manifests
    .venv/bin/python bench/on_policy_dev.py --run RUN --candidate 'op-default={}' --candidate 'op-tenth={on_policy: {lr_scale: 0.1}}'
    # then once, held out, the chosen one, with kd's existing evals alongside; --versus kd pairs against kd instead
    .venv/bin/python bench/on_policy_dev.py --run RUN --candidate 'op-default={}' --bench arith:test \
        --seeds 0 1 2 --scored 'kd=runs/demo-logit/eval-kd-seed{seed}'
    # other training seeds, sft's too (NAME:OBJECTIVE)
    .venv/bin/python bench/on_policy_dev.py --run RUN --candidate 'op-seed1={seed: 1}' \
        --candidate 'sft-seed1:sft={seed: 1}' --bench arith:test --versus sft-seed1

The recipe's phases become [sft, candidates..., kd] (sft and kd as `make demo-logit` trains them; kd stays last so
its folder is train/ and a run dir copied from runs/demo-logit skips sft, kd, generate and curate by their
manifests); each candidate is a phase (on_policy unless NAME:OBJECTIVE names another) with its `train` overrides
(YAML). Each of sft and the candidates is scored by bench/demo_logit.py's `score` (the eval stage, skipped when its
folder is up to date) on `--bench` (the recipe's k and limit: 100 problems x 2) under each eval seed, `--scored`
eval folders are read as they are, and each is printed: pass@1 +- SE over problems, share of samples that stop
before the token cap, mean sample length (tokens), and its difference to `--versus` (sft) paired by problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def phases(candidates: list[str]) -> list[dict]:
    """sft, each `name[:objective]={overrides}` candidate as a phase (on_policy unless named), then kd (last: its
    folder is train/)."""
    out = [{"name": "sft", "objective": "sft"}]
    for spec in candidates:
        head, _, train = spec.partition("=")
        name, _, objective = head.partition(":")
        overrides = yaml.safe_load(train or "{}") or {}
        out.append({"name": name, "objective": objective or "on_policy", "train": overrides})
    return out + [{"name": "kd", "objective": "kd"}]


def split_spec(spec: str) -> tuple[str, str]:
    name, _, value = spec.partition("=")
    return name, value


def read_scored(folder: Path, bench: str) -> dict:
    """An eval stage folder's results on `bench` for its student, with per-problem verdicts (as demo_logit.score)."""
    import json

    import pyarrow.parquet as pq

    from distill.eval.metrics import verdicts_by_problem

    res = json.loads((folder / "results.json").read_text())["benchmarks"][bench]
    rows = pq.read_table(folder / "samples.parquet", columns=["prompt_id", "verdict", "model"]).to_pylist()
    return res | {"correct": verdicts_by_problem(r for r in rows if r["model"] == "student")}


def line(name: str, res: dict, ref: dict | None, versus: str) -> str:
    """One model's row: pass@1 +- SE (%), stop share, mean length and, against `versus`, the paired difference."""
    from distill.eval.metrics import paired_gain

    row = (
        f"  {name:14s} {100 * res['pass@1']:5.1f} ± {100 * res['pass@1_se']:.1f}   "
        f"stops before the cap: {100 * (1 - res['truncated']):3.0f}%   mean length {res['mean_tokens']:.1f}"
    )
    if ref is None:
        return row
    gain, se, _ = paired_gain(res["correct"], ref["correct"])
    return row + f"   - {versus}: {100 * gain:+.1f} ± {100 * se:.1f} (paired)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "pipelines" / "demo-logit.yaml"))
    p.add_argument(
        "--run", required=True, help="run dir (a copy of runs/demo-logit: its sft and kd are reused)"
    )
    p.add_argument(
        "--candidate",
        action="append",
        default=[],
        help="NAME[:OBJECTIVE]={train overrides as YAML} (objective on_policy unless given)",
    )
    p.add_argument("--bench", default="arith:dev", help="benchmark scored (choose on arith:dev only)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument(
        "--scored",
        action="append",
        default=[],
        help="NAME=EVAL_DIR: an eval stage folder already written on the same benchmark and eval seed ({seed} in "
        "it is the seed), printed and paired alongside (e.g. kd=runs/demo-logit/eval-kd-seed{seed})",
    )
    p.add_argument("--versus", default="sft", help="the row every other is paired against")
    p.add_argument("--score-kd", action="store_true", help="score the kd phase too (not read from --scored)")
    p.add_argument("--set", dest="sets", action="append", default=[], help="override a recipe field (a.b=v)")
    args = p.parse_args()
    from demo_logit import score

    from distill.config import BenchmarkSpec, load_recipe
    from distill.pipeline import phase_dirs, run_pipeline

    sets = [
        f"run_dir={args.run}",
        f"phases={yaml.safe_dump(phases(args.candidate), default_flow_style=True)}",
        *args.sets,
    ]
    recipe = load_recipe(args.recipe, sets)
    os.environ.setdefault("DISTILL_CARDS_DIR", str(recipe.run_path() / "data_cards"))
    run_pipeline(recipe, ["generate", "curate", "train"])
    spec = next(iter(recipe.eval.benchmarks.values()))
    ev = recipe.eval.model_copy(
        update={"benchmarks": {args.bench: BenchmarkSpec(k=spec.k, limit=spec.limit)}}
    )
    scored = recipe.model_copy(update={"eval": ev})
    dirs = {n: d for n, d in phase_dirs(recipe).items() if n != "kd" or args.score_kd}
    for seed in args.seeds:
        found = {
            n: score(
                scored,
                d / "final",
                recipe.run_path() / f"eval-{args.bench.replace(':', '-')}-{n}-seed{seed}",
                seed,
                False,
            )["student"]
            for n, d in dirs.items()
        }
        found |= {
            n: read_scored(Path(d.format(seed=seed)), args.bench) for n, d in map(split_spec, args.scored)
        }
        print(f"{args.bench} pass@1 %, {spec.limit} problems x {spec.k}, eval seed {seed}:")
        for n, res in found.items():
            print(line(n, res, None if n == args.versus else found[args.versus], args.versus))


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine
    main()
