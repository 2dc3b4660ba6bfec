"""Layers point one way: every import of every module, read with ``ast`` (nothing is imported or run).

* ``traffic/`` (the shared contracts) imports only the standard library,
  third-party packages and itself;
* each domain package (``field_firmware_stubs``, ``sensors``, ``controller``,
  ``simulation``, ``dashboards``) imports only itself and ``traffic``;
* ``app/`` (the composition root) may import anything; nothing imports ``app``
  except ``bench/``, ``scripts/`` and the tests.

Imports inside functions and under ``TYPE_CHECKING`` count too: a lazy
import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = "traffic"
DOMAIN = ("field_firmware_stubs", "sensors", "controller", "simulation", "dashboards")
ROOT_PACKAGE = "app"
PROJECT = (CONTRACTS, *DOMAIN, ROOT_PACKAGE, "bench", "tests", "scripts")


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``; relative imports resolve inside its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = path.relative_to(ROOT).parts[:-1]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                out.append((node.lineno, ".".join((*base, *([node.module] if node.module else [])))))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def allowed(package: str) -> set[str]:
    """The project packages ``package`` may import."""
    if package == CONTRACTS:
        return {CONTRACTS}
    if package in DOMAIN:
        return {package, CONTRACTS}
    return set(PROJECT)


def violations(root: Path = ROOT) -> list[str]:
    found = []
    for package in (CONTRACTS, *DOMAIN, ROOT_PACKAGE):
        for path in sorted((root / package).rglob("*.py")):
            for line, module in imports(path):
                top = module.split(".")[0]
                if top in PROJECT and top not in allowed(package):
                    found.append(f"{path.relative_to(root)}:{line}: {package} imports {module}")
    return found


def test_layers_point_one_way() -> None:
    found = violations()
    assert not found, "layer rule broken (see docs/architecture.md, 'Layers'):\n" + "\n".join(found)


@pytest.mark.parametrize(("package", "module", "ok"), [
    ("traffic", "controller.safety", False),      # contracts never import above them
    ("traffic", "app.services", False),
    ("controller", "simulation.network", False),  # domain packages do not import each other
    ("controller", "field_firmware_stubs.emulator", False),
    ("simulation", "controller.safety", False),
    ("sensors", "app.cli", False),
    ("controller", "traffic.plan", True),
    ("controller", "numpy", True),
    ("app", "controller.service", True),
])
def test_the_rule_itself(tmp_path: Path, package: str, module: str, ok: bool) -> None:
    """The checker catches what it must (a lazy import in a function) and lets the rest through."""
    for name in (CONTRACTS, *DOMAIN, ROOT_PACKAGE):
        (tmp_path / name).mkdir()
    (tmp_path / package / "mod.py").write_text(f"def f():\n    import {module}\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert (violations(tmp_path) == []) is ok
    finally:
        ROOT = saved


def test_relative_imports_resolve_inside_the_package(tmp_path: Path) -> None:
    global ROOT
    (tmp_path / "controller").mkdir()
    path = tmp_path / "controller" / "mod.py"
    path.write_text("from . import safety\nfrom ..simulation import network\n")
    saved, ROOT = ROOT, tmp_path
    try:
        assert [m for _l, m in imports(path)] == ["controller", "simulation"]
    finally:
        ROOT = saved
