"""The dependency rule of ARCHITECTURE.md, checked on every import of the package (function-level ones included):
cli -> http -> services -> evaluation -> reporting -> {store, embedding, sources} -> domain; config, then errors,
below all; domain imports nothing of the project; nothing outside store/ talks SQL."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "attribution_audit"
LAYERS = {
    "__main__": 8,
    "cli": 7,  # the command line; its `serve` command starts the http/ adapter
    "http": 6,
    "api": 6,  # the Python API: a facade over services/ (the package's __init__ exposes it lazily)
    "services": 5,
    "evaluation": 4,
    "reporting": 3,
    "store": 2,
    "embedding": 2,
    "sources": 2,
    "domain": 1,
    "config": 0,
    "errors": -1,
    "__init__": -1,
}
SQL_PACKAGES = ("sqlalchemy", "alembic", "psycopg")
MODULES = sorted(PACKAGE.rglob("*.py"))


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def _target(module: str) -> str | None:
    """The top-level part of the package an import names (None for outside packages)."""
    parts = module.split(".")
    if parts[0] != "attribution_audit":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_layer() -> None:
    assert {_part(p) for p in MODULES} <= LAYERS.keys()


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_imports_point_down(path: Path) -> None:
    source = _part(path)
    wrong = []
    for line, module in _imports(path):
        target = _target(module)
        if target is None or target == source or target not in LAYERS:
            continue
        if source == "domain" or LAYERS[target] >= LAYERS[source]:
            wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    assert not wrong, "imports against the dependency rule (see ARCHITECTURE.md):\n" + "\n".join(wrong)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(PACKAGE)) for p in MODULES])
def test_only_the_store_talks_sql(path: Path) -> None:
    if _part(path) == "store":
        return
    sql = [f"{line}: {m}" for line, m in _imports(path) if m.split(".")[0] in SQL_PACKAGES]
    assert not sql, f"{path.relative_to(PACKAGE)} imports SQL libraries; queries belong in store/: {sql}"


def test_the_python_api_is_exposed_lazily_and_completely() -> None:
    """``from attribution_audit import open_service`` works, and ``import attribution_audit`` loads no layer (a
    submodule import runs the package's __init__ first: it must stay light)."""
    import subprocess
    import sys

    import attribution_audit
    from attribution_audit import api

    assert all(getattr(attribution_audit, name) is getattr(api, name) for name in api.__all__)
    with pytest.raises(AttributeError):
        attribution_audit.AuditStore  # noqa: B018 (not part of the API: the store stays behind the services)
    probe = "import sys, attribution_audit; print(sorted(m for m in sys.modules if m.startswith('attribution_audit')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['attribution_audit']"
