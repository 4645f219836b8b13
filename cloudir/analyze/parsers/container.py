"""Container evidence (`cloudir capture container`): its life, its changes, its logs.

An item holds what the Docker engine said about one container (`inspect.json`,
`diff.json`, `logs.txt`) and its file system as the engine exported it (`fs.tar`, or
`changed.tar` with `--changed-only`). `docker diff` names the changed paths but gives no
times; the export gives every file with its mtime. This parser joins the two: one row
per changed path, timed by the export, read in place from the tar (never extracted).
The exported file system itself goes to the host parser for shell history, auth logs,
cron and keys.
"""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from cloudir.analyze.host.rows import epoch_time, host_row, iso_time, raw_json
from cloudir.analyze.parsers import (
    ErrorLog,
    Logsource,
    ParseOptions,
    Parser,
    Row,
    RowSource,
    batches,
    json_list,
    json_loads,
    json_object,
    register,
)

SOURCE_FILES = (
    "inspect.json", "diff.json", "logs.txt", "fs.tar", "changed.tar", "image-history.json",
)  # fmt: skip
DIFF_KINDS: dict[object, str] = {0: "changed", 1: "added", 2: "deleted"}  # diff.json Kind
HASH_PLACES = ("/tmp/", "/dev/shm/", "/var/tmp/", "/root/", "/home/")
HASH_MAX_BYTES = 64 << 20
MAX_DOCUMENT_BYTES = 64 << 20


def accepts(path: Path) -> bool:
    return path.name in SOURCE_FILES


def skip_reason(path: Path) -> str | None:
    """The item's documents that hold no times, said plainly in the unparsed list."""
    return {
        "top.json": "the process list at capture time; it holds no times (read it in the case)",
        "image.json": "the image's inspect document; its build steps are read from "
        "image-history.json",
    }.get(path.name)


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None = None
) -> Iterator[pa.RecordBatch]:
    if path.name in ("fs.tar", "changed.tar"):
        yield from _exported_fs(path, evidence_id, errors, options)
        return
    inspect = _document(path.with_name("inspect.json"), errors)
    if inspect is None:
        errors.add("inspect.json missing or unreadable: the container's rows need it")
        return
    if not isinstance(inspect, dict):
        errors.add("inspect.json is not a JSON object: the container's rows need it")
        return
    context = _Context(inspect, evidence_id)
    if path.name == "inspect.json":
        rows: Iterator[Row] = context.state_rows()
    elif path.name == "diff.json":
        rows = context.diff_rows(path, errors)
    elif path.name == "image-history.json":
        rows = context.history_rows(path, errors)
    else:
        rows = context.log_rows(path, errors)
    yield from batches(rows, errors)


def _exported_fs(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None
) -> Iterator[pa.RecordBatch]:
    """The host parser over the export; the file system timeline only when asked, since
    the diff rows already name what changed and an image's files are no evidence."""
    from cloudir.analyze.parsers import host

    wanted = ParseOptions(fs_timeline=bool(options and options.fs_timeline))
    yield from host.parse(path, evidence_id, errors, wanted)


def _words(value: Any) -> list[Any]:
    """A command as inspect.json gives it: a list of words, or (older engines) one string."""
    return [value] if isinstance(value, str) else json_list(value)


