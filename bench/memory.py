"""Measured CPU train peaks per rank against distill.memory's plan (README "Does it fit?"), fp32, a few steps: what
malloc held (glibc mallinfo2, where PyTorch's CPU allocator draws from) sampled every 2 ms over the step loop, above
what it held just before the weights load, plus weights trained in place in the mmapped checkpoint.

    flock /tmp/distill-heavy.lock .venv/bin/python bench/memory.py smollm2-135m smollm2-135m 512 1 1 3
    .venv/bin/python bench/memory.py smollm2-135m smollm2-135m 512 0 1 3 fsdp2 2    # 2 gloo ranks, FSDP2
    .venv/bin/python bench/memory.py runs/demo-cpu/patch/release smollm2-135m 512 1 1 3 zero3 2   # release layout
    # MODEL STUDENT MAX_LENGTH GC MICRO STEPS [SHARDING RANKS]

Prints one JSON line per rank: measured GiB (and RSS above the RSS before the load, for comparison), planned GiB,
their ratio, the plan's parts. Sharded runs go through tests/sharded_worker.py under torchrun (Accelerate switched
to FSDP2 or ZeRO-3 as in tests/test_sharded.py). The data is test_train's synthetic R1-style traces (64 rows, long
enough to fill every bin).
"""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def sharded(recipe, src: Path, root: Path, mode: str, ranks: int) -> list[dict]:
    """The run under torchrun on `ranks` gloo ranks, launched as tests/test_sharded.py launches it
    (tests/sharded_worker.py: Accelerate switched to FSDP2 or ZeRO-3, the step loop probed): each rank's facts."""
    from test_sharded import launch, rank_facts

    done = launch(root, [(recipe, src, root / "train")], ranks=ranks, mode=mode)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return rank_facts(root / "train", ranks)


def single(recipe, src: Path, root: Path) -> list[dict]:
    """The run in this process, its step loop probed as the sharded ranks' are."""
    from sharded_worker import BASELINE, probe_steps

    from distill.train import loop

    probe_steps()
    loop.train(recipe, src, root / "train", force=True)
    return [dict(BASELINE)]


def main() -> None:
    from sharded_worker import measured_peak
    from test_train import make_curate, trace_rows

    from distill import memory
    from distill.config import recipe_from_dict
    from distill.train import loop

    model, student, max_length, gc, micro, steps = sys.argv[1:7]
    sharding, ranks = (sys.argv[7], int(sys.argv[8])) if len(sys.argv) > 8 else ("none", 1)
    max_length, gc, micro, steps = int(max_length), gc == "1", int(micro), int(steps)
    root = Path(tempfile.mkdtemp(prefix="distill-memory-"))
    atexit.register(shutil.rmtree, root, True)  # a run leaves 0.5-0.6 GiB (final weights, checkpoint)
    src = make_curate(root / "curate", trace_rows(64, steps=60))
    train = {"model": model, "max_length": max_length, "max_steps": steps, "grad_accum": 1, "micro_batch_size": micro,
             "lr": 1e-4, "warmup_ratio": 0.0, "save_every": 1000, "gradient_checkpointing": gc,
             "dtype": "float32"}  # fmt: skip
    recipe = recipe_from_dict({"name": "memory", "student": student, "train": train})
    cfg = loop.effective_config(recipe.train, loop.get_student(student))
    ranks_facts = sharded(recipe, src, root, sharding, ranks) if ranks > 1 else single(recipe, src, root)
    shape = memory.as_trained(memory.local_shape(loop.resolve_model(model)), student)
    t = memory.TrainShape(max_length, micro, gc, cfg.loss_chunk_tokens)
    parts = memory.train_parts(shape, t, memory.Launch(sharding, ranks, 1, False, "cpu"))
    planned = memory.train_total(parts)
    for rank, f in enumerate(ranks_facts):
        alloc = measured_peak(f)
        rss = (f["loop_peak_rss_mib"] - f["rss_before_load_mib"]) * 2**20
        result = {"model": Path(model).name, "sharding": sharding, "rank": rank, "max_length": max_length,
                  "checkpointing": gc, "micro": micro, "measured_gib": round(alloc / 2**30, 3),
                  "measured_rss_gib": round(rss / 2**30, 3),
                  "planned_gib": round(planned / 2**30, 3),
                  "planned/measured": round(planned / alloc, 3),
                  "parts_gib": {k: round(v / 2**30, 4) for k, v in parts.items()}}  # fmt: skip
        if "alloc_after_prepare_bytes" in f:  # sharded ranks: the states after prepare, before any step
            result["after_prepare_gib"] = round(
                (f["alloc_after_prepare_bytes"] - f["alloc_before_model_bytes"]) / 2**30, 3
            )
        print(json.dumps(result))


if __name__ == "__main__":
    main()
