"""The shape of the code, pinned: small functions on the request path, imports that point
downwards (docs/ARCHITECTURE.md), pympp behind one module."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mpp_proxy"

# What each package may import of ours (besides itself); DESIGN's dependency rule.
ALLOWED = {
    "config": set(),
    "router": {"config"},
    "discovery": {"config", "tokens"},
    "state": {"config"},
    "payments": {"config", "state", "problems"},
    "observe": {"config", "state"},
    "limits": {"config", "state", "problems"},
    "problems": set(),
    "tokens": set(),
    "core": {"config", "router", "limits", "payments", "observe", "discovery", "state", "problems"},
    # What a paying agent imports: nothing of the server side.
    "client": {"tokens"},
}


def modules() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def ours(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py") if rel.parts else ""


def imported(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_request_path_functions_fit_on_a_screen() -> None:
    long = []
    for path, tree in modules():
        if ours(path) not in ("core", "payments"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > 60:
                    long.append(f"{path.name}:{node.name} ({size} lines)")
    assert not long, long


def test_no_class_is_a_hub() -> None:
    big = []
    for path, tree in modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > 300:
                    big.append(f"{path.relative_to(PACKAGE)}:{node.name} ({size} lines)")
    assert not big, big


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_downwards(package: str) -> None:
    wrong = []
    for path, tree in modules():
        if ours(path) != package:
            continue
        for name in imported(tree):
            if not name.startswith("mpp_proxy."):
                continue
            target = name.split(".")[1]
            if target != package and target not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not wrong, wrong


def test_pympp_is_imported_in_one_payments_module_only() -> None:
    importers = set()
    for path, tree in modules():
        if ours(path) != "payments":
            continue
        if any(name == "mpp" or name.startswith("mpp.") for name in imported(tree)):
            importers.add(path.name)
    assert importers == {"pympp.py"}
