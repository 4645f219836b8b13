"""Copies of one event (one `event_id`): identical ones collapse, disagreeing ones stay.

The same CloudTrail event legitimately arrives more than once: from the S3 trail and from
LookupEvents, from two captures of overlapping prefixes, or twice in one delivery. Such
copies are the same record and the timeline keeps one (the S3 copy when there is one).
A copy that says something else under the same eventID is not a duplicate: it is a sign
that one of the copies was edited or planted. Every version is kept in the timeline, so
rules see the planted record as well as the genuine one, and the event is reported.

"The same" means the same whole record in canonical form: object keys sorted, whitespace
and JSON string escapes normalised. Nothing else is forgiven: a number keeps its precision
(`1`, `1.0` and `1.00` all differ; only an exponent's spelling, `1e5` or `1E+5`, does
not), a key given twice is kept twice (parsers disagree on which one wins, so a doubled
key is a difference, never a spelling), and no field is left out.
LookupEvents' `CloudTrailEvent` string is the record itself, the same fields as the S3
copy; the LookupEvents envelope around it (`EventId`, `Username`, `Resources`, ...) is not
part of `raw` and so never compared.

Cost: one aggregate over `event_id` decides whether there are copies at all; with none,
that is all. Copies are first compared by SHA-256 of their bytes inside DuckDB; only the
groups whose bytes differ are canonicalised in Python. Everything runs on the caller's
DuckDB connection, under its memory limit, spilling to disk.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from json.encoder import encode_basestring as _string  # the C encoder, ensure_ascii off
from typing import Any

import msgspec

from cloudir.analyze.error_entries import error_entry

CONFLICT_EXAMPLES = 20  # events named in summary.json; errors.jsonl names every one
LISTED_COPIES = 50  # copies named per event; `copies` always gives the full count
WHOLE_RECORD = "(record is not a JSON object)"
CONFLICT_KIND = "conflicting_copies"  # the `kind` of its errors.jsonl lines


@dataclass
class Outcome:
    dropped: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    events: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"events": self.events, "examples": self.examples}


class FileRows:
    """Which evidence file a staging row came from: each chunk lists its files' row counts."""

    def __init__(self, by_staging: dict[str, list[tuple[str, int]]]) -> None:
        self._paths: dict[str, list[str]] = {}
        self._ends: dict[str, list[int]] = {}
        for staging, files in by_staging.items():
            ends, total = [], 0
            for _, rows in files:
                total += rows
                ends.append(total)
            self._paths[staging] = [path for path, _ in files]
            self._ends[staging] = ends

    def path(self, staging: str, row: int) -> str | None:
        ends = self._ends.get(staging)
        if not ends:
            return None
        index = bisect.bisect_right(ends, row)
        return self._paths[staging][index] if index < len(ends) else None


# -- canonical form --------------------------------------------------------------------
class _Object(list[Any]):
    """A JSON object as its (key, value) pairs, repeated keys included."""


class _Number(str):
    """A JSON number as written."""

    __slots__ = ()


_DECODER = json.JSONDecoder(
    object_pairs_hook=_Object, parse_int=_Number, parse_float=_Number, parse_constant=_Number
)


def _canonical(value: Any) -> str:
    kind = value.__class__
    if kind is str:
        return _string(value)
    if kind is _Object:
        value.sort(key=_first)  # stable: a repeated key keeps its order
        return "{" + ",".join([_string(k) + ":" + _canonical(v) for k, v in value]) + "}"
    if kind is list:
        return "[" + ",".join([_canonical(v) for v in value]) + "]"
    if kind is _Number:
        return str.__str__(value)
    return "null" if value is None else ("true" if value else "false")


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def _parsed(raw: str) -> Any:
    """The record as canonical-ready values; None when it is not JSON we can walk."""
    try:
        return _DECODER.decode(raw)
    except (ValueError, RecursionError):
        return None


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _RepeatedKey
    return value


# The fast canonical form: the C scanner builds plain values (numbers as Decimal, so
# 1.0 and 1.00 stay apart), msgspec writes them with sorted keys. About a third of the
# cost of walking the tree in Python; records with a repeated key take the slow path.
_FAST_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_int=Decimal, parse_float=Decimal, parse_constant=Decimal
)
_SORTED_ENCODER = msgspec.json.Encoder(order="sorted", decimal_format="number")


