"""Render the report model as HTML, Markdown and JSON (placeholder renderers)."""

from __future__ import annotations

import json
from typing import Any


def json_text(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False, default=str) + "\n"


def html(model: dict[str, Any]) -> str:
    raise NotImplementedError


def markdown(model: dict[str, Any]) -> str:
    raise NotImplementedError
