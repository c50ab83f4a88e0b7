"""The layout's import rules (DESIGN.md, *Layout*), read from every module's imports.

A rule broken anywhere fails here with the module, the line and the import that breaks it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.paths import REPO

PACKAGES = (
    "actors", "bench", "config", "console", "deribit", "desk", "messages", "quant", "runtime", "simulator", "sql",
)


def project_imports(path: Path) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(line, dotted names) for every import statement of a project package in ``path``, lazy ones
    too; ``from a import b`` gives ``a`` and ``a.b`` (``b`` may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        names = [name for name in names if name.split(".")[0] in PACKAGES or name == "main"]
        if names:
            yield node.lineno, tuple(names)


def _forbidden(package: str, path: Path, module: str) -> str | None:
    """Why ``module`` may not be imported by ``path`` (in ``package``), or None."""
    top = module.split(".")[0]
    if module == "main":
        return None if package == "bench" else "main.py wires the actors; nothing but a benchmark imports it"
    if package in ("messages", "quant"):
        return None if top == package else f"{package}/ imports nothing of the project but itself"
    if package == "runtime" and top in ("actors", "deribit", "desk", "console", "simulator"):
        return "runtime/ imports no actor and nothing of deribit/, desk/, console/"
    if package == "actors" and top == "actors" and module != "actors":
        own = f"actors.{path.stem}"
        if module != own and not module.startswith(own + "."):
            return "no actor imports another"
    if package in ("desk", "console") and top == "actors":
        return f"{package}/ imports no actor"
    if package == "deribit" and top in ("actors", "desk", "console", "simulator"):
        return "deribit/ is the exchange edge: it imports no actor, desk, console or simulator code"
    if package == "simulator" and (top in ("desk", "console", "actors") or module.startswith("deribit.codec")):
        return "simulator/ shares no code with the desk: nothing of desk/, console/, actors/ nor the codec"
    return None


def violations(root: Path = REPO) -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for line, names in project_imports(path):
                for module in names:
                    why = _forbidden(package, path, module)
                    if why:
                        found.append(f"{path.relative_to(root)}:{line} imports {module}: {why}")
                        break
    return found


def test_the_layout_import_rules_hold() -> None:
    assert violations() == []


@pytest.mark.parametrize(
    ("package", "module", "source"),
    [
        ("quant", "black76", "from messages.market import Ticker\n"),
        ("messages", "market", "import deribit.codec\n"),
        ("runtime", "bus", "from desk.book import L2Book\n"),
        ("actors", "hedger", "from actors.connection import Connection\n"),
        ("desk", "book", "def f():\n    from actors.hedger import Hedger\n"),
        ("console", "grammar", "from actors import console\n"),
        ("simulator", "server", "from deribit.codec import decode_frame\n"),
        ("deribit", "codec", "from desk.portfolio import PortfolioBook\n"),
    ],
)
def test_a_broken_rule_is_found(tmp_path: Path, package: str, module: str, source: str) -> None:
    (tmp_path / package).mkdir()
    (tmp_path / package / f"{module}.py").write_text(source)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith(f"{package}/{module}.py"), found


def test_every_source_folder_is_known() -> None:
    """A new top-level package must be given its rules here before it counts as part of the layout."""
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages <= set(PACKAGES), packages - set(PACKAGES)


def imports_of_test_modules(root: Path = REPO) -> list[str]:
    """Tests that import another test module (its helpers belong in tests/support/)."""
    found = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            found += [f"{path.relative_to(root)}:{node.lineno} imports {name}" for name in names
                      if name.split(".")[:2] in (["tests", "unit"], ["tests", "integration"], ["tests", "e2e"])]
    return found


def test_tests_take_their_helpers_from_support_only(tmp_path: Path) -> None:
    assert imports_of_test_modules() == []
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "unit" / "test_b.py").write_text("from tests.unit.test_a import helper\n")
    assert imports_of_test_modules(tmp_path) == ["tests/unit/test_b.py:1 imports tests.unit.test_a"]
