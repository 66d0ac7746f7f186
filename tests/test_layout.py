"""The package's layout: layers by job, no import cycle, modules small enough to read, the map in docs/development.md true."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Set

import adapterkit

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "adapterkit"

# Lowest first: a module may import from its own layer or below, never from above.
LAYERS = [
    [
        "adapterkit.atomic",
        "adapterkit.errors",
        "adapterkit.logs",
        "adapterkit.metrics",
        "adapterkit.records",
    ],  # atomic writes, errors, messages, records; metrics
    ["adapterkit.data"],  # files, datasets, documents, questions
    [
        "adapterkit.embeddings",
        "adapterkit.cache",
        "adapterkit.cluster",
    ],  # base models, every vector they ever made, and where they make them
    ["adapterkit.adapters", "adapterkit.cross_model"],  # the trainable query maps, and maps fitted between two models
    ["adapterkit.memory"],  # corpus memories
    ["adapterkit.query_vectors", "adapterkit.adapter_embedding"],  # serving: how a query vector is made
    ["adapterkit.training"],
    ["adapterkit.evaluation"],
    ["adapterkit.stores"],
    ["adapterkit.notebook"],
    ["adapterkit.pipeline"],  # your documents to a fitted, evaluated model folder
    ["adapterkit.cli"],  # the adapterkit command
]
MAX_LINES = 560  # lines as `ruff format` writes them (about 450 of the denser hand-wrapped style before it)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Set[str]:
    """adapterkit modules a file imports, at any depth (function-level imports count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("adapterkit"):
            found.add(node.module)
            for alias in node.names:  # `from adapterkit.notebook import plots` imports a module
                if (PACKAGE / Path(*node.module.split(".")[1:]) / f"{alias.name}.py").is_file():
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("adapterkit"))
    return found


def layer_of(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in layer):
            return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and the map in docs/development.md)")


def graph() -> Dict[str, Set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py") if module_name(p) != "adapterkit"}
    return {m: {i for i in imports_of(p) if i in modules and i != m} for m, p in modules.items()}


def test_no_module_imports_from_a_higher_layer():
    wrong = [
        f"{m} (layer {layer_of(m)}) imports {i} (layer {layer_of(i)})"
        for m, deps in graph().items()
        for i in deps
        if layer_of(i) > layer_of(m)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    g = graph()
    state: Dict[str, int] = {}

    def visit(m: str, path: list) -> None:
        state[m] = 1
        for d in g[m]:
            assert state.get(d) != 1, "import cycle: " + " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = 2

    for m in g:
        if m not in state:
            visit(m, [])


def test_modules_are_small_enough_to_read():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_the_layout_map_names_every_module_and_only_those():
    """Rows of docs/development.md's table: | `folder/` | `a.py`, `b.py` | ... | (no folder: the package's top)."""
    section = (ROOT / "docs" / "development.md").read_text().split("## Where things are", 1)[1].split("\n## ", 1)[0]
    named, folders = set(), set()
    for row in section.splitlines():
        folder = re.findall(r"^\| `([a-z_]+)/`", row)
        folders.update(folder)
        named.update(f"{folder[0]}/{name}" if folder else name for name in re.findall(r"`([a-z_]+\.py)`", row))
    on_disk = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert named == on_disk, f"missing from docs/development.md: {sorted(on_disk - named)}; not on disk: {sorted(named - on_disk)}"
    assert folders == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}


def test_a_small_public_api_and_one_error_base():
    import importlib

    assert len(adapterkit.__all__) <= 40, sorted(adapterkit.__all__)
    for name in adapterkit.__all__:
        assert getattr(adapterkit, name) is not None, name
    errors = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                getattr(b, "id", "").endswith(("Error", "Exception")) or getattr(b, "id", "") in {"ValueError", "RuntimeError"}
                for b in node.bases
            ):
                errors[node.name] = module_name(path)
    assert len(errors) >= 14, errors  # the scan found the package's error classes
    errors.pop("AdapterkitError")
    for name, module in errors.items():
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, adapterkit.AdapterkitError), f"{module}.{name} is not an AdapterkitError"
        assert issubclass(cls, (ValueError, RuntimeError)), f"{module}.{name} keeps no builtin kind"
    assert re.fullmatch(r"\d+\.\d+\.\d+", adapterkit.__version__)
