"""The package layout is the architecture: lower layers never import higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import alembic_integrity

PACKAGE = Path(alembic_integrity.__file__).parent

LAYERS = {
    "errors": 0, "settings": 0, "compat": 0,
    "pg": 1,
    "rules": 2,
    "operations": 3, "audit": 3, "repair": 3, "verify": 3, "autogenerate": 3,
    "cli": 4, "testing": 4, "demo": 4,
}


def imported_parts(path: Path) -> list[tuple[int, str]]:
    """(line, top-level part of alembic_integrity) for every import of the package."""
    parts = ["alembic_integrity", *path.relative_to(PACKAGE).with_suffix("").parts]
    package = parts[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            module, names = "", [a.name for a in node.names]
        else:
            continue
        for full in ([module] if module.count(".") else [f"{module}.{n}" for n in names]):
            bits = full.split(".")
            if bits[0] == "alembic_integrity" and len(bits) > 1:
                found.append((node.lineno, bits[1]))
    return found


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = []
    for path in PACKAGE.rglob("*.py"):
        top = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if top == "__init__":
            continue  # the public API re-exports from every layer
        for line, target in imported_parts(path):
            if LAYERS.get(target, -1) > LAYERS[top]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} imports {target}")
    assert upward == []


def test_top_level_holds_packages_and_at_most_four_modules() -> None:
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 4, modules
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} \
        | {m.removesuffix(".py") for m in modules if m != "__init__.py"} == set(LAYERS)


def test_public_api_is_importable() -> None:
    missing = [n for n in alembic_integrity.__all__ if not hasattr(alembic_integrity, n)]
    assert missing == []
