"""sft vs kd vs on_policy at equal student compute: held-out pass@1 and reverse KL to the teacher, side by side.

    make demo                                              # first: its distilled model is the default teacher
    .venv/bin/python bench/objectives.py                   # the defaults below: ~55 min on 2 quiet cores
    .venv/bin/python bench/objectives.py --student smollm2-pruned --teacher smollm2-135m   # the test pair

The table users want before picking train.objective, on a pair that shares one vocabulary:
  student  `--student` (a registered student; default smollm2-135m: SmolLM2-135M-Instruct), in its release layout
           (release tokenizer, R1 rows added, seed 0): where train starts every objective;
  teacher  `--teacher` (default runs/demo-cpu/patch/release: `make demo`'s distilled SmolLM2, 25.0 +- 3.4 arith:test
           pass@1 where the student has 8.5 +- 2.0). A release-layout folder is used as is: it generates with its
           own template (<think> prefilled), kd reads its stored log-probs, on_policy and the reverse KL ask it to
           score. Its traces are parsed as answers only (teacher.thinking off): the demo's model learned from
           answer-only traces and, after 12 steps, opens with "\n" and never writes </think>. A plain model
           (e.g. smollm2-135m) generates on its own template; on_policy and the score use a copy in the student's
           release layout whose R1 rows are untrained, so those ids are left out of the KL.
Flow, through the pipeline's own stage functions (distill.pipeline.STAGE_FNS) on recipes built from
pipelines/demo-cpu-logit.yaml as a dict:
  generate  the teacher answers `--prompts` arith:train problems `--n` times (<= `--max-tokens` tokens, temperature
            0.6) and stores its top-20 log-probs per completion token;
  curate    graded; the correct traces are kept (at most 2 per prompt): what sft and kd train on, and the prompts
            on_policy samples;
  train     per row of OBJECTIVES, from the same start, `--steps` optimizer steps of `--batch` sequences of
            <= `--max-tokens` completion tokens (equal student compute: steps x sequences x max new tokens; a row
            of two runs splits the steps), the demo's lr 2e-4 cosine (chosen on arith:dev for sft) unless the row
            says otherwise:
            sft        CE on the kept traces;
            kd         0.5 CE + 0.5 forward KL(teacher top-20 || student) on the same traces;
            on_policy  `--batch` kept prompts x 1 student sample per step, per-token reverse KL to the teacher
                       (-g1: discount 1, the per-sample return to go); kd+on_policy: half the steps each,
                       kd8 (their shared first half) reported as a row of its own;
  score     held-out arith:test pass@1 through the eval stage (`--eval-k` samples per problem, +- SE over problems),
            the teacher too (the ceiling); reverse KL on held-out arith:test prompts: the student samples at
            temperature 1 (vLLM), the teacher scores every sampled token (prompt_logprobs); mean of log q - log p per
            token, +- SE over sequences.
The untrained student is scored the same way (the same-run baseline): each row's reverse KL is printed as a ratio
to it. Held-out numbers are reported, not used to choose (the one exception is said where the table is read).

Measured 2026-12-02, defaults, 2 quiet cores (2,049 s before the on_policy-g1 row existed: generate 277, curate 4,
sft 115, kd 109, on_policy 470, then the evals and the reverse KL; adding the row took 1,074 s, retraining the other
three, as the new config field changed their hash, to the same losses to the last digit); 96 x 4 teacher samples,
82 traces kept:
  model               pass@1 % ± SE  - sft (paired)  rKL/token ± SE vs start mean len
  start (untrained)       0.5 ± 0.5     -12.5 ± 2.8   0.439 ± 0.065    1.00x     86.5
  sft                    13.0 ± 2.7                   0.320 ± 0.022    0.73x     53.0
  kd                     25.0 ± 4.0     +12.0 ± 3.9   0.244 ± 0.019    0.56x     63.2
  on_policy              14.5 ± 3.0      +1.5 ± 4.1   0.403 ± 0.016    0.92x    127.8
  on_policy-g1            0.0 ± 0.0     -13.0 ± 2.7   5.882 ± 0.356   13.41x      4.8
  kd+on_policy            3.0 ± 1.2     -10.0 ± 2.8   0.561 ± 0.044    1.28x     27.2
  kd+on_policy-lr2e-5    24.5 ± 3.8     +11.5 ± 3.9   0.320 ± 0.036    0.73x     34.1
  kd8                    19.0 ± 3.4      +6.0 ± 3.4   0.361 ± 0.035    0.82x     36.1
  teacher                25.0 ± 3.4     +12.0 ± 3.3
The on_policy rows were measured before on_policy's stop term existed (the teacher scoring the EOS position,
distill.train.on_policy), which was added because of them. The stop term changed no config field: in a work folder
from before it, delete the train-*on_policy* folders (and their eval-/rkl- results) to rerun those rows. Rerun with
the stop term (not through this bench: bench/on_policy_dev.py on `make demo-logit`'s data, the same pair, traces and
sizes, whose sft and kd give this table's rows to the digit; 2026-12-06), on_policy alone from the start stops
(92-99% of held-out samples) and at lr 5e-5, a quarter of LR chosen on arith:dev, scores 46.0 +- 4.5, 28.5 +- 3.8
and 46.0 +- 4.5 under training seeds 0, 1, 2; at LR it scores 2.0 +- 1.2. sft under training seeds 1 and 2 scores
30.5 +- 3.9 and 32.5 +- 4.3: this table's sft (seed 0, 13.0) is its lowest seed, so the "- sft" column overstates
the margin over sft (on_policy - sft paired, seed by seed: +33.0, -2.0, +13.5). The README's objectives table has
those rows, the dev sweep and the other eval seeds.
kd reaches the teacher's score in 16 steps (it trains on the teacher's own ids with its top-20 at every position);
sft gets half as far. on_policy (discount 0, per-token weights) learns the teacher's wording but not when to stop:
nothing in a per-token weight rewards ending a sample, and its samples drift to the 128-token cap (1 of 200 eval
samples stops; the start stops on 160). With discount 1 (the sequence-level KL's gradient) the shortest sample
wins: by step 6 the student ends after 1-2 tokens (train metrics, not held-out data), the degenerate optimum that
MiniLLM's length normalisation and teacher-mixed sampling exist to avoid (not implemented). After 8 kd steps
(kd8, 19.0), 8 on_policy steps at the sft lr wreck the student (3.0; its train reverse KL rose 0.24 -> 0.53,
grad norm 5 -> 28); at a tenth of it they reach 24.5, as far as 8 more kd steps (kd, 25.0). That second lr was
tried after seeing the first's held-out drop and its rising train reverse KL: one alternative, not a sweep, and
both rows are kept. So: on_policy at a policy-gradient lr (~4-10x below sft's), after kd or alone. The start scores
0.5: SmolLM2 meets the R1 tokens (<｜Assistant｜>, <think>) untrained. One seed (0): the SEs are over problems
(pass@1) and sequences (reverse KL), not over seeds.
Measured 2026-12-02 on the test pair (--student smollm2-pruned --teacher smollm2-135m, 32 prompts, 8 steps, 20
problems x 1, 8 x 2 KL prompts; ~55 min on 2 busy cores): 9 traces kept; pass@1 0.0 for all; reverse KL start
4.228, sft 1.706, kd 4.135, on_policy 0.347. The pruned student, unhealed, writes gibberish that 8 steps do not
fix; on_policy's low value came from emitting newlines only, which the teacher also predicts: degenerate.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from on_policy import release_copy  # noqa: E402  (the pair, built the same way)

# row -> its train runs, (train.objective, on_policy.discount, train.lr) each, run one after the other from the start;
# a row's steps are split evenly between its runs (discount 1: the per-sample return to go, 0: per token); on_policy
# trains at on_policy.lr_scale (default 0.25) x train.lr
LR = 2e-4  # the demo's, chosen on arith:dev for sft
OBJECTIVES = {
    "sft": [("sft", 0.0, LR)],
    "kd": [("kd", 0.0, LR)],
    "on_policy": [("on_policy", 0.0, LR)],
    "on_policy-g1": [("on_policy", 1.0, LR)],
    "kd+on_policy": [
        ("kd", 0.0, LR),
        ("on_policy", 0.0, LR),
    ],  # the recipes' order: off-policy, then on-policy
    # stepping at LR, the on_policy half's train reverse KL rose (0.24 -> 0.53, grad norm 5 -> 28): a tenth of it
    # (train.lr LR / 10 / 0.25, which on_policy's default lr_scale 0.25 brings to LR / 10 = 2e-5)
    "kd+on_policy-lr2e-5": [("kd", 0.0, LR), ("on_policy", 0.0, LR / 10 / 0.25)],
}
ROOT = Path(__file__).resolve().parent.parent
ENGINE = {"dtype": "float32", "enforce_eager": True, "max_model_len": 1024}
DEMO_TEACHER = "runs/demo-cpu/patch/release"


@dataclass
class Pair:
    """Where each step finds the teacher, and which ids the reverse KL counts (None: all)."""

    student: str
    start: Path  # the student in its release layout: every objective starts here
    teacher: str  # as given: a model name or a release-layout folder
    scorer: Path  # the teacher in the student's release layout: on_policy and the reverse KL
    kl_vocab: int | None


def make_pair(args, work: Path) -> Pair:
    from distill.models import load_tokenizer, resolve_model
    from distill.release import ASSISTANT, THINK

    start = release_copy(args.student, work / "start", args.student)
    folder = Path(args.teacher)
    if not folder.is_dir() and args.teacher == DEMO_TEACHER:
        sys.exit(
            f"bench/objectives.py: teacher {DEMO_TEACHER} not found: run `make demo` first, or pass --teacher"
        )
    if folder.is_dir() and ASSISTANT + THINK in (load_tokenizer(str(folder)).chat_template or ""):
        return Pair(args.student, start, str(folder.resolve()), folder.resolve(), None)
    scorer = release_copy(args.teacher, work / "teacher", args.student)
    base_vocab = len(
        load_tokenizer(resolve_model(args.teacher))
    )  # the release adds untrained rows after these
    return Pair(args.student, start, args.teacher, scorer, base_vocab)


def base_recipe(args, work: Path, pair: Pair) -> dict:
    """pipelines/demo-cpu-logit.yaml resized: the bench's pair, prompts, samples, lengths and held-out eval."""
    import yaml

    r = yaml.safe_load((ROOT / "pipelines" / "demo-cpu-logit.yaml").read_text())
    r.update(name="bench-objectives", run_dir=str(work), student=pair.student)
    r["teacher"].update(model=pair.teacher, in_process=True)  # thinking stays off: see the top
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
    r["eval"]["engine"]["in_process"] = True
    return r


