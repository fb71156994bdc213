"""sft vs kd vs on_policy on the CPU pair at equal student compute: held-out pass@1 and reverse KL to the teacher.

    .venv/bin/python bench/objectives.py                  # the default sizes below: ~25 min on 2 busy cores
    .venv/bin/python bench/objectives.py --steps 16 --prompts 64

The table users want before picking train.objective, on a pair that shares one tokenizer:
  student  smollm2-pruned (SmolLM2-135M-Instruct, every other layer: 15 of 30), in the release layout (seed 0);
  teacher  SmolLM2-135M-Instruct (kd: its stored top-20 log-probs; on_policy and the reverse-KL score: the same
           model in the student's release layout, i.e. with the R1 token rows the student has).
Flow, through the pipeline's own stage functions (distill.pipeline.STAGE_FNS) on recipes built from
pipelines/demo-cpu-logit.yaml as a dict:
  generate  the teacher answers `--prompts` arith:train problems `--n` times (<= `--max-tokens` tokens, temperature
            0.6) and stores its top-20 log-probs per completion token;
  curate    graded; the correct traces are kept (at most 2 per prompt): what sft and kd train on, and the prompts
            on_policy samples;
  train x3  from the same start, the same `--steps` optimizer steps of `--batch` sequences of <= `--max-tokens`
            completion tokens, lr 3e-4 constant (equal student compute: steps x sequences x max new tokens):
            sft        CE on the kept traces;
            kd         0.5 CE + 0.5 forward KL(teacher top-20 || student) on the same traces;
            on_policy  `--batch` kept prompts x 1 student sample per step, per-token reverse KL to the teacher;
  score     held-out arith:test pass@1 through the eval stage (`--eval-k` samples per problem, ± SE over problems);
            reverse KL on held-out arith:test prompts: the student samples at temperature 1 (vLLM), the teacher
            scores every sampled token (prompt_logprobs); mean of log q - log p per token. Tokens the release added
            (ids >= 49152: </think>, the R1 EOS, ...) are left out: the teacher's rows for them are untrained; their
            share is printed.
The untrained student is scored the same way (the same-run baseline): each row's reverse KL is printed as a ratio
to it. pass@1 is reported only (held-out data: nothing here is chosen by it).

Measured 2026-12-02 with the defaults (538 s for the last pass; the stages took ~55 min in all on 2 cores shared
with other runs at load 4-13): 9 kept traces (128 generated, 5+4 correct); pass@1 0.0 ± 0.0 for all four (every
completion hits 128 tokens); reverse KL/token: start 4.228 ± 0.140, sft 1.706 ± 0.054 (0.40x), kd 4.135 ± 0.189
(0.98x), on_policy 0.347 ± 0.005 (0.08x). Read with care: the pruned student, unhealed, writes gibberish, and
8 steps do not fix it; sft learns newlines and digits, and on_policy collapses to newlines only, a sequence the
teacher also predicts with near certainty: reverse KL is mode-seeking, so a low value here is degenerate, not
better. A meaningful table needs a healed student (e.g. sft on many teacher samples first) and more steps.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from on_policy import STUDENT, release_copy  # noqa: E402  (the pair, built the same way)

OBJECTIVES = ["sft", "kd", "on_policy"]
ROOT = Path(__file__).resolve().parent.parent
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024}


def base_recipe(args, work: Path) -> dict:
    """pipelines/demo-cpu-logit.yaml resized: the bench's prompts, samples, lengths and held-out eval."""
    import yaml

    r = yaml.safe_load((ROOT / "pipelines" / "demo-cpu-logit.yaml").read_text())
    r.update(name="bench-objectives", run_dir=str(work), student=STUDENT)
    r["generate"].update(
        prompts=[{"source": "arith", "split": "train", "limit": args.prompts}],
        n=args.n,
        max_tokens=args.max_tokens,
    )
    r["eval"].update(
        benchmarks={"arith:test": {"k": args.eval_k, "limit": args.eval_problems}},
        max_tokens=args.max_tokens,
        baseline=None,
    )
    return r


def train_section(args, objective: str, start: Path, teacher: Path) -> dict:
    """The same start, steps, sequences per step and lengths for every objective."""
    common = {
        "model": str(start),
        "objective": objective,
        "max_steps": args.steps,
        "max_length": 512,
        "packing": False,  # one sequence per micro-batch: `batch` sequences per step, as on_policy's prompts
        "micro_batch_size": 1,
        "grad_accum": args.batch,
        "lr": 3e-4,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "save_every": 100_000,
        "gradient_checkpointing": False,
        "dtype": "float32",
        "kd": {"alpha": 0.5, "temperature": 1.0, "divergence": "forward"},
        "on_policy": {
            "prompts_per_step": args.batch,
            "samples_per_prompt": 1,
            "max_tokens": args.max_tokens,
            "engine": ENGINE,
        },
    }
    common["teacher"] = str(teacher) if objective == "on_policy" else "smollm2-135m"
    return common


