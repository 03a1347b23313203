"""The import graph, checked from the source: arrows point one way, no cycle, no private names.

The layers, low to high: ``edge_app`` ← ``train`` ← ``compress`` ← ``benchmarks`` ←
``fracture_edge``. A module may import its own layer and lower ones only (lazy imports inside
functions included), and form no cycle. No module imports another module's
``_private`` name. Run alone: ``python -m pytest tests/test_architecture.py -q``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("edge_app", "train", "compress", "benchmarks", "fracture_edge")


def _modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


MODULES = _modules()


def _imports(path: Path, top_level_only: bool) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported from it, line) for each import statement."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return found


def _layer(module: str) -> int | None:
    root = module.split(".")[0]
    return LAYERS.index(root) if root in LAYERS else None


def _project_module(name: str) -> str | None:
    """The project module an import refers to (a submodule import may name a package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_arrows_point_one_way():
    violations = []
    for module, path in MODULES.items():
        for imported, _, line in _imports(path, top_level_only=False):
            target = _layer(imported)
            if target is not None and target > _layer(module):
                violations.append(f"{path.relative_to(REPO)}:{line} imports {imported}")
    assert not violations, "imports that point up a layer:\n" + "\n".join(violations)


def test_no_module_imports_another_modules_private_names():
    violations = []
    for module, path in MODULES.items():
        for imported, names, line in _imports(path, top_level_only=False):
            if _layer(imported) is None or imported == module:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                violations.append(
                    f"{path.relative_to(REPO)}:{line} imports {private} from {imported}"
                )
    assert not violations, "\n".join(violations)


def test_imports_have_no_cycle():
    """Lazy imports inside functions count too: a cycle is a tangle whether or not it bites at
    import time."""
    graph = {
        module: {
            target
            for imported, names, _ in _imports(path, top_level_only=False)
            for candidate in [imported, *(f"{imported}.{name}" for name in names)]
            if (target := _project_module(candidate)) and target != module
        }
        for module, path in MODULES.items()
    }
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for child in sorted(graph.get(node, ())):
            if state.get(child) == "open":
                cycles.append(" → ".join(stack[stack.index(child) :] + [child]))
            elif child not in state:
                visit(child, stack + [child])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("package", ["edge_app"])
def test_the_runtime_never_imports_torch_or_tensorflow(package):
    heavy = {"torch", "tensorflow", "torchvision", "timm", "onnx", "onnx2tf"}
    violations = [
        f"{path.relative_to(REPO)}:{line} imports {imported}"
        for module, path in MODULES.items()
        if module.split(".")[0] == package
        for imported, _, line in _imports(path, top_level_only=False)
        if imported.split(".")[0] in heavy
    ]
    assert not violations, "\n".join(violations)


def test_artifact_formats_are_named_in_one_module():
    """Card and report format strings ("fracture-edge-…") are defined in edge_app/card.py only."""
    import re

    pattern = re.compile(r"[\"']fracture-edge-(bundle|checkpoint|probe-teacher|bench)[\"']")
    holders = sorted(
        str(path.relative_to(REPO)) for path in MODULES.values() if pattern.search(path.read_text())
    )
    assert holders == ["edge_app/card.py"], holders
