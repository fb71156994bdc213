"""Run artifacts: atomic shards, manifests written last, skip/force logic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from distill.artifacts import (
    MANIFEST,
    atomic_dir,
    atomic_write_text,
    finish_manifest,
    manifest_hash,
    model_identity,
    prepare_stage,
    read_manifest,
    read_parquet,
    write_parquet,
)
from distill.errors import DistillError


def test_parquet_round_trip_and_manifest_entry(tmp_path):
    rows = [{"prompt_id": "a", "flags": ["truncated"], "n": 1}, {"prompt_id": "b", "flags": [], "n": 2}]
    entry = write_parquet(rows, tmp_path / "part-00000.parquet")
    assert entry["rows"] == 2 and len(entry["sha256"]) == 64
    assert read_parquet(tmp_path / "part-00000.parquet") == rows
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_corrupt_shard_error_names_the_file(tmp_path):
    bad = tmp_path / "part-00003.parquet"
    bad.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DistillError, match="part-00003.parquet"):
        read_parquet(bad)


def test_stage_skips_when_config_and_inputs_match_and_force_reruns(tmp_path):
    out = tmp_path / "curate"
    m = prepare_stage("curate", out, "cfg1", {"generate": "h1"})
    assert m is not None
    m.rows_out = 7
    finish_manifest(out, m)
    assert prepare_stage("curate", out, "cfg1", {"generate": "h1"}) is None  # fresh: skip
    assert read_manifest(out).rows_out == 7
    assert prepare_stage("curate", out, "cfg2", {"generate": "h1"}) is not None  # config changed
    assert not (out / MANIFEST).exists()  # the stale manifest goes first
    finish_manifest(out, prepare_stage("curate", out, "cfg1", {"generate": "h1"}))
    assert prepare_stage("curate", out, "cfg1", {"generate": "h2"}) is not None  # input changed
    finish_manifest(out, prepare_stage("curate", out, "cfg1", {"generate": "h1"}))
    assert prepare_stage("curate", out, "cfg1", {"generate": "h1"}, force=True) is not None


def test_manifest_records_versions_and_duration(tmp_path):
    m = finish_manifest(tmp_path, prepare_stage("generate", tmp_path, "c", {}))
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["versions"]["torch"] and data["seconds"] >= 0 and data["started_at"]
    assert manifest_hash(tmp_path) and m.stage == "generate"


def test_crash_mid_write_leaves_no_manifest_and_no_partial_file(tmp_path):
    """A process killed while writing a shard leaves neither the shard nor a manifest."""
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import distill.artifacts as a
        out = Path({str(tmp_path)!r})
        m = a.prepare_stage("generate", out, "c", {{}})
        real_replace = os.replace
        def die(*args):  # the kill lands after the bytes are written, before the rename
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace = die
        a.write_parquet([{{"x": 1}}], out / "part-00000.parquet")
        a.finish_manifest(out, m)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9
    assert not (tmp_path / MANIFEST).exists()
    assert not (tmp_path / "part-00000.parquet").exists()
    atomic_write_text(tmp_path / "x.txt", "ok")
    assert (tmp_path / "x.txt").read_text() == "ok"
    assert os.listdir(tmp_path).count("x.txt") == 1


def test_atomic_files_get_the_mode_open_gives(tmp_path):
    """Atomic writes go through mkstemp (0600); outputs must be readable as a plain open() would make them."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")
    write_parquet([{"a": 1}], tmp_path / "part-00000.parquet")
    mode = plain.stat().st_mode & 0o777
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "part-00000.parquet").stat().st_mode & 0o777 == mode


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_atomic_dir_replaces_an_old_folder_whole(tmp_path):
    target = tmp_path / "final"
    (target / "sub").mkdir(parents=True)
    (target / "old.txt").write_text("old")
    (target / "sub" / "w.bin").write_text("old weights")
    with atomic_dir(target) as staged:
        assert staged.parent == tmp_path and staged != target and not list(staged.iterdir())
        (staged / "sub").mkdir()
        (staged / "sub" / "w.bin").write_text("new weights")
        (staged / "config.json").write_text("{}")
        assert _tree(target) == {
            "old.txt": "old",
            "sub/w.bin": "old weights",
        }  # readers still see the old one
    assert _tree(target) == {"sub/w.bin": "new weights", "config.json": "{}"}  # nothing of the old one stays
    assert os.listdir(tmp_path) == ["final"]  # neither the temp nor the moved-aside folder is left


def test_atomic_dir_exception_keeps_the_old_folder_and_leaves_no_temp(tmp_path):
    target = tmp_path / "final"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_dir(target) as staged:
        (staged / "a.txt").write_text("half")
        raise RuntimeError("disk full")
    assert _tree(target) == {"a.txt": "old"}
    assert os.listdir(tmp_path) == ["final"]


