"""The plain-Python packages stay plain, and the cache package's imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path, package: str) -> set[str]:
    """Every module a file imports, anywhere in it (function bodies and TYPE_CHECKING too).

    `from P import name` counts as importing P.name when that is a module of the package.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                is_module = (ROOT / Path(*submodule.split("."))).with_suffix(".py").exists()
                found.add(submodule if is_module else node.module)
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("package", ["cache", "inference"])
def test_plain_packages_never_import_the_django_project(package: str) -> None:
    # given every module of the package
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in imported_modules(path, package)
        if name.split(".")[0] in {"chatplatform", "django"}
    }
    # then: none imports the Django project (nor Django), even lazily inside a function
    assert offenders == set()


def test_the_cache_package_has_no_import_cycle() -> None:
    # given the import graph between the cache package's modules
    graph = {
        module_name(path): {
            name for name in imported_modules(path, "cache") if name.split(".")[0] == "cache"
        }
        for path in (ROOT / "cache").glob("*.py")
    }
    # when: searching it depth-first for a path back to a module on the current path
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str], done: set[str]) -> None:
        if module in path:
            cycles.append([*path[path.index(module) :], module])
            return
        if module in done:
            return
        for target in sorted(graph.get(module, ())):
            visit(target, [*path, module], done)
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [], done)
    # then: data flows one way (the package's __init__ re-exports and is imported by no module)
    assert cycles == []
