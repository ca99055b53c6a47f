"""The package's shape: wings import only downwards (docs/architecture.md), modules stay small."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hyperrun"

# What each wing may import besides itself; the base (top-level modules) imports only the base.
ALLOWED = {
    "base": set(),
    "images": {"base"},
    "vm": {"base"},
    "registry": {"base", "images"},
    "containers": {"base", "images", "vm"},
    "bench": {"base", "images", "vm", "registry", "containers"},
    "cli": {"base", "images", "vm", "registry", "containers", "bench"},
}
MAX_LINES = 420


def _wing(module: str) -> str:
    """`hyperrun.images.load` -> `images`; top-level modules are the base."""
    parts = module.split(".")
    if module == "hyperrun.__main__":  # `python -m hyperrun` is the command line
        return "cli"
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ALLOWED) else "base"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        out.append((name.removesuffix(".__init__"), path))
    return out


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("hyperrun.")}


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_only_go_downwards(module: str, path: Path) -> None:
    wing = _wing(module)
    known = {m for m, _ in _modules()}
    for imported in _imports(path):
        if imported not in known:  # `from hyperrun.x import name`: name is not a module
            continue
        target = _wing(imported)
        assert target == wing or target in ALLOWED[wing], (
            f"{module} ({wing}) imports {imported} ({target}); see docs/architecture.md")


def test_no_relative_imports() -> None:
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level), module


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_modules_stay_small(module: str, path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{module}: split it by concern"


# A full sha256 written as a pattern ([a-f0-9]{64}, [0-9a-f]{64}, ...); id prefixes ({1,64}) differ.
_DIGEST_PATTERN = re.compile(r"\[(?:a-f0-9|0-9a-f|0-9a-fA-F|a-fA-F0-9)\]\{64\}")


def test_the_digest_pattern_lives_in_digest_py_alone() -> None:
    """One sha256/digest module (issue 6): no other module spells the 64-hex pattern."""
    for module, path in _modules():
        if module == "hyperrun.digest":
            continue
        assert not _DIGEST_PATTERN.search(path.read_text()), (
            f"{module} writes its own digest pattern; use hyperrun.digest")



_PINNED_TCG = re.compile(r"""-accel["']\s*,\s*["']tcg["']""")


def test_vm_tests_do_not_pin_tcg() -> None:
    """On a host with KVM the VM tests must use it (issue 6): none hard-codes TCG."""
    tests = PACKAGE.parent / "tests"
    boots = [PACKAGE.parent / "initrd" / "test-agent"]
    boots += [p for p in sorted(tests.glob("*.py")) if "mark.vm" in p.read_text()]
    for path in boots:
        assert not _PINNED_TCG.search(path.read_text()), f"{path.name} pins --accel tcg"