def test_atomic_dir_new_folder_appears_only_when_complete(tmp_path):
    target = tmp_path / "deep" / "release"  # missing parents are made
    with atomic_dir(target) as staged:
        for i in range(3):
            (staged / f"part-{i}").write_text(str(i))
            assert not target.exists()
    assert _tree(target) == {"part-0": "0", "part-1": "1", "part-2": "2"}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # mkdir's mode, not mkdtemp's 0700
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "never") as staged:
        (staged / "x").write_text("x")
        raise KeyboardInterrupt  # any exception, not only Exception
    assert sorted(os.listdir(tmp_path)) == ["deep", "plain"]


def test_atomic_dir_failed_rename_restores_the_old_folder(tmp_path, monkeypatch):
    """The old folder is moved aside before the new one is renamed in; if that rename fails it comes back."""
    target = tmp_path / "final"
    target.mkdir()
    (target / "a.txt").write_text("old")
    real_replace = os.replace

    def fail_new(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_new)
    with pytest.raises(OSError, match="rename failed"), atomic_dir(target) as staged:
        (staged / "a.txt").write_text("new")
    assert _tree(target) == {"a.txt": "old"}
    assert os.listdir(tmp_path) == ["final"]


def test_atomic_dir_killed_process_never_exposes_a_partial_folder(tmp_path):
    """SIGKILL while filling: the old folder is intact (the temp sibling is the only trace; it is hidden)."""
    target = tmp_path / "final"
    target.mkdir()
    (target / "a.txt").write_text("old")
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from distill.artifacts import atomic_dir
        with atomic_dir(Path({str(target)!r})) as staged:
            (staged / "a.txt").write_text("half")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert subprocess.run([sys.executable, "-c", script], capture_output=True).returncode == -9
    assert _tree(target) == {"a.txt": "old"}
    assert [p for p in os.listdir(tmp_path) if not p.startswith(".")] == ["final"]


def test_manifest_config_round_trips_and_is_absent_when_unset(tmp_path):
    """A stage may record the effective config its config_hash pins; stages that do not keep their old bytes."""
    plain = finish_manifest(tmp_path / "a", prepare_stage("curate", tmp_path / "a", "c", {}))
    assert "config" not in json.loads((tmp_path / "a" / MANIFEST).read_text())
    assert read_manifest(tmp_path / "a").config is None and plain.config is None
    m = prepare_stage("train", tmp_path / "b", "c", {})
    m.config = {"lr": 2e-5, "lora": None}
    finish_manifest(tmp_path / "b", m)
    assert read_manifest(tmp_path / "b").config == {"lr": 2e-5, "lora": None}


def test_manifest_git_sha_is_a_commit_of_the_checkout_and_none_outside_one(tmp_path, monkeypatch):
    """The manifest names the commit of the code that wrote it (an ancestor of HEAD: others may commit
    meanwhile); a copy of distill outside any git checkout records null, not an error or a stale sha."""
    import distill.artifacts as artifacts

    finish_manifest(tmp_path / "s", prepare_stage("curate", tmp_path / "s", "c", {}))
    sha = json.loads((tmp_path / "s" / MANIFEST).read_text())["git_sha"]
    assert len(sha) == 40 and int(sha, 16) >= 0
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    check = ["git", "merge-base", "--is-ancestor", sha, "HEAD"]
    assert subprocess.run(check, cwd=root, capture_output=True).returncode == 0
    monkeypatch.setattr(artifacts, "__file__", str(tmp_path / "copy" / "distill" / "artifacts.py"))
    (tmp_path / "copy" / "distill").mkdir(parents=True)
    assert artifacts.git_sha() is None
    finish_manifest(tmp_path / "t", prepare_stage("curate", tmp_path / "t", "c", {}))
    assert json.loads((tmp_path / "t" / MANIFEST).read_text())["git_sha"] is None


def test_a_model_folder_is_identified_by_its_stage_manifest_or_else_its_files(tmp_path):
    """eval and generate key a model folder by this: retrained weights at the same path must not look done."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"old weights")
    first = model_identity(model)
    assert model_identity(model) == first  # nothing changed: the stages that read it stay skipped
    fresh = tmp_path / "new.safetensors"
    fresh.write_bytes(b"new weights")  # same size, as a retrained checkpoint of one architecture is
    os.utime(fresh, ns=(1, 1))
    os.replace(fresh, model / "model.safetensors")
    assert model_identity(model) != first
    stage = tmp_path / "train"
    (stage / "final").mkdir(parents=True)
    finish_manifest(stage, prepare_stage("train", stage, "cfg", {}))
    assert model_identity(stage / "final") == model_identity(stage) == manifest_hash(stage)