def train_section(args, link: tuple[str, float, float], pair: Pair, start: Path, steps: int) -> dict:
    """The same sequences per step and lengths for every objective."""
    objective, discount, lr = link
    return {
        "model": str(start),
        "objective": objective,
        "max_steps": steps,
        "max_length": 512,
        "packing": False,  # one sequence per micro-batch: `batch` sequences per step, as on_policy's prompts
        "micro_batch_size": 1,
        "grad_accum": args.batch,
        "lr": lr,
        "lr_scheduler": "cosine",
        "warmup_ratio": 0.0,
        "save_every": 100_000,
        "gradient_checkpointing": False,
        "dtype": "float32",
        "kd": {"alpha": 0.5, "temperature": 1.0, "divergence": "forward"},
        "on_policy": {
            "prompts_per_step": args.batch,
            "samples_per_prompt": 1,
            "max_tokens": args.max_tokens,
            "discount": discount,
            "engine": ENGINE,
        },
        # kd: whose stored log-probs train reads (generate's teacher); on_policy: who scores the samples
        "teacher": str(pair.scorer) if objective == "on_policy" else pair.teacher,
    }


def link_tag(link: tuple[str, float, float], steps: int) -> str:
    """A train run's name: objective and steps, then what differs from the defaults (kd8, on_policy16-d1)."""
    objective, discount, lr = link
    return (
        f"{objective}{steps}" + (f"-d{discount:g}" if discount else "") + (f"-lr{lr:g}" if lr != LR else "")
    )


