"""Measured CPU train peaks against distill.memory's plan (README "Does it fit?"): one process, fp32, a few steps;
the peak RSS over the step loop (sampled every 5 ms) above the RSS just before the weights load.

    flock /tmp/distill-heavy.lock .venv/bin/python bench/memory.py smollm2-135m smollm2-135m 512 1 1 3
    .venv/bin/python bench/memory.py PATH/tiny-qwen2 qwen-1.5b 512 0 2 3    # MODEL STUDENT MAX_LENGTH GC MICRO STEPS

Prints one JSON line: measured and planned GiB, their ratio, the plan's parts. The data is test_train's synthetic
R1-style traces (64 rows, long enough to fill every bin).
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def main() -> None:
    from test_train import make_curate, trace_rows

    from distill import memory
    from distill.config import recipe_from_dict
    from distill.train import loop

    model, student, max_length, gc, micro, steps = sys.argv[1:7]
    max_length, gc, micro, steps = int(max_length), gc == "1", int(micro), int(steps)
    root = Path(tempfile.mkdtemp(prefix="distill-memory-"))
    src = make_curate(root / "curate", trace_rows(64, steps=60))
    state = {"base": 0, "peak": 0, "on": False}

    def sample() -> None:
        while True:
            if state["on"]:
                state["peak"] = max(state["peak"], rss())
            time.sleep(0.005)

    threading.Thread(target=sample, daemon=True).start()
    load, run_loop = loop.load_model, loop.loop

    def load_model(*args, **kwargs):
        state["base"] = rss()  # tokenizer and data in memory, no weights yet
        return load(*args, **kwargs)

    def measured_loop(run):
        state["on"] = True
        rows = run_loop(run)
        state["on"] = False
        return rows

    loop.load_model, loop.loop = load_model, measured_loop
    train = {"model": model, "max_length": max_length, "max_steps": steps, "grad_accum": 1, "micro_batch_size": micro,
             "lr": 1e-4, "warmup_ratio": 0.0, "save_every": 1000, "gradient_checkpointing": gc}  # fmt: skip
    recipe = recipe_from_dict({"name": "memory", "student": student, "train": train})
    cfg = loop.effective_config(recipe.train, loop.get_student(student))
    loop.train(recipe, src, root / "train", force=True)
    shape = memory.local_shape(loop.resolve_model(model))
    t = memory.TrainShape(max_length, micro, gc, cfg.loss_chunk_tokens)
    parts = memory.train_parts(shape, t, memory.Launch("none", 1, 1, False, "cpu"))
    planned, measured = memory.train_total(parts), state["peak"] - state["base"]
    result = {"model": Path(model).name, "max_length": max_length, "checkpointing": gc, "micro": micro,
              "measured_gib": round(measured / 2**30, 3), "planned_gib": round(planned / 2**30, 3),
              "planned/measured": round(planned / measured, 3),
              "parts_gib": {k: round(v / 2**30, 4) for k, v in parts.items()}}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
