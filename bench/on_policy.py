"""On-policy distillation optimizer steps/s: distill's on_policy objective vs TRL's GKDTrainer, same run.

    .venv/bin/python bench/on_policy.py                       # 4 steps each, 4 prompts x 1 sample x 32 new tokens
    .venv/bin/python bench/on_policy.py --steps 10 --max-tokens 128 --threads 2     # an idle machine

Both sides train the same pair on the same prompts with the same step shape, fp32 on CPU:
  student  smollm2-pruned (SmolLM2-135M-Instruct, every other layer: 15 of 30), in the release layout;
  teacher  SmolLM2-135M-Instruct in the same release layout (the student's ids, R1 tokens included);
  prompts  arith:train with the demo's directive, `--prompts` per optimizer step, one sample each, temperature 1,
           at most `--max-tokens` new tokens, lr 1e-5 constant, no gradient checkpointing.
distill: train.objective on_policy through the train stage (STAGE_FNS["train"]): the student samples in its own
  in-process vLLM engine (weights reloaded in place after each step), the teacher scores with vLLM prompt_logprobs,
  loss = per-token reverse-KL policy gradient with chunked log-softmax.
TRL: trl.experimental.gkd.GKDTrainer with lmbda=1.0 (every step on-policy), beta=1.0 (reverse KL), seq_kd=False,
  temperature=1.0: the student samples with transformers `generate`, teacher and student run full forwards.
Steps/s is 1 / mean optimizer-step wall time over the steps after the first (engine and generate warm-up excluded,
as are model loading and vLLM engine starts, printed apart). Goal (issue 11): distill >= 3x TRL.

Measured 2026-12-02, defaults, 2 cores shared with other runs (load 4.2-4.8): distill 0.072 steps/s (steps 2-4:
13.8 s each = vLLM sampling 4.6 s + teacher scoring 2.1 s + update and in-place weight reload 7.1 s), TRL 0.073
steps/s (13.7 s each): 0.99x, the goal is NOT met at this size. 4 x 32 tokens per step is too little generation
for vLLM's batching to beat transformers' generate on one CPU thread; measure larger --prompts / --max-tokens
(and a GPU) before drawing conclusions.
Measured 2026-12-02 on 2 quiet cores, `--steps 5 --prompts 8 --max-tokens 128 --threads 2`: distill 0.054 steps/s
(steps 2-5 ~18 s: sampling ~6.2 s, teacher scoring ~3.2 s, update + reload ~8.6 s), TRL 0.041 (~24.5 s): 1.34x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

STUDENT = "smollm2-pruned"
TEACHER = "smollm2-135m"
DIRECTIVE = "Explain briefly, then finish with: The answer is <number>."  # the demo recipe's math_directive


def arith_rows(count: int) -> list[dict]:
    """Curated-shaped rows for arith:train prompts (the reference as a one-line answer; on_policy samples anew)."""
    from distill.data import load_prompts

    return [
        {
            "prompt_id": r["prompt_id"],
            "messages": [{"role": "user", "content": f"{r['problem']} {DIRECTIVE}"}],
            "reasoning": "",
            "answer": f"The answer is {r['reference']}.",
        }
        for r in load_prompts("arith", "train", limit=count)
    ]


def curate_folder(rows: list[dict], out: Path) -> Path:
    from distill.artifacts import finish_manifest, start_manifest, write_parquet

    write_parquet(rows, out / "kept" / "part-00000.parquet")
    finish_manifest(out, start_manifest("curate", "bench-on-policy"))
    return out


def release_copy(model: str, out: Path, student: str = STUDENT) -> Path:
    """`model` as train prepares it for `student` (release tokenizer, R1 rows added, seed 0), saved where vLLM and
    transformers load it."""
    import torch

    from distill.config import recipe_from_dict
    from distill.models import resolve_model
    from distill.students import get_student
    from distill.train import loop
    from distill.train.on_policy import save_policy_start

    if (out / "config.json").exists():
        return out
    path = resolve_model(model)
    recipe = recipe_from_dict(
        {"name": "bench", "student": student, "train": {"model": path, "dtype": "float32"}}
    )
    cfg = loop.effective_config(recipe.train, get_student(student))
    torch.manual_seed(0)
    tokenizer = loop.release_tokenizer_for(path, student)
    net, _ = loop.load_model(cfg, tokenizer, student, "sdpa")
    return save_policy_start(net, tokenizer, out)


def run_distill(args, curated: Path, student: Path, teacher: Path, out: Path) -> dict:
    """The train stage with objective on_policy; step times from its metrics.jsonl (sample + score + update + push)."""
    from distill.config import recipe_from_dict
    from distill.pipeline import STAGE_FNS

    train = {
        "model": str(student),  # the release copy TRL starts from too (train keeps its rows: idempotent)
        "objective": "on_policy",
        "teacher": str(teacher),
        "max_length": 512,
        "max_steps": args.steps,
        "lr": 1e-5,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "save_every": 100_000,
        "dtype": "float32",
        "gradient_checkpointing": False,
        "on_policy": {
            "prompts_per_step": args.prompts,
            "samples_per_prompt": 1,
            "max_tokens": args.max_tokens,
            "temperature": 1.0,
            "engine": {"dtype": "float32", "enforce_eager": True, "max_model_len": 512},
        },
    }
    recipe = recipe_from_dict({"name": "bench-on-policy", "student": STUDENT, "train": train})
    t0 = time.perf_counter()
    STAGE_FNS["train"](recipe, curated, out, True)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step_s"] for r in rows]
    return {
        "steps": steps,
        "wall_s": wall,
        "sample_tokens": statistics.mean(r["sample_tokens"] for r in rows),
        "reverse_kl": [round(r["reverse_kl"], 3) for r in rows],
    }


def run_trl(args, rows: list[dict], student: Path, teacher: Path, out: Path) -> dict:
    """GKDTrainer, fully on-policy with reverse KL; step times from a callback (generate + forwards + update)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from distill.models import load_tokenizer

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps: list[float] = []
            self.lengths: list[int] = []

        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.steps.append(time.perf_counter() - self.t0)

    chats = [{"messages": [*r["messages"], {"role": "assistant", "content": r["answer"]}]} for r in rows]
    config = GKDConfig(
        output_dir=str(out),
        max_steps=args.steps,
        per_device_train_batch_size=args.prompts,
        gradient_accumulation_steps=1,
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        max_length=512,
        lmbda=1.0,
        beta=1.0,
        seq_kd=False,
        temperature=1.0,
        max_new_tokens=args.max_tokens,
    )
    torch.set_num_threads(args.threads)  # the vLLM engines of the distill side may have changed it
    timer = StepTimer()
    t0 = time.perf_counter()
    trainer = GKDTrainer(
        model=AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32),
        teacher_model=AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32),
        args=config,
        train_dataset=Dataset.from_list(chats),
        processing_class=load_tokenizer(str(student)),
        callbacks=[timer],
    )
    trainer.train()
    losses = [round(h["loss"], 3) for h in trainer.state.log_history if "loss" in h]
    return {"steps": timer.steps, "wall_s": time.perf_counter() - t0, "loss": losses}