def run_stages(args, work: Path, pair: Pair) -> dict[str, Path]:
    """generate -> curate -> the train runs of every row (a rerun skips what its manifests say is done)."""
    from distill.config import recipe_from_dict
    from distill.pipeline import STAGE_FNS

    base = base_recipe(args, work, pair)
    recipe = recipe_from_dict(base)
    timings = {}
    for stage, src in [("generate", None), ("curate", work / "generate")]:
        t0 = time.perf_counter()
        STAGE_FNS[stage](recipe, src, work / stage, False)
        timings[stage] = time.perf_counter() - t0
    models = {"start (untrained)": pair.start}
    for name, runs in OBJECTIVES.items():
        start, tag = pair.start, ""
        for link in runs:
            steps = args.steps // len(runs)
            tag += ("+" if tag else "") + link_tag(link, steps)
            out = work / f"train-{tag}"  # named by the chain so far: rows that share a prefix share its run
            t0 = time.perf_counter()
            train = train_section(args, link, pair, start, steps)
            STAGE_FNS["train"](recipe_from_dict({**base, "train": train}), work / "curate", out, False)
            timings.setdefault(f"train {tag}", time.perf_counter() - t0)
            # the chain's earlier runs are rows too: kd8 is where kd8+on_policy8 starts
            if start is not pair.start:
                models.setdefault(tag.rsplit("+", 1)[0], start)
            start = out / "final"
        models[name] = start
    print("stage seconds:", {k: round(v) for k, v in timings.items()}, flush=True)
    return models