def canonical_digest(raw: str) -> bytes:
    """SHA-256 of the record's canonical form (of its plain bytes when it is not JSON).

    Each form has its own prefix, so a record can only equal another of the same form.
    """
    try:
        return _sha256(b"json\x00", _SORTED_ENCODER.encode(_FAST_DECODER.decode(raw)))
    except (_RepeatedKey, UnicodeEncodeError, msgspec.EncodeError):
        pass  # repeated keys or lone surrogates: the exact, slower walk below
    except (ValueError, RecursionError):
        return _sha256(b"text\x00", raw.encode("utf-8", "surrogatepass"))
    value = _parsed(raw)
    if value is not None:
        try:
            return _sha256(b"pairs\x00", _canonical(value).encode("utf-8", "surrogatepass"))
        except RecursionError:
            pass
    return _sha256(b"text\x00", raw.encode("utf-8", "surrogatepass"))


def _sha256(form: bytes, data: bytes) -> bytes:
    return hashlib.sha256(form + data).digest()


def top_level_fields(raw: str) -> dict[str, tuple[str, ...]] | None:
    """Each top-level key's canonical value(s); None when the record is not an object."""
    value = _parsed(raw)
    if not isinstance(value, _Object):
        return None
    fields: dict[str, tuple[str, ...]] = {}
    try:
        for key, item in value:
            fields[key] = (*fields.get(key, ()), _canonical(item))
    except RecursionError:
        return None
    return fields


def _canonical_digests(raws: Any) -> Any:
    """DuckDB scalar function over an Arrow batch of `raw` values."""
    import pyarrow as pa

    return pa.array(
        [None if r is None else canonical_digest(r) for r in raws.to_pylist()], pa.binary()
    )


# -- finding copies and versions -------------------------------------------------------------
def find(con: Any, source: str, file_rows: FileRows) -> Outcome:
    """Fill the tables the rewrite needs (`drop_rows`) and say what was found.

    `source` is a read_parquet(...) expression with `filename` and `file_row_number`.
    """
    con.execute(
        f"""CREATE TEMP TABLE candidates AS
            SELECT hash(event_id) AS h FROM {source}
            WHERE event_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1"""
    ).fetchall()
    if not con.execute("SELECT count(*) FROM candidates").fetchall()[0][0]:
        return Outcome()
    # Every copy of a repeated id, with the SHA-256 of its bytes (a 64-bit hash an
    # adversary could collide on purpose; SHA-256 they cannot).
    con.execute(
        f"""CREATE TEMP TABLE copies AS
            SELECT event_id, filename AS f, file_row_number AS r, evidence_id,
                   coalesce(unhex(sha256(raw)), ''::BLOB) AS digest
            FROM {source} WHERE hash(event_id) IN (SELECT h FROM candidates)
              AND event_id IS NOT NULL"""
    ).fetchall()
    con.execute(
        """DELETE FROM copies WHERE event_id IN
           (SELECT event_id FROM copies GROUP BY 1 HAVING count(*) = 1)"""
    ).fetchall()
    _canonicalise_uneven_groups(con, source)
    con.execute(
        """CREATE TEMP TABLE versions AS
           SELECT event_id, digest, min({'f': f, 'r': r}) AS first_copy, count(*) AS n
           FROM copies GROUP BY event_id, digest"""
    ).fetchall()
    con.execute(
        """CREATE TEMP TABLE drop_rows AS
           SELECT c.f, c.r FROM copies c JOIN versions v USING (event_id, digest)
           WHERE v.first_copy <> {'f': c.f, 'r': c.r}"""
    ).fetchall()
    outcome = Outcome(dropped=int(con.execute("SELECT count(*) FROM drop_rows").fetchall()[0][0]))
    con.execute(
        """CREATE TEMP TABLE conflicted AS
           SELECT event_id FROM versions GROUP BY 1 HAVING count(*) > 1"""
    ).fetchall()
    for conflict in _conflicts(con, source, file_rows):
        outcome.events += 1
        if len(outcome.examples) < CONFLICT_EXAMPLES:
            outcome.examples.append({k: v for k, v in conflict.items() if k != "versions"})
        outcome.errors.append(_error_entry(conflict))
    return outcome


