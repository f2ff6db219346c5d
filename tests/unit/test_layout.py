"""The package layout: ``shared/`` is what services and clients share, so it
never reaches up into ``services/`` (the edge, the worker, the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_MODULES = {
    ".".join(path.relative_to(ROOT / "services").with_suffix("").parts).removesuffix(".__init__")
    for path in (ROOT / "services" / "tokenwire").rglob("*.py")
}


def imported_modules(source: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_shared_never_imports_from_services() -> None:
    assert SERVICE_MODULES, "found no service modules: is the layout still services/tokenwire?"
    offenders = {
        f"{path.relative_to(ROOT)} imports {name}"
        for path in (ROOT / "shared").rglob("*.py")
        for name in imported_modules(path)
        if name in SERVICE_MODULES or any(name.startswith(f"{m}.") for m in SERVICE_MODULES)
    }
    assert not offenders, sorted(offenders)


def test_tokenwire_is_one_namespace_over_both_folders() -> None:
    assert not (ROOT / "shared" / "tokenwire" / "__init__.py").exists()
    assert not (ROOT / "services" / "tokenwire" / "__init__.py").exists()
    import tokenwire
    import tokenwire.edge
    import tokenwire.settings

    locations = {Path(p).resolve() for p in tokenwire.__path__}
    assert {ROOT / "shared" / "tokenwire", ROOT / "services" / "tokenwire"} <= locations
    assert Path(tokenwire.settings.__file__).is_relative_to(ROOT / "shared")
    assert Path(tokenwire.edge.__file__).is_relative_to(ROOT / "services")