def pass_at_1(args, work: Path, pair: Pair, models: dict[str, Path]) -> dict[str, dict]:
    """The eval stage on each model folder (arith:test, eval_k samples per problem)."""
    import pyarrow.parquet as pq

    from distill.config import recipe_from_dict
    from distill.eval.metrics import verdicts_by_problem
    from distill.pipeline import STAGE_FNS

    recipe = recipe_from_dict(base_recipe(args, work, pair))
    out = {}
    for name, model in models.items():
        folder = work / f"eval-{name.split()[0]}"
        STAGE_FNS["eval"](recipe, model, folder, False)
        out[name] = json.loads((folder / "results.json").read_text())["benchmarks"]["arith:test"]
        rows = pq.read_table(folder / "samples.parquet", columns=["prompt_id", "verdict"]).to_pylist()
        out[name]["correct"] = verdicts_by_problem(rows)
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


def reverse_kl(args, work: Path, models: dict[str, Path], pair: Pair) -> dict[str, dict]:
    """Per model: mean over sampled held-out tokens of log q - log p (ids < pair.kl_vocab only). Each result
    is kept as work/rkl-<model>-<sizes>.json, so a rerun (or a parallel run) skips the models already scored."""
    from distill.artifacts import atomic_write_text

    files = {
        n: work / f"rkl-{n.split()[0]}-{args.kl_prompts}x{args.kl_samples}x{args.max_tokens}.json"
        for n in models
    }
    todo = {n: m for n, m in models.items() if not files[n].exists()}
    if todo:
        for name, stats in score_reverse_kl(args, todo, pair.scorer, pair.kl_vocab, work / "engine.log"):
            atomic_write_text(files[name], json.dumps(stats))
    return {n: json.loads(files[n].read_text()) for n in models}


def score_reverse_kl(args, models: dict[str, Path], teacher: Path, vocab: int | None, log: Path):
    """Every student samples first, one engine at a time; then the teacher scores them all. In-process vLLM engines
    share one global parallel state that closing any of them tears down, so no two are ever alive together."""
    from distill.config import TeacherConfig
    from distill.models import load_tokenizer
    from distill.train.on_policy import EngineScorer, start_engine

    engine = TeacherConfig(**ENGINE)
    prompts = held_out_prompts(load_tokenizer(str(teacher)), args.kl_prompts)
    sampled = {}
    for name, model in models.items():
        llm = start_engine(engine, str(model), log)
        sampled[name] = sample_with_logprobs(llm, prompts, args.kl_samples, args.max_tokens)
        del llm
        gc.collect()
    scorer = EngineScorer(start_engine(engine, str(teacher), log))
    for name, (seqs, starts, logq) in sampled.items():
        yield name, kl_stats(seqs, starts, logq, scorer.score(seqs, starts), vocab)


