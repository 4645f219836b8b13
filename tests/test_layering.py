"""The stages depend on each other in one direction, and only the CLI layer draws.

Read from the source (every import statement, those inside functions too), so a lazy
import cannot hide a dependency: capture does not know how evidence is analysed or
reported, the report reads the case rather than the code that changes AWS, and nothing
outside the CLI layer imports rich or typer (library code reports through
`cloudir.progress`; `cloudir.console` draws).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cloudir"

CLI_LAYER = ("cloudir.cli", "cloudir.console", "cloudir.__main__", "cloudir.demo")
"""Modules that may draw: the commands, the terminal, the demo (a command's script)."""

DRAWING = ("rich", "typer")

# What each stage must not import (a prefix matches the package and everything in it).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "cloudir.capture": ("cloudir.analyze", "cloudir.report", "cloudir.respond"),
    "cloudir.analyze": ("cloudir.capture", "cloudir.report", "cloudir.respond"),
    "cloudir.report": ("cloudir.capture", "cloudir.respond", "cloudir.triage"),
    "cloudir.respond": ("cloudir.report",),
    "cloudir.case": ("cloudir.capture", "cloudir.analyze", "cloudir.report", "cloudir.respond"),
    "cloudir.aws": ("cloudir.capture", "cloudir.analyze", "cloudir.report", "cloudir.respond"),
    "cloudir.progress": ("cloudir.capture", "cloudir.analyze", "cloudir.report"),
    # Reading an alert knows nothing of what triage then does with it.
    "cloudir.alerts": (
        "cloudir.capture",
        "cloudir.analyze",
        "cloudir.report",
        "cloudir.respond",
        "cloudir.triage",
    ),
}

KNOWN: set[tuple[str, str]] = set()  # imports against the rules, each with its reason


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(module: str, path: Path) -> set[str]:
    """Every module the file names in an import, relative ones made absolute."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)  # from pkg import mod
    return found


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") or name.startswith(p + "_")
               for p in prefixes)  # fmt: skip


GRAPH = {module: _imports(module, path) for module, path in _modules()}


def test_the_scan_sees_the_package() -> None:
    """A scan that found nothing would pass every rule below."""
    assert {"cloudir.capture.ebs", "cloudir.report.model", "cloudir.cli"} <= GRAPH.keys()
    assert "cloudir.aws" in GRAPH["cloudir.capture.ebs"]
    assert "rich.progress" in GRAPH["cloudir.console"]


def test_only_the_cli_layer_imports_rich_or_typer_or_the_terminal() -> None:
    offending = {
        module: sorted(n for n in names if _under(n, DRAWING) or _under(n, CLI_LAYER))
        for module, names in GRAPH.items()
        if not _under(module, CLI_LAYER)
    }
    assert {m: n for m, n in offending.items() if n} == {}


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_stage_imports_point_one_way(stage: str) -> None:
    offending = sorted(
        (module, name)
        for module, names in GRAPH.items()
        if _under(module, (stage,))
        for name in names
        if _under(name, FORBIDDEN[stage]) and not _known(module, name)
    )
    assert offending == []


def _known(module: str, name: str) -> bool:
    return any(module == m and _under(name, (n,)) for m, n in KNOWN)


def test_the_report_reads_containment_from_the_case() -> None:
    """The report shows what respond did without importing respond (which talks to AWS)."""
    assert "cloudir.case_responses" in GRAPH["cloudir.report.model"]
    assert not any(_under(n, ("cloudir.respond",)) for n in GRAPH["cloudir.report.model"])
