"""The package's layers: every module imports in a fresh interpreter, the import graph has no cycle, stages are
siblings over the shared layer (only pipeline.py and cli/ sit on top), and `import distill` loads no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("generate", "curate", "train", "patch", "eval", "push")
TOP = ("distill.pipeline", "distill.plan", "cli")  # may import anything; nothing below may import them
HEAVY = ("torch", "vllm", "transformers")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    """Every module of distill/ and cli/ by dotted name."""
    files = sorted([*(ROOT / "distill").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])
    return {module_name(p): p for p in files}


def imported_names(path: Path, name: str) -> set[str]:
    """Dotted names a module imports, at module level and inside functions; `from a import b` gives a.b too
    (b may be a module), relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (an import of a.b.c resolved to the longest known module)."""
    modules = package_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(path, name):
            parts = imported.split(".")
            known = [".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules]
            if known and known[0] != name:
                targets.add(known[0])
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each a cycle or a knot of them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def layer(module: str) -> str:
    """'top' (pipeline, cli), a stage's name, or 'shared' for everything else in distill/."""
    if any(module == t or module.startswith(t + ".") for t in TOP):
        return "top"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "shared"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Edges that break stages-are-siblings: a stage importing another stage, anything below importing the top,
    the shared layer importing a stage."""
    bad = []
    for src, targets in sorted(graph.items()):
        for dst in sorted(targets):
            a, b = layer(src), layer(dst)
            if a != "top" and a != b and b != "shared":
                bad.append(f"{src} ({a}) -> {dst} ({b})")
    return bad


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(package_modules())
    assert "distill.pipeline" in names and "cli.main" in names and len(names) > 30
    out = run_python(f"import importlib\nfor n in {names!r}:\n    importlib.import_module(n)\nprint('ok')")
    assert out.strip() == "ok"


def test_import_graph_has_no_cycle():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (module-level or in functions): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_stages_import_only_the_shared_layer():
    bad = layer_violations(import_graph())
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_pipeline_dispatches_through_a_dict_of_functions():
    from distill import pipeline

    assert list(pipeline.STAGE_FNS) == pipeline.STAGES == list(STAGES)
    assert all(callable(fn) for fn in pipeline.STAGE_FNS.values())
    assert "importlib" not in (ROOT / "distill" / "pipeline.py").read_text()


@pytest.mark.parametrize("module", ["distill", "distill.pipeline", "cli.main"])
def test_import_loads_no_torch_vllm_or_transformers(module):
    """`import distill` and `distill --help` stay instant: the heavy libraries load inside the functions."""
    loaded = run_python(f"import sys, {module}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert loaded.strip() == "[]", f"import {module} loaded {loaded.strip()}"


# The checks above must be able to fail: the graph helpers on small made-up graphs.
@pytest.mark.parametrize(
    "graph, cycles",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),  # a <-> b
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}}, [["a", "b", "c"]]),  # a -> b -> c -> a
    ],
)
def test_find_cycles(graph, cycles):
    assert find_cycles(graph) == cycles


def test_layer_violations_on_a_made_up_graph():
    graph = {
        "distill.train.loop": {"distill.patch", "distill.pipeline", "distill.train.loss", "distill.config"},
        "distill.eval.run": {"distill.graders.math", "distill.generate.run"},
        "distill.release": {"distill.patch"},
        "distill.pipeline": {"distill.train.loop", "distill.push"},
        "cli.main": {"distill.pipeline", "distill.patch"},
    }
    assert layer_violations(graph) == [
        "distill.eval.run (eval) -> distill.generate.run (generate)",
        "distill.release (shared) -> distill.patch (patch)",
        "distill.train.loop (train) -> distill.patch (patch)",
        "distill.train.loop (train) -> distill.pipeline (top)",
    ]


def test_imported_names_resolves_relative_and_function_level_imports(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("from . import sibling\nfrom .. import up\ndef f():\n    from distill.patch import x\n")
    assert imported_names(src, "distill.curate.mod") == {
        "distill.curate",
        "distill.curate.sibling",
        "distill",
        "distill.up",
        "distill.patch",
        "distill.patch.x",
    }