def steps_per_s(steps: list[float]) -> float:
    return 1.0 / statistics.mean(steps[1:] if len(steps) > 1 else steps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="optimizer steps per side (the first is warm-up)")
    p.add_argument("--prompts", type=int, default=4, help="prompts per optimizer step (one sample each)")
    p.add_argument("--max-tokens", type=int, default=32, help="max new tokens per student sample")
    p.add_argument("--out", default="runs/bench-on-policy", help="work folder (release copies, run outputs)")
    p.add_argument("--only", choices=["distill", "trl"], help="run one side (debugging)")
    p.add_argument(
        "--threads", type=int, default=1, help="CPU threads for both sides (vLLM binds cores 0..N-1)"
    )
    args = p.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB per engine; student and teacher run at once
    # the same cores for both: the in-process vLLM engines bind these and set torch's threads for the whole process
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{args.threads - 1}" if args.threads > 1 else "0"
    import torch

    torch.set_num_threads(args.threads)  # distill's update runs in this process too
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    work = Path(args.out)
    rows = arith_rows(args.prompts * args.steps)  # each prompt used once per side
    curated = curate_folder(rows, work / "curate")
    student, teacher = release_copy(STUDENT, work / "student"), release_copy(TEACHER, work / "teacher")
    result = {}
    if args.only != "trl":
        result["distill"] = run_distill(args, curated, student, teacher, work / "distill")
    if args.only != "distill":
        result["trl"] = run_trl(args, rows, student, teacher, work / "trl")
    report(args, result)


def report(args, result: dict) -> None:
    import torch

    print(
        f"\non-policy distillation, {STUDENT} <- {TEACHER}, fp32 CPU, {args.prompts} prompts x 1 sample x "
        f"<= {args.max_tokens} new tokens per step, {args.steps} steps (first excluded), "
        f"{args.threads} threads (torch now: {torch.get_num_threads()})"
    )
    for side, r in result.items():
        per = ", ".join(f"{s:.2f}" for s in r["steps"])
        print(
            f"  {side:8s} {steps_per_s(r['steps']):.3f} steps/s   step seconds: {per}   (whole run {r['wall_s']:.0f} s)"
        )
        extra = {k: v for k, v in r.items() if k not in {"steps", "wall_s"}}
        print(f"           {extra}")
    if len(result) == 2:
        ratio = steps_per_s(result["distill"]["steps"]) / steps_per_s(result["trl"]["steps"])
        print(f"  ratio distill / TRL GKDTrainer: {ratio:.2f}x   (goal >= 3x)")


if __name__ == "__main__":
    main()