def run_stages(args, work: Path, start: Path, teacher: Path) -> dict[str, Path]:
    """generate -> curate -> the three train runs (a rerun skips what its manifests say is done)."""
    from distill.config import recipe_from_dict
    from distill.pipeline import STAGE_FNS

    base = base_recipe(args, work)
    recipe = recipe_from_dict(base)
    timings = {}
    for stage, src in [("generate", None), ("curate", work / "generate")]:
        t0 = time.perf_counter()
        STAGE_FNS[stage](recipe, src, work / stage, False)
        timings[stage] = time.perf_counter() - t0
    models = {"start (untrained)": start}
    for objective in OBJECTIVES:
        r = recipe_from_dict({**base, "train": train_section(args, objective, start, teacher)})
        t0 = time.perf_counter()
        STAGE_FNS["train"](r, work / "curate", work / f"train-{objective}", False)
        timings[f"train {objective}"] = time.perf_counter() - t0
        models[objective] = work / f"train-{objective}" / "final"
    print("stage seconds:", {k: round(v) for k, v in timings.items()}, flush=True)
    return models


def pass_at_1(args, work: Path, models: dict[str, Path]) -> dict[str, dict]:
    """The eval stage on each model folder (arith:test, eval_k samples per problem)."""
    from distill.config import recipe_from_dict
    from distill.pipeline import STAGE_FNS

    recipe = recipe_from_dict(base_recipe(args, work))
    out = {}
    for name, model in models.items():
        folder = work / f"eval-{name.split()[0]}"
        STAGE_FNS["eval"](recipe, model, folder, False)
        out[name] = json.loads((folder / "results.json").read_text())["benchmarks"]["arith:test"]
    return out


def held_out_prompts(tokenizer, count: int) -> list[list[int]]:
    """Release generation prompts (with the <think> prefill) of the first `count` arith:test problems, as on_policy
    builds its training prompts."""
    from distill.data import load_prompts
    from distill.release import THINK_OPEN
    from distill.train.loop import training_template

    think = tokenizer(THINK_OPEN, add_special_tokens=False)["input_ids"]
    prompts = []
    for r in load_prompts("arith", "test", limit=count):
        chat = [{"role": "user", "content": f"{r['problem']} {base_directive()}"}]
        text = tokenizer.apply_chat_template(
            chat, chat_template=training_template(), tokenize=False, add_generation_prompt=True
        )
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"] + think)
    return prompts


def base_directive() -> str:
    import yaml

    return yaml.safe_load((ROOT / "pipelines" / "demo-cpu-logit.yaml").read_text())["generate"][
        "math_directive"
    ]


def sample_with_logprobs(llm, prompts: list[list[int]], n: int, max_tokens: int, seed: int = 0):
    """n temperature-1 samples per prompt with the sampled tokens' log q (vLLM logprobs=0: the sampled token)."""
    from vllm import SamplingParams

    params = SamplingParams(
        n=n, max_tokens=max_tokens, temperature=1.0, seed=seed, logprobs=0, detokenize=False
    )
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    seqs, starts, logq = [], [], []
    for p, o in zip(prompts, outs, strict=True):
        for c in o.outputs:
            if c.token_ids:
                seqs.append(p + list(c.token_ids))
                starts.append(len(p))
                logq.append([lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs, strict=True)])
    return seqs, starts, logq


def reverse_kl(args, work: Path, models: dict[str, Path], teacher: Path, vocab: int) -> dict[str, dict]:
    """Per model: mean over sampled held-out tokens of log q - log p (the teacher's ids < vocab only). Each result
    is kept as work/rkl-<model>-<sizes>.json, so a rerun (or a parallel run) skips the models already scored."""
    from distill.artifacts import atomic_write_text

    files = {
        n: work / f"rkl-{n.split()[0]}-{args.kl_prompts}x{args.kl_samples}x{args.max_tokens}.json"
        for n in models
    }
    todo = {n: m for n, m in models.items() if not files[n].exists()}
    if todo:
        for name, stats in score_reverse_kl(args, todo, teacher, vocab):
            atomic_write_text(files[name], json.dumps(stats))
    return {n: json.loads(files[n].read_text()) for n in models}


