"""The package's layering, written down once: which layer may import which.

The rules are shared/ARCHITECTURE.md's: dependencies point down the list of layers. The
sans-IO cores import nothing above them (only the building blocks they are made of); the
simulator and the runtime are two drivers of the same cores and never import each other;
the federation is a user of the cores, never a dependency of one; only the CLI sees all.

Imports are read from the source (every ``import`` statement, also the ones inside
functions, so a lazy import cannot hide a dependency), and a fresh interpreter checks what
importing a core really loads.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ruflo_consensus"

# Building blocks every layer may use: the canonical encoding and the state machine
# contract (with the CRDT-mergeable machines built on it).
FOUNDATION = {"canonical", "statemachine", "crdt_machines"}
# Peripheral building blocks: the wire codec, node identities, overlay graphs.
WIRE = {"codec", "identity", "topology"}

ALLOWED: dict[str, set[str]] = {
    "canonical": set(),
    "statemachine": set(),
    "crdt_machines": {"statemachine"},
    "core": set(FOUNDATION),
    "codec": FOUNDATION | {"core"},
    "identity": set(FOUNDATION),
    "topology": set(FOUNDATION),
    "storage": FOUNDATION | {"core"},
    "check": FOUNDATION | {"core"},
    "sim": FOUNDATION | WIRE | {"core", "storage", "check"},
    "runtime": FOUNDATION | WIRE | {"core", "storage", "check"},
    "federation": FOUNDATION | WIRE | {"core", "storage", "check", "sim", "runtime"},
    "testing": FOUNDATION | WIRE | {"core", "storage", "check", "sim", "runtime", "federation"},
    "cli": FOUNDATION
    | WIRE
    | {"core", "storage", "check", "sim", "runtime", "federation", "testing"},
    "__init__": set(),
}
# The package's __init__ imports nothing, so every layer may import it (``__version__``).
for _allowed in ALLOWED.values():
    _allowed.add("__init__")


def _module_name(path: Path) -> tuple[str, str]:
    """``(module, package)`` of a source file, dotted, relative to the repository."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        module = ".".join(parts[:-1])
        return module, module
    module = ".".join(parts)
    return module, ".".join(parts[:-1])


def _imports(path: Path) -> set[str]:
    """Every ``ruflo_consensus`` module ``path`` imports, relative imports resolved."""
    return _imports_in(path.read_text(encoding="utf-8"), _module_name(path)[1])


def _imports_in(source: str, package: str) -> set[str]:
    """Every ``ruflo_consensus`` module ``source`` (a module of ``package``) imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found.add(target)
            elif node.module:
                target = node.module
                found.add(target)
            else:
                continue
            # from x import a, b: each name may itself be a module
            found.update(
                f"{target}.{alias.name}"
                for alias in node.names
                if _is_module(f"{target}.{alias.name}")
            )
    return {name for name in found if name.split(".")[0] == "ruflo_consensus"}


def _is_module(name: str) -> bool:
    """True when ``name`` is a module or package of this source tree."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _edges() -> list[tuple[str, str, str]]:
    """``(module, imported module, why)`` for every import that crosses a layer."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module, _ = _module_name(path)
        for imported in sorted(_imports(path)):
            if _layer(imported) != _layer(module):
                edges.append((module, imported, f"{path.relative_to(PACKAGE.parent)}"))
    return edges


def test_every_layer_of_the_package_has_a_rule() -> None:
    layers = {_layer(_module_name(p)[0]) for p in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED), f"add a layering rule for {sorted(layers - set(ALLOWED))}"


def test_the_import_parser_sees_relative_lazy_and_absolute_imports() -> None:
    # The rules below are only as good as the parser: it must see all three forms.
    source = (
        "from ..federation import machine\n"
        "import ruflo_consensus.sim.engine\n"
        "def f():\n    from .. import runtime\n    from .raft import RaftCore\n"
    )
    found = _imports_in(source, "ruflo_consensus.core")
    assert {
        "ruflo_consensus.federation",
        "ruflo_consensus.federation.machine",
        "ruflo_consensus.sim.engine",
        "ruflo_consensus.runtime",
        "ruflo_consensus.core.raft",
    } <= found
    assert "numpy" not in found


def test_every_import_follows_the_layering() -> None:
    broken = [
        f"{why}: {module} ({_layer(module)}) imports {imported} ({_layer(imported)})"
        for module, imported, why in _edges()
        if _layer(imported) not in ALLOWED.get(_layer(module), set())
    ]
    assert not broken, "imports against shared/ARCHITECTURE.md's layering:\n" + "\n".join(broken)


def test_simulator_and_runtime_never_import_each_other() -> None:
    crossing = [(m, i) for m, i, _ in _edges() if {_layer(m), _layer(i)} == {"sim", "runtime"}]
    assert crossing == []


def _loaded_by(statement: str) -> list[str]:
    probe = f"import sys\n{statement}\nimport json\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
    ).stdout
    loaded: list[str] = json.loads(out)
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import ruflo_consensus.core.pbft",
        "import ruflo_consensus.core",
        "from ruflo_consensus.core import RaftCore",
    ],
)
def test_importing_a_core_loads_no_federation_numpy_or_annoy(statement: str) -> None:
    loaded = _loaded_by(statement)
    heavy = [
        name
        for name in loaded
        if name.startswith(("ruflo_consensus.federation", "ruflo_consensus.sim"))
        or name.split(".")[0] in {"numpy", "annoy", "trio"}
    ]
    assert heavy == [], f"{statement} loads {heavy}"
