"""`make demo-logit`: kd against sft at equal student compute, held out, from one recipe with two phases.

    make demo-logit                          # after `make demo` (its distilled model is the teacher)
    .venv/bin/python bench/demo_logit.py --seeds 0 1 2     # the verdict under more eval sampling seeds
    .venv/bin/python bench/demo_logit.py --train-seeds 0 1 2   # every phase trained under each training seed

Runs pipelines/demo-logit.yaml through `distill run`'s stage functions up to train (generate with the teacher's
top-20 log-probs, curate, then its phases sft and kd, each from the same start for the same steps; a rerun skips
what its manifests say is done), then scores both phases' final models with the eval stage on the recipe's
held-out benchmark (arith:test, 100 problems x 2) under each eval seed, the kd one with the recipe's baseline
(SmolLM2 as it ships, on its own chat template: the model before distillation) alongside, and prints the verdict
lines: each model's pass@1 +- SE over problems, and kd - sft, kd - before, sft - before paired by problem.
With --train-seeds, each phase is also trained under every other training seed s (phase <name>-seed<s>, the
recipe's phases otherwise unchanged, before the last so that its folder stays train/), the verdict is printed per
training seed, and then over them: each difference paired by training seed and problem (the SE over problems of
the seed-averaged difference) with the per-seed values and their spread, since one training seed's sft or kd can
sit far from another's (13 to 33 % for sft on this pair).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def score(recipe, model: Path, out: Path, seed: int, baseline: bool) -> dict[str, dict]:
    """The eval stage on `model` under eval seed `seed`: per model scored, its benchmark results and per-problem
    verdicts (the baseline's too when `baseline`)."""
    import json

    import pyarrow.parquet as pq

    from distill.eval.metrics import verdicts_by_problem
    from distill.pipeline import STAGE_FNS

    ev = recipe.eval.model_copy(update={"seed": seed, "baseline": recipe.eval.baseline if baseline else None})
    STAGE_FNS["eval"](recipe.model_copy(update={"eval": ev}), model, out, False)
    results = json.loads((out / "results.json").read_text())
    bench = next(iter(recipe.eval.benchmarks))
    rows = pq.read_table(out / "samples.parquet", columns=["prompt_id", "verdict", "model"]).to_pylist()
    found = {"student": results["benchmarks"][bench]}
    if baseline:
        found["baseline"] = results["baseline"]["benchmarks"][bench]
    for name, res in found.items():
        res["correct"] = verdicts_by_problem(r for r in rows if r["model"] == name)
    return found


def comparisons(models) -> list[tuple[str, str]]:
    """The pairs the verdict prints: every phase against sft, then every model against the one before."""
    return [(m, "sft") for m in models if m not in ("sft", "before")] + [
        (m, "before") for m in models if m != "before"
    ]


def verdict(
    scores: dict[str, dict], seed: int, bench: str, k: int, train_seed: int | None = None
) -> list[str]:
    """Each model's pass@1 and share of samples that stop before the token cap, then every phase against sft and
    against the model before distillation, paired by problem."""
    from distill.eval.metrics import paired_gain

    n = len(scores["before"]["correct"])
    pct = lambda s: f"{100 * s['pass@1']:.1f} ± {100 * s['pass@1_se']:.1f}"  # noqa: E731
    trained = "" if train_seed is None else f", training seed {train_seed}"
    lines = [f"{bench} pass@1 %, {n} problems x {k}, eval seed {seed}{trained}:"]
    lines += [
        f"  {m:10s} {pct(s):>12s}   stops before the cap: {100 * (1 - s['truncated']):.0f}%"
        for m, s in scores.items()
    ]
    for a, b in comparisons(scores):
        gain, se, _ = paired_gain(scores[a]["correct"], scores[b]["correct"])
        ratio = f"{gain / se:.1f} SE" if se else "n/a"
        lines.append(f"  {a} - {b}: {100 * gain:+.1f} ± {100 * se:.1f} (paired by problem; {ratio})")
    return lines


def seeded_phases(recipe, seeds: list[int]) -> list:
    """The recipe's phases, and before its last one a copy of each under every other training seed."""
    extra = [
        p.model_copy(update={"name": f"{p.name}-seed{s}", "train": {**p.train, "seed": s}})
        for s in seeds
        if s != recipe.train.seed
        for p in recipe.phases
    ]
    return [*recipe.phases[:-1], *extra, recipe.phases[-1]]


def pooled(per_seed: list[dict[str, dict]], seeds: list[int], bench: str) -> list[str]:
    """Each model's pass@1 over the training seeds and every phase against sft and the model before, paired by
    training seed and problem, with the per-seed differences and their SE over seeds."""
    import statistics

    from distill.eval.metrics import paired_gain

    def joined(model: str) -> dict[str, list[bool]]:
        out: dict[str, list[bool]] = {}
        for scores in per_seed:
            for p, v in scores[model]["correct"].items():
                out.setdefault(p, []).extend(v)
        return out

    models = list(per_seed[0])
    lines = [f"{bench}, over training seeds {', '.join(map(str, seeds))} (each its own sft and kd):"]
    for m in models:
        acc = [100 * s[m]["pass@1"] for s in per_seed]
        lines.append(
            f"  {m:10s} mean {statistics.mean(acc):5.1f}   per seed {', '.join(f'{a:.1f}' for a in acc)}"
        )
    for a, b in comparisons(models):
        gain, se, _ = paired_gain(joined(a), joined(b))
        each = [100 * paired_gain(s[a]["correct"], s[b]["correct"])[0] for s in per_seed]
        spread = statistics.stdev(each) / len(each) ** 0.5 if len(each) > 1 else 0.0
        per = ", ".join(f"{e:+.1f}" for e in each)
        lines.append(
            f"  {a} - {b}: {100 * gain:+.1f} ± {100 * se:.1f} (paired by seed and problem; "
            f"{gain / se if se else 0:.1f} SE); per seed {per} (± {spread:.1f} over seeds)"
        )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "pipelines" / "demo-logit.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="eval sampling seeds (0: the recipe's)")
    p.add_argument(
        "--train-seeds", type=int, nargs="+", default=None, help="training seeds (default: the recipe's)"
    )
    p.add_argument("--set", dest="sets", action="append", default=[], help="override a recipe field")
    args = p.parse_args()
    from distill.config import load_recipe
    from distill.errors import DistillError
    from distill.pipeline import phase_dirs, run_pipeline

    t0 = time.perf_counter()
    try:
        recipe = load_recipe(args.recipe, args.sets)
        if not Path(recipe.teacher.model).is_dir():
            raise DistillError(
                f"{args.recipe}: teacher {recipe.teacher.model} not found: run `make demo` first"
            )
        os.environ.setdefault("DISTILL_CARDS_DIR", str(recipe.run_path() / "data_cards"))  # not the repo's
        train_seeds, names = args.train_seeds or [recipe.train.seed], [p.name for p in recipe.phases]
        recipe = recipe.model_copy(update={"phases": seeded_phases(recipe, train_seeds)})
        run_pipeline(recipe, ["generate", "curate", "train"])
    except DistillError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    dirs, run = phase_dirs(recipe), recipe.run_path()
    bench = next(iter(recipe.eval.benchmarks))
    lines = []
    last = recipe.phases[-1].name  # scored with the baseline alongside (the model before distillation)
    k = recipe.eval.benchmarks[bench].k
    for seed in args.seeds:
        found = {
            name: score(
                recipe, folder / "final", run / f"eval-{name}-seed{seed}", seed, baseline=name == last
            )
            for name, folder in dirs.items()
        }
        before = found[last]["baseline"]
        per_seed = []
        for t in train_seeds:
            tag = "" if t == recipe.train.seed else f"-seed{t}"
            scores = {n: found[n + tag]["student"] for n in names} | {"before": before}
            per_seed.append(scores)
            lines += verdict(scores, seed, bench, k, t if len(train_seeds) > 1 else None)
        if len(train_seeds) > 1:
            lines += pooled(per_seed, train_seeds, bench)
    print(
        f"\ndemo-logit: SmolLM2 <- make demo's distilled model, phases {', '.join(dirs)} at equal student compute"
    )
    print("\n".join(lines))
    print(f"demo-logit: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine
    main()