def score_reverse_kl(args, models: dict[str, Path], teacher: Path, vocab: int):
    """Every student samples first, one engine at a time; then the teacher scores them all. In-process vLLM engines
    share one global parallel state that closing any of them tears down, so no two are ever alive together."""
    from distill.config import TeacherConfig
    from distill.models import load_tokenizer
    from distill.train.on_policy import EngineScorer, start_engine

    engine = TeacherConfig(**ENGINE)
    prompts = held_out_prompts(load_tokenizer(str(teacher)), args.kl_prompts)
    sampled = {}
    for name, model in models.items():
        llm = start_engine(engine, str(model))
        sampled[name] = sample_with_logprobs(llm, prompts, args.kl_samples, args.max_tokens)
        del llm
        gc.collect()
    scorer = EngineScorer(start_engine(engine, str(teacher)))
    for name, (seqs, starts, logq) in sampled.items():
        yield name, kl_stats(seqs, starts, logq, scorer.score(seqs, starts), vocab)


def kl_stats(seqs, starts, logq, logp, vocab: int) -> dict:
    per_seq, kept, total = [], 0, 0
    for s, n, q, p in zip(seqs, starts, logq, logp, strict=True):
        diffs = [qi - float(pi) for t, qi, pi in zip(s[n:], q, p, strict=True) if t < vocab]
        kept, total = kept + len(diffs), total + len(q)
        if diffs:
            per_seq.append(diffs)
    flat = [d for seq in per_seq for d in seq]
    means = [statistics.mean(seq) for seq in per_seq]
    se = statistics.stdev(means) / len(means) ** 0.5 if len(means) > 1 else float("nan")
    return {"rkl": statistics.mean(flat), "se": se, "tokens": kept, "left_out": 1 - kept / max(total, 1)}


def report(args, scores: dict, kls: dict) -> None:
    start = kls["start (untrained)"]["rkl"]
    print(
        f"\nobjectives on {STUDENT} <- smollm2-135m, equal compute: {args.steps} steps x {args.batch} sequences x "
        f"<= {args.max_tokens} new tokens; pass@1 on {args.eval_problems} arith:test problems x {args.eval_k}; "
        f"reverse KL on {args.kl_prompts} held-out prompts x {args.kl_samples} samples"
    )
    print(
        f"{'objective':20s} {'pass@1 % ± SE':>15s} {'rKL/token ± SE':>16s} {'vs start':>9s} {'tokens':>7s} {'left out':>9s}"
    )
    for name, s in scores.items():
        k = kls[name]
        p1 = f"{100 * s['pass@1']:.1f} ± {100 * s['pass@1_se']:.1f}"
        rkl = f"{k['rkl']:.3f} ± {k['se']:.3f}"
        print(
            f"{name:20s} {p1:>15s} {rkl:>16s} {k['rkl'] / start:8.2f}x {k['tokens']:7d} {k['left_out']:8.1%}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=32, help="arith:train problems the teacher answers")
    p.add_argument("--n", type=int, default=4, help="teacher samples per problem")
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens per sample, everywhere")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per objective")
    p.add_argument("--batch", type=int, default=4, help="sequences per optimizer step")
    p.add_argument("--eval-problems", type=int, default=20, help="arith:test problems for pass@1")
    p.add_argument("--eval-k", type=int, default=1, help="samples per problem for pass@1")
    p.add_argument("--kl-prompts", type=int, default=8, help="held-out prompts for the reverse KL")
    p.add_argument("--kl-samples", type=int, default=2, help="student samples per held-out prompt")
    p.add_argument("--out", default="runs/bench-objectives", help="work folder (stages skip what is done)")
    args = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine; two run at once for the reverse KL
    work = Path(args.out).resolve()
    os.environ.setdefault(
        "DISTILL_CARDS_DIR", str(work / "data_cards")
    )  # a bench's curate card stays out of the repo
    t0 = time.perf_counter()
    start = release_copy(STUDENT, work / "start")
    teacher = release_copy("smollm2-135m", work / "teacher")
    models = run_stages(args, work, start, teacher)
    scores = pass_at_1(args, work, models)
    from distill.models import load_tokenizer, resolve_model

    vocab = len(
        load_tokenizer(resolve_model("smollm2-135m"))
    )  # the base ids; the release adds rows after them
    kls = reverse_kl(args, work, models, teacher, vocab)
    report(args, scores, kls)
    print(f"whole bench: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
