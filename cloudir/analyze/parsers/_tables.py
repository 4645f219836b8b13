"""The tables of docs/detection.md that the parsers' declarations decide, as Markdown.

A test compares them with the document, so the document cannot drift from the code. To
refresh the document after adding a parser or an artifact, print them and paste:

    python -m cloudir.analyze.parsers._tables
"""

from __future__ import annotations

from cloudir.analyze.parsers import (
    LogsourceKey,
    RowSource,
    logsource_fields,
    logsource_rows,
    parsers,
)

BEGIN = "<!-- declared tables: begin (python -m cloudir.analyze.parsers._tables) -->"
END = "<!-- declared tables: end -->"


def logsource_table() -> str:
    """Which rows each Sigma logsource selects, one line per declared logsource."""
    lines = [
        "| logsource (product, service, category) | artifacts | extra row condition |",
        "|---|---|---|",
    ]
    for key, pairs in logsource_rows().items():
        artifacts = ", ".join(f"`{a}`" for a in dict.fromkeys(a for a, _ in pairs))
        conditions = {c for _, c in pairs}
        if conditions == {None}:
            condition = ""
        elif len(conditions) == 1:
            condition = f"`{pairs[0][1]}`"
        else:
            condition = "; ".join(f"`{a}`: `{c}`" for a, c in pairs if c)
        lines.append(f"| {_key_text(key)} | {artifacts} | {condition} |".replace("|  |", "| |"))
    return "\n".join(lines)


def artifact_table() -> str:
    """What one row of each artifact a logsource selects is."""
    lines = ["| artifact | written by | one row is |", "|---|---|---|"]
    seen: set[str] = set()
    for parser in parsers():
        for source in parser.artifacts:
            if source.logsources and source.artifact not in seen:
                seen.add(source.artifact)
                lines.append(_artifact_line(parser.name, source))
    return "\n".join(lines)


def field_table() -> str:
    """The Sigma field names a logsource maps to where its rows hold them."""
    lines = ["| logsource | Sigma field | reads |", "|---|---|---|"]
    for key, mapping in logsource_fields().items():
        for name, target in mapping.items():
            lines.append(f"| {_key_text(key)} | `{name}` | `{target}` |")
    return "\n".join(lines)


def declared_tables() -> str:
    """The tables between the markers docs/detection.md holds them in."""
    tables = [logsource_table(), artifact_table()]
    if logsource_fields():
        tables.append(field_table())
    return f"{BEGIN}\n" + "\n\n".join(tables) + f"\n{END}"


def _key_text(key: LogsourceKey) -> str:
    product, service, category = key
    parts = [p for p in (product, service) if p]
    if category:
        parts.append(f"{category} (category)")
    return ", ".join(parts)


def _artifact_line(parser: str, source: RowSource) -> str:
    return f"| `{source.artifact}` | {parser} | {source.description} |"


if __name__ == "__main__":
    print(declared_tables())