class _Context:
    """The container's identity, for every row of its item."""

    def __init__(self, inspect: dict[str, Any], evidence_id: str) -> None:
        self.inspect = inspect
        self.evidence_id = evidence_id
        self.id = str(inspect.get("Id") or "")
        self.name = str(inspect.get("Name") or "").lstrip("/") or self.id[:12]
        config = json_object(inspect.get("Config"))
        self.image = str(config.get("Image") or inspect.get("Image") or "")
        self.host = f"container:{self.name}"

    def row(
        self, when: str | None, desc: str, artifact: str, raw: dict[str, Any], **columns: Any
    ) -> Row:
        raw = {"container_id": self.id, "container_name": self.name, "image": self.image, **raw}
        return host_row(
            when=when,
            desc=desc,
            artifact=artifact,
            host=self.host,
            evidence_id=self.evidence_id,
            raw=raw_json(raw),
            source="container",
            **columns,
        )

    # -- the container's life -----------------------------------------------------------
    def state_rows(self) -> Iterator[Row]:
        state = json_object(self.inspect.get("State"))
        config = json_object(self.inspect.get("Config"))
        command = " ".join(
            str(x) for x in _words(config.get("Entrypoint")) + _words(config.get("Cmd"))
        )
        times = [
            ("Container Created", self.inspect.get("Created"), "created"),
            ("Container Started", state.get("StartedAt"), "started"),
            ("Container Finished", state.get("FinishedAt"), "finished"),
        ]
        for desc, value, what in times:
            when = docker_time(value)
            if when is None:
                continue
            detail = f" (exit code {state.get('ExitCode')})" if what == "finished" else ""
            yield self.row(
                when,
                desc,
                "container:state",
                {"event": what, "command": command, "state": state.get("Status")},
                message=f"container {self.name} ({self.id[:12]}, image {self.image}) "
                f"{what}{detail}: {command}".rstrip(": "),
                action=f"container:{what}",
                target=self.name,
            )

    # -- what changed ------------------------------------------------------------------------
    def diff_rows(self, path: Path, errors: ErrorLog) -> Iterator[Row]:
        changes = _document(path, errors)
        if changes is None:
            return
        if not isinstance(changes, list):
            errors.add("diff.json is not a list of changes")
            return
        wanted: dict[str, str] = {}
        for change in changes:
            if isinstance(change, dict) and isinstance(change.get("Path"), str):
                kind = change.get("Kind")
                wanted[change["Path"]] = (
                    DIFF_KINDS.get(kind, "changed") if isinstance(kind, int) else "changed"
                )
        export = _export_of(path)
        members = _members(export, wanted, errors) if export else {}
        if export is None and any(kind != "deleted" for kind in wanted.values()):
            errors.add("no fs.tar or changed.tar beside diff.json: changed paths have no time")
        for changed, kind in sorted(wanted.items()):
            info = members.get(changed)
            raw: dict[str, Any] = {"path": changed, "change": kind}
            when = None
            if info is not None:
                when = epoch_time(info["mtime"])
                raw.update({k: v for k, v in info.items() if k != "mtime"})
                raw["mtime"] = when
            desc = (
                "Modification Time (export)"
                if when
                else ("Deleted (no time)" if kind == "deleted" else "No Time (not in the export)")
            )
            mode = info.get("mode_text", "") if info else ""
            yield self.row(
                when,
                desc,
                "container:diff",
                raw,
                message=f"{kind} {changed}"
                + (f" ({mode}, {info['size']:,} bytes)" if info else ""),
                action=f"container:{kind}",
                target=changed,
            )

    # -- how its image was built ----------------------------------------------------------
    def history_rows(self, path: Path, errors: ErrorLog) -> Iterator[Row]:
        """Each image layer's build step at its time: a step added after the base image
        (a `RUN curl ... | sh`) is part of the story as much as a run-time change."""
        layers = _document(path, errors)
        if not isinstance(layers, list):
            if layers is not None:
                errors.add("image-history.json is not a list of layers")
            return
        for layer in layers:
            if not isinstance(layer, dict):
                continue
            created = layer.get("Created")
            when = epoch_time(created) if isinstance(created, int | float) and created > 0 else None
            step = str(layer.get("CreatedBy") or "").strip()
            yield self.row(
                when,
                "Image Layer Created",
                "container:image_history",
                {k: layer.get(k) for k in ("Id", "CreatedBy", "Size", "Comment", "Tags")},
                message=f"image {self.image} layer: {step[:300]}",
                action="container:image_layer",
                target=self.image,
            )

    # -- what it printed -------------------------------------------------------------------
    def log_rows(self, path: Path, errors: ErrorLog) -> Iterator[Row]:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, 1):
                text = line.rstrip(b"\r\n").decode("utf-8", "replace")
                stamp, _, message = text.partition(" ")
                when = docker_time(stamp)
                if when is None:
                    errors.add(f"logs.txt line {number}: no timestamp at its start", line=number)
                    continue
                yield self.row(
                    when,
                    "Log Time",
                    "container:log",
                    {"line": number, "message": message},
                    message=f"{self.name}: {message}",
                    action="container:log",
                    target=self.name,
                )