def _canonicalise_uneven_groups(con: Any, source: str) -> None:
    """Where copies' bytes differ, their digest becomes that of their canonical form."""
    con.execute(
        """CREATE TEMP TABLE uneven AS
           SELECT event_id FROM copies GROUP BY 1 HAVING count(DISTINCT digest) > 1"""
    ).fetchall()
    if not con.execute("SELECT count(*) FROM uneven").fetchall()[0][0]:
        return
    con.create_function(
        "cloudir_canonical_digest",
        _canonical_digests,
        ["VARCHAR"],
        "BLOB",
        type="arrow",
        null_handling="special",
    )
    con.execute(
        f"""CREATE TEMP TABLE canon AS
            SELECT filename AS f, file_row_number AS r,
                   coalesce(cloudir_canonical_digest(raw), ''::BLOB) AS digest
            FROM {source}
            WHERE hash(event_id) IN (SELECT hash(event_id) FROM uneven)
              AND event_id IN (SELECT event_id FROM uneven)"""
    ).fetchall()
    con.execute(
        "UPDATE copies SET digest = canon.digest FROM canon "
        "WHERE copies.f = canon.f AND copies.r = canon.r"
    ).fetchall()


def _conflicts(con: Any, source: str, file_rows: FileRows) -> Iterator[dict[str, Any]]:
    """One description per event whose copies disagree, streamed in event_id order."""
    reader = con.sql(
        f"""SELECT c.event_id, c.f, c.r, c.evidence_id, c.digest, s.raw
            FROM copies c JOIN {source} s ON s.filename = c.f AND s.file_row_number = c.r
            WHERE hash(s.event_id) IN (SELECT hash(event_id) FROM conflicted)
              AND c.event_id IN (SELECT event_id FROM conflicted)
            ORDER BY c.event_id, c.f, c.r"""
    ).to_arrow_reader(4096)
    group: _Group | None = None
    for batch in reader:
        for event_id, staging, row, evidence_id, digest, raw in zip(
            *(batch.column(n).to_pylist() for n in range(6)), strict=True
        ):
            if group is None or group.event_id != event_id:
                if group is not None:
                    yield group.describe()
                group = _Group(event_id)
            path = file_rows.path(staging, row) or f"evidence/{evidence_id}"
            group.add(evidence_id, path, digest, raw)
    if group is not None:
        yield group.describe()


class _Group:
    """The copies of one event, held as counts and the first copy's fields only."""

    def __init__(self, event_id: str) -> None:
        self.event_id = event_id
        self.copies = 0
        self.paths: list[str] = []
        self.evidence_ids: set[str] = set()
        self.seen: set[bytes] = set()
        self.first: dict[str, tuple[str, ...]] | None = None
        self.differs: set[str] = set()

    def add(self, evidence_id: str, path: str, digest: bytes, raw: str | None) -> None:
        self.copies += 1
        self.evidence_ids.add(evidence_id)
        if len(self.paths) < LISTED_COPIES:
            self.paths.append(path)
        if digest in self.seen:
            return
        fields = top_level_fields(raw or "")
        if not self.seen:
            self.first = fields
        elif fields is None or self.first is None:
            self.differs.add(WHOLE_RECORD)
        else:
            keys = fields.keys() | self.first.keys()
            self.differs.update(k for k in keys if fields.get(k) != self.first.get(k))
        self.seen.add(digest)

    def describe(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "copies": self.copies,
            "versions": len(self.seen),
            "evidence_ids": sorted(self.evidence_ids),
            "paths": self.paths,
            "differs_in": sorted(self.differs),
        }


def _error_entry(conflict: dict[str, Any]) -> dict[str, Any]:
    fields = ", ".join(conflict["differs_in"]) or "their bytes"
    reason = (
        f"event_id {conflict['event_id']} has {conflict['versions']} different versions "
        f"in {conflict['copies']} copies (they differ in {fields}); every version is kept "
        "in the timeline. Copies of one event that disagree are a sign of tampering: "
        "one of them was edited or planted. Compare them in the evidence."
    )
    return error_entry(
        ", ".join(conflict["evidence_ids"]),
        conflict["paths"][0] if conflict["paths"] else "",
        reason,
        kind=CONFLICT_KIND,
        **conflict,
    )
