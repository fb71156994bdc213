"""Upload throughput of `distill push` against raw `HfApi.upload_folder` of the same release, same loopback Hub:

    flock /tmp/distill-heavy.lock .venv/bin/python bench/push.py            # ~1 min on 2 CPU cores

The run dir holds patch/release (a random Qwen2 with the real 152k vocabulary, --hidden x 4 layers, patched by
distill.patch.patch_checkpoint for qwen-1.5b: ~680 MB at hidden 512) and the finished stages' manifests. The Hub
is tests/test_push.py's FakeHub on 127.0.0.1 (create_repo, preupload, LFS batch + basic PUT, commit), served
from a thread of this process; it keeps the uploaded bytes in memory and is emptied between passes. Xet is off
(it needs a CAS server) so both clients speak plain LFS, as the tests do.
  naive    HfApi(endpoint, token).create_repo(private) + upload_folder(release): one commit;
  distill  distill.push.push_stage: the model card rendered from the manifests, create_repo, one commit of the
           release files + README.md, the push manifest.
Passes alternate (naive, distill, distill, naive, ...); MB/s = bytes committed / wall seconds (the weights
are hashed for LFS, then PUT over loopback, by the same huggingface_hub code in both). Goal: distill/naive
>= 0.95. Both commits must hold the same files with the same LFS oids (distill's adds README.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPO = "bench-org/R1-Distill-bench"


def load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_run(run: Path, hidden: int) -> Path:
    """run/patch/release as the patch stage leaves it, plus finished generate/curate/train/patch manifests."""
    from distill.artifacts import finish_manifest, start_manifest
    from distill.patch import patch_checkpoint

    bench_patch = load_module("bench_patch", ROOT / "bench" / "patch.py")
    bench_patch.build_qwen_run(run / "train", hidden, 4)
    patch_checkpoint(run / "train" / "final", run / "patch" / "release", "qwen-1.5b")
    for stage in ("generate", "curate", "patch"):
        finish_manifest(run / stage, start_manifest(stage, "bench"))
    return run


def start_hub():
    """tests/test_push.py's FakeHub on a free port; HF_HUB_OFFLINE off and Xet off, as its fixture does."""
    import huggingface_hub.constants as hf_constants

    sys.path.insert(0, str(ROOT))
    from tests.test_push import FAKE_TOKEN, FakeHub

    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hf_constants.HF_HUB_OFFLINE = False
    hf_constants.HF_HUB_DISABLE_XET = True
    return server, FakeHub, FAKE_TOKEN


def reset(hub) -> None:
    hub.requests, hub.lfs, hub.commits = [], {}, {}


def committed(hub) -> dict[str, str]:
    """path -> LFS oid (or "regular") of the one commit the pass made."""
    (lines,) = hub.commits.values()
    return {
        line["value"]["path"]: line["value"].get("oid", "regular")
        for line in lines
        if line["key"] in ("file", "lfsFile")
    }


def naive_pass(release: Path, endpoint: str, token: str) -> float:
    from huggingface_hub import HfApi

    start = time.perf_counter()
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(REPO, private=True, exist_ok=True)
    api.upload_folder(folder_path=str(release), repo_id=REPO, commit_message="upload release")
    return time.perf_counter() - start


def distill_pass(run: Path, out: Path) -> float:
    from distill.config import recipe_from_dict
    from distill.push import push_stage

    recipe = recipe_from_dict(
        {"name": "bench-push", "student": "qwen-1.5b", "run_dir": str(run), "push": {"repo": REPO}}
    )
    start = time.perf_counter()
    push_stage(recipe, run, out, force=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hidden", type=int, default=512, help="hidden size of the random Qwen2 release")
    parser.add_argument("--rounds", type=int, default=5, help="pairs of (naive, distill) passes")
    args = parser.parse_args()

    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # both clients: no tqdm redraws in the timing
    server, hub, token = start_hub()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    os.environ["HF_ENDPOINT"], os.environ["HF_TOKEN"] = endpoint, token
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        run = build_run(tmp / "run", args.hidden)
        release = run / "patch" / "release"
        release_bytes = sum(p.stat().st_size for p in release.iterdir() if p.is_file())
        print(f"(built and patched the release in {time.perf_counter() - start:.1f} s)")
        times: dict[str, list[float]] = {"naive": [], "distill": []}
        files: dict[str, dict[str, str]] = {}
        card_bytes = 0
        for r in range(args.rounds):
            for kind in ("naive", "distill") if r % 2 == 0 else ("distill", "naive"):
                reset(hub)
                if kind == "naive":
                    times[kind].append(naive_pass(release, endpoint, token))
                else:
                    times[kind].append(distill_pass(run, tmp / "push"))
                    card_bytes = (tmp / "push" / "model_card.md").stat().st_size
                    assert json.loads((tmp / "push" / "manifest.json").read_text())["metrics"]["commits"]
                files[kind] = committed(hub)
        reset(hub)
        server.shutdown()
    sent = {"naive": release_bytes, "distill": release_bytes + card_bytes}
    rate = {k: sent[k] / 1e6 / statistics.median(v) for k, v in times.items()}
    print(
        f"release: {len(files['naive'])} files, {release_bytes / 1e6:.0f} MB "
        f"(hidden {args.hidden}); median of {args.rounds} passes each over the loopback FakeHub"
    )
    print(f"raw HfApi.upload_folder:  {statistics.median(times['naive']):6.2f} s = {rate['naive']:6.1f} MB/s")
    print(
        f"distill push_stage:       {statistics.median(times['distill']):6.2f} s = {rate['distill']:6.1f} MB/s"
    )
    print(f"ratio distill/naive: {rate['distill'] / rate['naive']:.3f}  (goal >= 0.95)")
    same = {p: o for p, o in files["distill"].items() if p != "README.md"} == files["naive"]
    print(f"same files and LFS oids in both commits (distill adds README.md): {same}")


if __name__ == "__main__":
    main()
