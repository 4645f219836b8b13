"""What a folder given as `--case` is, judged before anything is written into it.

A wrong `--case` is a typing mistake (a file, a folder of other things: exit 2); a case
folder that is not as cloudir made it (case.json that is not an object, custody.jsonl
gone, evidence/ a link out of the case) is damage to report (exit 3), never to paper
over: starting a fresh custody log in a damaged case would hide what happened to it.
Every check uses lstat and opens with O_NOFOLLOW, so a link planted in the case can
neither make cloudir read a FIFO forever nor write outside the folder.
"""

from __future__ import annotations

import enum
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudir.errors import EvidenceError, UsageError

CASE_FILE = "case.json"
CUSTODY_FILE = "custody.jsonl"
EVIDENCE_DIR = "evidence"
LOCK_FILE = "case.lock"
# Left by cloudir itself (a lock of a run that died, a case.json cut short while
# being created): a folder holding only these is still an empty folder.
OWN_LEFTOVERS = frozenset({LOCK_FILE, CASE_FILE + ".partial"})
# What the stages derive from the evidence (docs/DESIGN.md, "The case folder"). Only
# CasePaths joins these names to a case's root; every module asks it for the path.
TIMELINE_DIR = "timeline"
BUILDING_SUFFIX = ".building"  # the next timeline, built beside the current one
OLD_SUFFIX = ".old"  # the previous timeline, for the moment of the swap
# The timeline dataset: Hive-style partitions by source and UTC event date (see
# cloudir/analyze/layout.py), plus an empty timeline's one file at the top.
PARTITION_SOURCE = "log_source"
PARTITION_DATE = "event_date"
TIMELINE_PARTS = ("*.parquet", f"{PARTITION_SOURCE}=*/{PARTITION_DATE}=*/*.parquet")
# A timeline whose Parquet parts were written to a storage URI (`timeline --parts-uri`):
# the list of them, in the timeline folder in place of the parts (docs/DESIGN.md).
PARTS_FILE = "parts.json"
PARTS_FORMAT = "cloudir-timeline-parts/1"
SUMMARY_FILE = "summary.json"
ERRORS_FILE = "errors.jsonl"
FINDINGS_DIR = "findings"
FINDINGS_JSON = "findings.json"
FINDINGS_PARQUET = "findings.parquet"
REPORT_DIR = "report"
EXPORT_DIR = "export"
TRIAGE_DIR = "triage"  # `cloudir triage`'s records: the alert, its scope, the verdict
VALIDATION_FILE = "validation.json"
ALERT_FILE = "alert.json"  # the alert as read (Alert.as_dict()); the received bytes are evidence
SCOPE_FILE = "scope.json"
RESULT_FILE = "result.json"  # the one document a SOAR reads (`triage --json`, the SNS message)
# Derived folders the stages write: a link there would carry their writes out of the case.
OUTPUT_DIRS = (
    TIMELINE_DIR,
    TIMELINE_DIR + BUILDING_SUFFIX,
    TIMELINE_DIR + OLD_SUFFIX,
    FINDINGS_DIR,
    REPORT_DIR,
    EXPORT_DIR,
)
CASE_FILE_LIMIT = 1 << 20
PARTS_FILE_LIMIT = 64 << 20  # parts.json: about 400,000 parts
TimelinePart = Path | str  # a file in the case folder, or a URI (str) listed in parts.json