def _export_of(diff: Path) -> Path | None:
    for name in ("fs.tar", "changed.tar"):
        candidate = diff.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def _members(export: Path, wanted: dict[str, str], errors: ErrorLog) -> dict[str, dict[str, Any]]:
    """What the export says of each changed path, in one streaming pass; SHA-256 of
    added or changed executables where intruders drop them."""
    found: dict[str, dict[str, Any]] = {}
    try:
        with export.open("rb") as raw, tarfile.open(fileobj=EndsOnce(raw), mode="r|*") as tar:
            for member in tar:
                path = member_path(member.name)
                if path not in wanted or path in found:
                    continue
                info: dict[str, Any] = {
                    "mtime": member.mtime,
                    "size": member.size,
                    "mode": oct(member.mode),
                    "mode_text": stat.filemode(member.mode | _type_bits(member)),
                    "uid": member.uid,
                    "gid": member.gid,
                    "type": _type_name(member),
                    "executable": bool(member.isreg() and member.mode & 0o111),
                }
                if member.issym() or member.islnk():
                    info["link_target"] = member.linkname  # recorded, never followed
                if (
                    member.isreg()
                    and member.mode & 0o111
                    and path.startswith(HASH_PLACES)
                    and member.size <= HASH_MAX_BYTES
                ):
                    content = tar.extractfile(member)  # a stream out of the tar, never a file
                    if content is not None:
                        info["sha256"] = _sha256(content)
                found[path] = info
    except (tarfile.TarError, OSError, EOFError, ValueError, OverflowError) as exc:
        # ValueError: a pax number that is not one; OverflowError: a negative mode
        errors.add(f"{export.name}: unreadable after {len(found)} changed paths: {exc}")
    return found


class EndsOnce(io.RawIOBase):
    """A stream whose end is final: a read after it has returned b"" raises EOFError.

    tarfile's stream mode passes over a member's data by reading up to its declared size,
    and keeps reading at the end of the stream, so a member that declares 10**20 bytes
    would hold a parser for ever; here it ends the archive with an error instead.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream
        self.ended = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.ended:
            raise EOFError("the archive ends inside a member (cut short, or a size too large)")
        data = self.stream.read(size)
        self.ended = not data
        return data


def member_path(name: str) -> str:
    """The absolute path a member stands for: `./etc/x` and `etc/x` are `/etc/x`; a name
    with `..` or a leading `/` keeps them, so a hostile member never passes for another
    path (and nothing is ever written anywhere by its name)."""
    while name.startswith("./"):
        name = name[2:]
    return name if name.startswith("/") else "/" + name


def _sha256(stream: Any) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def _type_bits(member: tarfile.TarInfo) -> int:
    if member.isdir():
        return stat.S_IFDIR
    if member.issym():
        return stat.S_IFLNK
    if member.ischr():
        return stat.S_IFCHR
    if member.isblk():
        return stat.S_IFBLK
    if member.isfifo():
        return stat.S_IFIFO
    return stat.S_IFREG


def _type_name(member: tarfile.TarInfo) -> str:
    for name, test in (("dir", member.isdir), ("symlink", member.issym), ("hardlink", member.islnk),
                       ("file", member.isreg)):  # fmt: skip
        if test():
            return name
    return "other"


def docker_time(value: Any) -> str | None:
    """Docker's RFC 3339 with nanoseconds; its zero time (0001-01-01) is no time."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = value.strip().replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # trim nanoseconds to what Python reads
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_time(moment)


def _document(path: Path, errors: ErrorLog) -> Any:
    try:
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            errors.add(f"{path.name}: larger than {MAX_DOCUMENT_BYTES} bytes, not read")
            return None
        return json_loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        errors.add(f"{path.name}: not valid JSON ({exc})")
        return None


register(
    Parser(
        name="container",
        evidence_kinds=("container",),
        accepts=accepts,
        parse=parse,
        skip_reason=skip_reason,
        artifacts=(
            RowSource(
                "container:diff",
                "one path the container changed: `action` `container:added`/`changed`/"
                "`deleted`, `target` the path, `raw.executable`, `raw.sha256`",
                (Logsource("docker", "diff"), Logsource("docker")),
            ),
            RowSource(
                "container:state",
                "the container created, started or finished, with its command",
                (Logsource("docker"),),
            ),
            RowSource("container:log", "one line the container printed", (Logsource("docker"),)),
            RowSource("container:image_history", "one build step of the container's image"),
        ),
        priority=40,
    )
)
