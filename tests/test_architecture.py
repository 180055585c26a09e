"""The package's structure (docs/design.md): layers that only import downwards,
no import cycles, no private names imported across modules, modules of at most
500 lines.  Read from the source with ``ast`` (imports inside functions count)."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "mlip"

#: Lowest first; a group imports only from its own or lower layers.
LAYERS = (
    {"mlip.precision", "mlip.files", "mlip.compilation_cache"},
    {"mlip.kernels"},
    {"mlip.model"},
    {"mlip.batch", "mlip.io", "mlip.extrapolation", "mlip.plots", "mlip.uncertainty"},
    {"mlip.n2p2", "mlip.calculator", "mlip.md", "mlip.training", "mlip.lammps"},
    {"mlip.ti", "mlip.analysis", "mlip.learn"},
    {"mlip.cli"},
)
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[tuple[str, str]]]:
    """Per module, the ``(module, name)`` pairs it imports from mlip (``name`` empty
    for ``import mlip.x``), leaving out ``if TYPE_CHECKING:`` blocks."""
    found: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        typing_only = {id(node) for block in tree.body if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test) for node in ast.walk(block)}
        module = _module_name(path)
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mlip":
                found[module] |= {(node.module, alias.name) for alias in node.names}
            elif isinstance(node, ast.Import):
                found[module] |= {(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "mlip"}
    return found


def _group(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _layer(module: str) -> int:
    group = _group(module)
    for number, layer in enumerate(LAYERS):
        if group in layer:
            return number
    raise AssertionError(f"{module} belongs to no layer of tests/test_architecture.py: add {group} to LAYERS")


def test_layers_import_only_downwards():
    climbs = []
    for module, targets in _imports().items():
        if module == "mlip":
            continue
        for target, _ in targets:
            if target == "mlip" or _group(target) == _group(module):
                continue
            if _layer(target) >= _layer(module):
                climbs.append(f"{module} imports {target}")
    assert not climbs, climbs


def test_no_import_cycles():
    graph = {module: {target for target, _ in targets} for module, targets in _imports().items()}
    cycles, state = [], {}

    def visit(module, path):
        state[module] = "open"
        for target in graph.get(module, ()):
            if state.get(target) == "open":
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_no_private_names_across_modules():
    reach_ins = [f"{module} imports {name} from {target}" for module, targets in _imports().items()
                 for target, name in targets if name.startswith("_") and target != module]
    assert not reach_ins, reach_ins


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_examples_and_benchmarks_use_public_names_only():
    """Scripts outside the package import no private mlip name (what they need is API)."""
    root = PACKAGE.parent
    reach_ins = []
    for folder in ("examples", "benchmarks"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mlip":
                    reach_ins += [f"{path.relative_to(root)} imports {alias.name} from {node.module}"
                                  for alias in node.names if alias.name.startswith("_")]
    assert not reach_ins, reach_ins