@dataclass(frozen=True)
class CasePaths:
    """Where each stage's output lives in a case folder, spelled once.

    The layout is a contract (docs/DESIGN.md): the timeline, detect, report and export
    stages, the query refusals and the benches all ask here, so none of them can write
    `summary.json` where another one no longer reads it. `Case.paths` gives one.
    """

    root: Path

    @property
    def timeline(self) -> Path:
        """The timeline dataset's folder (Parquet parts, summary.json, errors.jsonl)."""
        return self.root / TIMELINE_DIR

    @property
    def timeline_building(self) -> Path:
        """Where a timeline run builds the next dataset before swapping it in."""
        return self.root / (TIMELINE_DIR + BUILDING_SUFFIX)

    @property
    def timeline_old(self) -> Path:
        """Where the previous dataset is moved while the new one takes its place."""
        return self.root / (TIMELINE_DIR + OLD_SUFFIX)

    @property
    def timeline_summary(self) -> Path:
        return self.timeline / SUMMARY_FILE

    @property
    def timeline_errors(self) -> Path:
        return self.timeline / ERRORS_FILE

    @property
    def timeline_parts_listing(self) -> Path:
        return self.timeline / PARTS_FILE

    def timeline_parts(self) -> list[TimelinePart]:
        """The timeline's Parquet files, sorted; empty when no timeline was built."""
        return timeline_files(self.timeline)

    @property
    def findings(self) -> Path:
        return self.root / FINDINGS_DIR

    @property
    def findings_json(self) -> Path:
        return self.findings / FINDINGS_JSON

    @property
    def findings_parquet(self) -> Path:
        return self.findings / FINDINGS_PARQUET

    @property
    def report(self) -> Path:
        return self.root / REPORT_DIR

    @property
    def export(self) -> Path:
        return self.root / EXPORT_DIR

    @property
    def triage(self) -> Path:
        return self.root / TRIAGE_DIR

    @property
    def triage_validation(self) -> Path:
        """The alert's verdict (triage/verdict.py writes it; the report reads it)."""
        return self.triage / VALIDATION_FILE

    @property
    def triage_alert(self) -> Path:
        return self.triage / ALERT_FILE

    @property
    def triage_scope(self) -> Path:
        return self.triage / SCOPE_FILE

    @property
    def triage_result(self) -> Path:
        return self.triage / RESULT_FILE

    def export_file(self, fmt: str) -> Path:
        """`timeline export`'s default file for a format (`jsonl`, `csv`)."""
        return self.export / f"timeline.{fmt}"

    @property
    def stage_outputs(self) -> tuple[Path, ...]:
        """Folders whose files a later stage reads as the truth about the case: never a
        place for a query's or an export's own output."""
        return (self.timeline, self.timeline_building, self.timeline_old, self.findings)

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every folder a stage writes (OUTPUT_DIRS), as paths in this case."""
        return tuple(self.root / name for name in OUTPUT_DIRS)


class FolderState(enum.Enum):
    ABSENT = "absent"
    EMPTY = "empty"
    CASE = "case"
    FOREIGN = "foreign"  # holds other things and no case.json


def folder_state(root: Path) -> FolderState:
    """Classify `root`; raise for what is neither a folder nor an intact case layout."""
    try:
        mode = root.stat().st_mode
    except FileNotFoundError:
        if root.is_symlink():
            raise UsageError(
                f"{root} is a symbolic link to nothing; give --case a folder"
            ) from None
        return FolderState.ABSENT
    except NotADirectoryError:
        raise UsageError(f"{root}: part of this path is a file, not a folder") from None
    except OSError as exc:
        raise UsageError(f"{root}: cannot use it as a case folder ({exc.strerror})") from None
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{root} is a file, not a case folder; give --case a folder")
    names = _names(root)
    if CASE_FILE in names:
        check_case_layout(root)
        return FolderState.CASE
    remnants = [n for n in (CUSTODY_FILE, EVIDENCE_DIR) if n in names]
    if remnants:
        raise EvidenceError(
            f"{root} holds {' and '.join(remnants)} but no {CASE_FILE}: a damaged case; "
            f"restore {CASE_FILE} from a copy"
        )
    return FolderState.FOREIGN if foreign_entries(root) else FolderState.EMPTY


def refuse_inside_a_case(root: Path) -> None:
    """A new case is never made inside another one: in its evidence/ it would be files
    custody never recorded, in its timeline/ or report/ it would be wiped by a rebuild."""
    target = root.expanduser().resolve()
    for folder in target.parents:
        if (folder / CASE_FILE).is_file():
            raise UsageError(f"{root} is inside the case {folder}; make the new case outside it")


def foreign_entries(root: Path) -> list[str]:
    """What a folder holds that cloudir did not put there, sorted."""
    return sorted(n for n in _names(root) if n not in OWN_LEFTOVERS)


def refuse_foreign(root: Path, adoptable: bool = True) -> UsageError:
    entries = foreign_entries(root)
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    advice = "pick a new or empty folder"
    if adoptable:
        advice += ", or add --adopt-folder to make this one a case (its files stay as they are)"
    return UsageError(f"{root} is not a cloudir case (no {CASE_FILE}) and holds {shown}; {advice}")


def check_case_layout(root: Path) -> None:
    """The three things every case has, each of the kind cloudir made, none a link."""
    _expect(root / CASE_FILE, stat.S_ISREG, "a regular file", required=True)
    _expect(root / CUSTODY_FILE, stat.S_ISREG, "a regular file", required=True)
    _expect(root / EVIDENCE_DIR, stat.S_ISDIR, "a folder", required=False)


def check_output_links(root: Path) -> None:
    """Before a stage writes: none of the folders it writes may lead out of the case."""
    for path in CasePaths(root).outputs:
        if path.is_symlink():
            raise EvidenceError(
                f"{path} is a symbolic link (to {_target(path)}): cloudir writes there and "
                "never follows a link out of the case; remove the link"
            )


def read_case_info(root: Path) -> dict[str, Any]:
    """case.json as an object with an id, read without following a link or blocking."""
    path = root / CASE_FILE
    check_case_layout(root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise EvidenceError(f"{path} is not a regular file: a damaged case")
        data = fh.read(CASE_FILE_LIMIT + 1)
    if len(data) > CASE_FILE_LIMIT:
        raise EvidenceError(f"{path} is over {CASE_FILE_LIMIT} bytes: not one cloudir wrote")
    try:
        info = json.loads(data)
    except ValueError as exc:
        reason = _first_line(exc)
        raise EvidenceError(f"{path} is not valid JSON ({reason}): a damaged case") from None
    if not isinstance(info, dict):
        kind = type(info).__name__
        raise EvidenceError(f"{path} holds a JSON {kind}, not an object: a damaged case")
    if not isinstance(info.get("id"), str) or not info["id"]:
        raise EvidenceError(f"{path} has no case id: a damaged case")
    return info


def _expect(path: Path, is_kind: Any, kind: str, required: bool) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        if required:
            raise EvidenceError(
                f"{path.parent} has no {path.name}: a damaged case; restore it from a copy"
            ) from None
        return
    except OSError as exc:
        raise EvidenceError(f"{path}: cannot be read ({exc.strerror})") from None
    if stat.S_ISLNK(mode):
        raise EvidenceError(
            f"{path} is a symbolic link (to {_target(path)}): a case keeps its own "
            f"{path.name}, never a link out of the folder"
        )
    if not is_kind(mode):
        raise EvidenceError(f"{path} is not {kind}: a damaged case")


def _names(root: Path) -> set[str]:
    try:
        return set(os.listdir(root))
    except OSError as exc:
        raise UsageError(f"{root}: cannot list it ({exc.strerror})") from None


def _target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def timeline_files(folder: Path) -> list[TimelinePart]:
    """The Parquet files of a timeline folder (or of one being built), in every partition,
    sorted. Only the layout's own places: not a builder's scratch (`.duckdb-tmp`,
    `.spark-staging`) nor anything else put in the folder. A timeline written to a storage
    URI names its parts in parts.json instead: those URIs, as listed."""
    listing = folder / PARTS_FILE
    if os.path.lexists(listing):
        return list(read_parts_listing(listing)["parts"])
    return sorted(path for pattern in TIMELINE_PARTS for path in folder.glob(pattern))


def read_parts_listing(listing: Path) -> dict[str, Any]:
    """parts.json as `{"root": URI, "parts": [URI, ...], "rows": [...], "bytes": [...]}`.

    Checked as hostile input: a case folder travels, and a parts.json edited to name
    `file:///etc/...` or a part outside its run's root must not be read as the timeline.
    Anything off is an EvidenceError naming the file (exit 3).
    """
    from cloudir.storage_uri import check_uri, is_uri

    def bad(why: str) -> EvidenceError:
        return EvidenceError(f"{listing}: not a timeline parts list as cloudir writes it: {why}")

    try:
        with _open_regular(listing) as handle:
            data = handle.read(PARTS_FILE_LIMIT + 1)
        if len(data) > PARTS_FILE_LIMIT:
            raise ValueError(f"over {PARTS_FILE_LIMIT} bytes")
        document = json.loads(data)
    except (OSError, ValueError) as exc:
        raise bad(_first_line(exc)) from exc
    if not isinstance(document, dict) or document.get("format") != PARTS_FORMAT:
        raise bad(f"format is not {PARTS_FORMAT}")
    root, entries = document.get("root"), document.get("parts")
    if not isinstance(root, str) or not is_uri(root) or not isinstance(entries, list):
        raise bad("no root URI or no parts list")
    try:
        root = check_uri(root)
    except UsageError as exc:
        raise bad(str(exc)) from exc
    parts, rows, sizes = [], [], []
    for entry in entries:
        uri = entry.get("uri") if isinstance(entry, dict) else None
        if not isinstance(uri, str) or not uri.startswith(root + "/"):
            raise bad(f"a part that is not under {root}: {str(uri)[:200]!r}")
        if any(piece in ("", ".", "..") for piece in uri[len(root) + 1 :].split("/")):
            raise bad(f"a part named with an empty, `.` or `..` step: {uri[:200]!r}")
        parts.append(uri)
        rows.append(entry.get("rows"))
        sizes.append(entry.get("bytes"))
    return {"root": root, "parts": parts, "rows": rows, "bytes": sizes}


def _open_regular(path: Path) -> Any:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError("not a regular file")
    return os.fdopen(fd, "rb")
