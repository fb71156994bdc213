"""Release patch against the plain-transformers way of doing the same job, on the same checkpoint folders:

    flock /tmp/distill-heavy.lock .venv/bin/python bench/patch.py              # ~2 min on 2 CPU cores
    .venv/bin/python bench/patch.py --only qwen --rounds 1                      # a quick look

(a) qwen     a train-output-shaped run: train/final/ is a random Qwen2 with the real 152k vocabulary (hidden 512,
             4 layers) as train saves it for student qwen-1.5b (release tokenizer, lm_head already untied:
             ~680 MB fp32) plus train/manifest.json. Patching it = load, rewrite tokenizer/configs, save.
(b) smollm2  `distill patch` on a base checkpoint: the embedded SmolLM2-135M (538 MB fp32, vocab 49152) as
             student smollm2-135m, which adds the 6 R1 tokens and resizes the embeddings (49152 -> 49216 rows).

Passes, each in a fresh interpreter (its own wall time and peak RSS, nothing cached in the process), alternating
naive, checkpoint, stage, then reversed, so drift of the shared machine hits all three:
  naive       AutoTokenizer + add_special_tokens/add_tokens for the R1 tokens, AutoModelForCausalLM.from_pretrained,
              resize_token_embeddings when the tokenizer outgrew the rows (padded to 64), untie + max positions for
              qwen-1.5b, GenerationConfig, save_pretrained of model and tokenizer;
  checkpoint  distill.patch.patch_checkpoint. In (a) only configs and tokenizer change, so the safetensors
              are hard-linked, never loaded: its time is the tokenizer's (~1.6 s for the 152k Qwen vocabulary,
              rebuilt through its JSON) whatever the model size, while naive's grows with the weights (15 GB
              for a 7B student, 140 GB for a 70B; try --hidden 1024). In (b) rows are added, so the model is
              loaded and re-saved like naive's, plus that tokenizer work: goal extra <= 2 s;
  stage       distill.patch.patch_stage: patch_checkpoint + the conformance check + a manifest with the sha256
              of every output (reported; the extra is the price of the check and the provenance).
Timing starts after the imports (torch/transformers: same for all). The source is read once before the first
pass, so every pass reads from the page cache; dirty pages are synced between passes, outside the timing.
The outputs are checked to hold the same tensors (names, shapes, dtypes) as the naive pass's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("naive", "checkpoint", "stage")
GOAL_LINKED = "weights hard-linked: distill's time and memory flat in model size (naive's grow with it)"
GOAL_REWRITE = "rows added, weights rewritten like naive: extra <= 2 s (tokenizer work), whatever the size"


def build_qwen_run(train_dir: Path, hidden: int, layers: int) -> Path:
    """train/final as distill.train saves it for qwen-1.5b (prepare_model ran before training), + manifest."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from distill.artifacts import finish_manifest, start_manifest
    from distill.patch import prepare_model, release_tokenizer
    from distill.vocab import base_tokenizer

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=151643,
        eos_token_id=151643,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = release_tokenizer(base_tokenizer("qwen2"), "qwen-1.5b")
    prepare_model(model, tokenizer, "qwen-1.5b")
    model.save_pretrained(train_dir / "final", safe_serialization=True)
    tokenizer.save_pretrained(train_dir / "final")
    finish_manifest(train_dir, start_manifest("train", "bench"))
    return train_dir


def build_smollm2_run(train_dir: Path) -> Path:
    """train/final = the base SmolLM2 folder unchanged (what `distill patch MODEL OUT` gets), + manifest."""
    from distill.artifacts import finish_manifest, start_manifest
    from distill.models import DONE_FILE, fetch_embedded

    shutil.copytree(
        fetch_embedded("smollm2-135m"), train_dir / "final", ignore=shutil.ignore_patterns(DONE_FILE)
    )
    finish_manifest(train_dir, start_manifest("train", "bench"))
    return train_dir


