"""`cloudir report`: build the model once, write each requested format next to the others.

Files are written through a temporary name and renamed, so a reader (or a CI job that
uploads CASE/report) never picks up a half-written report.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cloudir.case import Case
from cloudir.errors import UsageError

FORMATS = ("html", "md", "json")


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise UsageError(f"--format takes a list of {', '.join(FORMATS)}, not {text!r}")
    return list(dict.fromkeys(formats))


def write_report(case: Case, formats: list[str], out: Path | None = None) -> dict[str, Path]:
    """Write report.<format> for each format into `out` (default CASE/report)."""
    from cloudir.report import model as report_model
    from cloudir.report import render

    folder = out or case.paths.report
    if out is not None:
        from cloudir.analyze.query import refuse_case_records

        refuse_case_records(case, out / "report.html")
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out} is a file; --out names a folder for the report files")
    model = report_model.build(case)
    folder.mkdir(parents=True, exist_ok=True)
    renderers: dict[str, Callable[[dict[str, Any]], str]] = {
        "html": render.html,
        "md": render.markdown,
        "json": render.json_text,
    }
    written = {}
    for fmt in formats:
        path = folder / f"report.{fmt}"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(renderers[fmt](model), encoding="utf-8")
        tmp.replace(path)
        written[fmt] = path
    return written