def kl_stats(seqs, starts, logq, logp, vocab: int | None) -> dict:
    per_seq, kept, total = [], 0, 0
    for s, n, q, p in zip(seqs, starts, logq, logp, strict=True):
        diffs = [qi - float(pi) for t, qi, pi in zip(s[n:], q, p, strict=True) if vocab is None or t < vocab]
        kept, total = kept + len(diffs), total + len(q)
        if diffs:
            per_seq.append(diffs)
    flat = [d for seq in per_seq for d in seq]
    means = [statistics.mean(seq) for seq in per_seq]
    se = statistics.stdev(means) / len(means) ** 0.5 if len(means) > 1 else float("nan")
    return {"rkl": statistics.mean(flat), "se": se, "tokens": kept, "left_out": 1 - kept / max(total, 1)}


def report(args, pair: Pair, scores: dict, kls: dict) -> None:
    from distill.eval.metrics import paired_gain

    start = kls["start (untrained)"]["rkl"]
    print(
        f"\nobjectives on {pair.student} <- {pair.teacher}, equal compute: {args.steps} steps x {args.batch} "
        f"sequences x <= {args.max_tokens} new tokens; pass@1 on {args.eval_problems} arith:test problems x "
        f"{args.eval_k}; reverse KL on {args.kl_prompts} held-out prompts x {args.kl_samples} samples"
    )
    print(
        f"{'model':18s} {'pass@1 % ± SE':>14s} {'- sft (paired)':>15s} {'rKL/token ± SE':>15s} {'vs start':>8s} "
        f"{'mean len':>8s} {'left out':>8s}"
    )
    for name, s in scores.items():
        p1 = f"{100 * s['pass@1']:.1f} ± {100 * s['pass@1_se']:.1f}"
        gain, se, _ = paired_gain(s["correct"], scores["sft"]["correct"])
        line = f"{name:18s} {p1:>14s} {f'{100 * gain:+.1f} ± {100 * se:.1f}' if name != 'sft' else '':>15s}"
        if name in kls:  # not the teacher: its reverse KL to itself is 0
            k = kls[name]
            rkl = f"{k['rkl']:.3f} ± {k['se']:.3f}"
            mean_len = k["tokens"] / (1 - k["left_out"]) / (args.kl_prompts * args.kl_samples)
            line += f" {rkl:>15s} {k['rkl'] / start:7.2f}x {mean_len:8.1f} {k['left_out']:8.1%}"
        print(line)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="smollm2-135m", help="a registered student")
    p.add_argument(
        "--teacher",
        default=DEMO_TEACHER,
        help="a release-layout folder or a model the student shares ids with",
    )
    p.add_argument("--prompts", type=int, default=96, help="arith:train problems the teacher answers")
    p.add_argument("--n", type=int, default=4, help="teacher samples per problem")
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens per sample, everywhere")
    p.add_argument("--steps", type=int, default=16, help="optimizer steps per objective")
    p.add_argument("--batch", type=int, default=4, help="sequences per optimizer step")
    p.add_argument("--eval-problems", type=int, default=100, help="arith:test problems for pass@1")
    p.add_argument("--eval-k", type=int, default=2, help="samples per problem for pass@1")
    p.add_argument("--kl-prompts", type=int, default=32, help="held-out prompts for the reverse KL")
    p.add_argument("--kl-samples", type=int, default=2, help="student samples per held-out prompt")
    p.add_argument("--out", default=None, help="work folder (stages skip what is done); default per pair")
    args = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine
    name = Path(args.teacher).parent.parent.name if Path(args.teacher).is_dir() else args.teacher
    work = Path(args.out or f"runs/bench-objectives/{args.student}-from-{name}").resolve()
    os.environ.setdefault(
        "DISTILL_CARDS_DIR", str(work / "data_cards")
    )  # a bench's curate card stays out of the repo
    t0 = time.perf_counter()
    pair = make_pair(args, work)
    models = run_stages(args, work, pair)
    scores = pass_at_1(args, work, pair, {**models, "teacher": pair.scorer})
    kls = reverse_kl(args, work, models, pair)
    report(args, pair, scores, kls)
    print(f"whole bench: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