def naive_patch(src: Path, out: Path, student: str) -> None:
    """What one writes with plain transformers to give a checkpoint the R1-Distill tokens and configs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from distill.patch import ASSISTANT, BOS, END_THINK, EOS, THINK, USER, chat_template

    tok = AutoTokenizer.from_pretrained(src)
    tok.add_special_tokens({"bos_token": BOS, "eos_token": EOS, "pad_token": EOS})
    tok.add_tokens([USER, ASSISTANT, THINK, END_THINK])
    tok.chat_template = chat_template()
    model = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok), pad_to_multiple_of=64)
    if student == "qwen-1.5b":
        if model.config.tie_word_embeddings:
            model.config.tie_word_embeddings = False
            model.lm_head.weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
        model.config.max_position_embeddings = 131072
    bos, eos = tok.convert_tokens_to_ids([BOS, EOS])
    model.generation_config = GenerationConfig(
        bos_token_id=bos, eos_token_id=eos, do_sample=True, temperature=0.6, top_p=0.95
    )
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def child(kind: str, train_dir: Path, out: Path, student: str) -> None:
    """One timed pass in this fresh interpreter; prints {"seconds", "peak_rss_mb"} as JSON."""
    # transformers imports lazily: resolve what both sides use before the clock starts (~3 s on 2 cores)
    import transformers.models.llama.modeling_llama  # noqa: F401
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: F401

    from distill.config import recipe_from_dict
    from distill.patch import patch_checkpoint, patch_stage

    start = time.perf_counter()
    if kind == "naive":
        naive_patch(train_dir / "final", out, student)
    elif kind == "checkpoint":
        patch_checkpoint(train_dir / "final", out, student)
    else:
        patch_stage(recipe_from_dict({"name": "bench-patch", "student": student}), train_dir, out, force=True)
    seconds = time.perf_counter() - start
    # VmHWM, not ru_maxrss: ru_maxrss survives fork + exec and would report the parent's peak
    status = Path("/proc/self/status").read_text()
    peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak}))


def run_pass(kind: str, train_dir: Path, out: Path, student: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", kind, str(train_dir), str(out), student]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} pass failed:\n{proc.stderr[-3000:]}")
    os.sync()  # write-back of this pass's ~0.5 GB must not land in the next pass's timing
    return json.loads(proc.stdout.strip().splitlines()[-1])


def tensor_specs(folder: Path) -> dict[str, tuple]:
    from safetensors import safe_open

    specs = {}
    for shard in sorted(folder.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                sl = f.get_slice(name)
                specs[name] = (tuple(sl.get_shape()), sl.get_dtype())
    return specs


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def bench_case(label: str, train_dir: Path, student: str, rounds: int, tmp: Path, goal: str) -> None:
    for p in (train_dir / "final").iterdir():  # page cache: every pass reads the source from memory
        p.read_bytes()
    outs = {"naive": tmp / "naive", "checkpoint": tmp / "checkpoint", "stage": tmp / "stage"}
    runs: dict[str, list[dict]] = {k: [] for k in KINDS}
    for r in range(rounds):
        for kind in KINDS if r % 2 == 0 else tuple(reversed(KINDS)):
            runs[kind].append(run_pass(kind, train_dir, outs[kind], student))
    released = {"naive": outs["naive"], "checkpoint": outs["checkpoint"], "stage": outs["stage"] / "release"}
    specs = {k: tensor_specs(v) for k, v in released.items()}
    same = specs["naive"] == specs["checkpoint"] == specs["stage"]
    secs = {k: statistics.median(x["seconds"] for x in runs[k]) for k in KINDS}
    rss = {k: max(x["peak_rss_mb"] for x in runs[k]) for k in KINDS}
    print(
        f"{label}: student {student}, {folder_mb(train_dir / 'final'):.0f} MB in -> "
        f"{folder_mb(released['checkpoint']):.0f} MB out, median of {rounds} passes each"
    )
    for kind, what in [
        ("naive", "plain transformers (naive)"),
        ("checkpoint", "distill patch_checkpoint"),
        ("stage", "distill patch_stage (+check, manifest)"),
    ]:
        extra = secs[kind] - secs["naive"]
        ratio = "" if kind == "naive" else f"  -> {secs[kind] / secs['naive']:.2f}x naive ({extra:+.2f} s)"
        print(f"    {what:<40} {secs[kind]:6.2f} s, peak RSS {rss[kind]:6.0f} MB{ratio}")
    n = len(specs["naive"])
    print(f"    goal: {goal}")
    print(f"    same tensors (names, shapes, dtypes) in all three outputs: {same} ({n} tensors)")
    if not same:
        diff = {k: v for k, v in specs["checkpoint"].items() if specs["naive"].get(k) != v}
        print(f"    differ: {dict(list(diff.items())[:5])}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, train_dir, out, student = sys.argv[2:6]
        return child(kind, Path(train_dir), Path(out), student)
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="qwen,smollm2", help="comma-separated cases")
    parser.add_argument("--rounds", type=int, default=2, help="passes of each kind per case")
    parser.add_argument("--hidden", type=int, default=512, help="(a) hidden size of the random Qwen2")
    parser.add_argument("--layers", type=int, default=4, help="(a) layers of the random Qwen2")
    args = parser.parse_args()
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-patch-") as tmp:
        tmp = Path(tmp)
        if "qwen" in only:
            start = time.perf_counter()
            train_dir = build_qwen_run(tmp / "qwen" / "train", args.hidden, args.layers)
            print(f"(built the Qwen2 run in {time.perf_counter() - start:.1f} s)")
            label = f"(a) qwen {args.layers} x {args.hidden}"
            bench_case(label, train_dir, "qwen-1.5b", args.rounds, tmp / "qwen", GOAL_LINKED)
            shutil.rmtree(tmp / "qwen")
        if "smollm2" in only:
            train_dir = build_smollm2_run(tmp / "smollm2" / "train")
            bench_case(
                "(b) smollm2 base", train_dir, "smollm2-135m", args.rounds, tmp / "smollm2", GOAL_REWRITE
            )


if __name__ == "__main__":
    main()
