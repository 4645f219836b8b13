"""Container images (`docker save` tars and OCI layouts): what each build step changed.

An image is a stack of layer tars; a later layer deletes an earlier file with a whiteout
(`.wh.<name>`) or hides a whole folder (`.wh..wh..opq`). Reading the layers in order and
applying the whiteouts gives, for every path, the step that added, changed or deleted
it, at the time the image's history gives that step: an implant baked into an image is
found by the step that put it there. Layers are streamed from the outer tar, never
extracted; only the paths' metadata is held in memory.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from cloudir.analyze.host.rows import epoch_time, host_row, raw_json
from cloudir.analyze.parsers import (
    BY_CONTENT,
    BY_NAME_AND_STRUCTURE,
    NOT_MINE,
    ErrorLog,
    ParseOptions,
    Parser,
    Row,
    RowSource,
    batches,
    json_loads,
    register,
)
from cloudir.analyze.parsers.container import EndsOnce, docker_time, member_path
from cloudir.sniff import Sniff, sniff

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_JSON_BYTES = 16 << 20


@dataclass
class Layer:
    member: str  # the layer blob's name in the outer tar
    media_type: str
    created: str | None  # the build step's time
    created_by: str  # the build step (Dockerfile line as the builder recorded it)


def is_image_archive(path: Path) -> bool:
    """A `docker save` tar (manifest.json) or an OCI image layout (oci-layout)."""
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if member.name.lstrip("./") in ("manifest.json", "oci-layout"):
                    return True
    except (tarfile.TarError, OSError):
        return False
    return False


def parse(
    path: Path, evidence_id: str, errors: ErrorLog, options: ParseOptions | None = None
) -> Iterator[pa.RecordBatch]:
    try:
        outer = tarfile.open(path, "r:")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, ValueError) as exc:  # ValueError: a bad pax number
        errors.add(f"{path.name}: not a readable image tar ({exc})")
        return
    with outer:
        try:
            image, layers = _layers(outer)
        except (tarfile.TarError, OSError) as exc:  # cut short: an incomplete copy
            errors.add(f"{path.name}: image tar unreadable ({exc})")
            return
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            errors.add(f"{path.name}: not a docker save or OCI image ({type(exc).__name__}: {exc})")
            return
        yield from batches(_rows(outer, image, layers, evidence_id, errors), errors)


def _json(outer: tarfile.TarFile, name: str) -> Any:
    member = outer.getmember(name)
    if member.size > MAX_JSON_BYTES:
        raise ValueError(f"{name} is larger than {MAX_JSON_BYTES} bytes")
    handle = outer.extractfile(member)  # a stream out of the tar, never a file on disk
    if handle is None:
        raise ValueError(f"{name} is not a file")
    return json_loads(handle.read())


def _layers(outer: tarfile.TarFile) -> tuple[str, list[Layer]]:
    """The image's name and its layers in order, each with the build step that made it."""
    names = {m.name.lstrip("./") for m in outer.getmembers()}
    if "manifest.json" in names:
        [manifest] = _json(outer, "manifest.json")[:1]
        config = _json(outer, manifest["Config"])
        if not all(isinstance(name, str) for name in manifest["Layers"]):
            raise ValueError("manifest.json names a layer with something other than a name")
        blobs = [
            (name, "application/vnd.docker.image.rootfs.diff.tar") for name in manifest["Layers"]
        ]
        image = ",".join(manifest.get("RepoTags") or []) or manifest["Config"]
    else:
        index = _json(outer, "index.json")
        digest = index["manifests"][0]["digest"]
        manifest = _json(outer, _blob(digest))
        config = _json(outer, _blob(manifest["config"]["digest"]))
        blobs = [
            (_blob(layer["digest"]), layer.get("mediaType", "")) for layer in manifest["layers"]
        ]
        annotations = index["manifests"][0].get("annotations") or {}
        image = annotations.get("org.opencontainers.image.ref.name") or digest
    steps = [h for h in config.get("history") or [] if not h.get("empty_layer")]
    layers = []
    for position, (member, media_type) in enumerate(blobs):
        step = steps[position] if position < len(steps) else {}
        layers.append(
            Layer(
                member,
                media_type,
                docker_time(step.get("created")),
                str(step.get("created_by") or ""),
            )
        )
    return image, layers


def _blob(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    return f"blobs/{algorithm}/{value}"


def _rows(
    outer: tarfile.TarFile, image: str, layers: list[Layer], evidence_id: str, errors: ErrorLog
) -> Iterator[Row]:
    present: dict[str, int] = {}  # path -> the layer that last wrote it
    for position, layer in enumerate(layers):
        stream = _open_layer(outer, layer, errors)
        if stream is None:
            continue
        try:
            with tarfile.open(fileobj=EndsOnce(stream), mode="r|") as tar:
                for member in tar:
                    yield from _change(member, position, layer, present, image, evidence_id)
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:  # ValueError: pax
            errors.add(f"layer {position + 1} ({layer.member}): unreadable: {exc}")


def _change(
    member: tarfile.TarInfo,
    position: int,
    layer: Layer,
    present: dict[str, int],
    image: str,
    evidence_id: str,
) -> Iterator[Row]:
    path = member_path(member.name).rstrip("/") or "/"
    folder, _, name = path.rpartition("/")
    folder = folder or "/"
    if name == OPAQUE:  # the folder's earlier contents are hidden from here on
        gone = [p for p in present if p.startswith(folder.rstrip("/") + "/")]
        for hidden in gone:
            del present[hidden]
        if gone:
            yield _row(image, layer, position, evidence_id, folder, "deleted",
                       {"whiteout": "opaque", "entries_hidden": len(gone)})  # fmt: skip
        return
    if name.startswith(WHITEOUT):
        target = f"{folder.rstrip('/')}/{name[len(WHITEOUT) :]}"
        below = [p for p in present if p == target or p.startswith(target + "/")]
        for hidden in below:
            del present[hidden]
        yield _row(image, layer, position, evidence_id, target, "deleted",
                   {"whiteout": member.name, "entries_hidden": len(below)})  # fmt: skip
        return
    kind = "changed" if path in present else "added"
    present[path] = position
    info: dict[str, Any] = {
        "mode": oct(member.mode),
        "size": member.size,
        "uid": member.uid,
        "gid": member.gid,
        "mtime": epoch_time(member.mtime) if member.mtime > 0 else None,
        "type": _type(member),
    }
    if member.issym() or member.islnk():
        info["link_target"] = member.linkname  # recorded, never followed
    yield _row(image, layer, position, evidence_id, path, kind, info)


def _type(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    return "file" if member.isreg() else "other"


def _row(
    image: str,
    layer: Layer,
    position: int,
    evidence_id: str,
    path: str,
    kind: str,
    extra: dict[str, Any],
) -> Row:
    raw = {
        "image": image,
        "layer": position + 1,
        "layer_blob": layer.member,
        "created_by": layer.created_by,
        "path": path,
        "change": kind,
        **extra,
    }
    return host_row(
        when=layer.created,
        desc="Image Layer Created" if layer.created else "No Time (layer without history)",
        artifact="container:image_layer",
        host=f"image:{image}",
        evidence_id=evidence_id,
        raw=raw_json(raw),
        message=f"layer {position + 1} {kind} {path}: {layer.created_by[:200]}",
        action=f"image:{kind}",
        target=path,
        source="container",
        occurrence=position,
    )


def _open_layer(outer: tarfile.TarFile, layer: Layer, errors: ErrorLog) -> IO[bytes] | None:
    """The layer's tar stream, decompressed as its media type (or its magic) says."""
    try:
        raw = outer.extractfile(layer.member.lstrip("./"))
    except KeyError:
        errors.add(f"layer {layer.member}: missing from the image tar")
        return None
    if raw is None:
        errors.add(f"layer {layer.member}: not a file in the image tar")
        return None
    head = raw.read(4)
    raw.seek(0)
    if head[:2] == b"\x1f\x8b":
        import gzip

        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if head == b"\x28\xb5\x2f\xfd":
        try:
            import zstandard
        except ImportError:
            errors.add(f"layer {layer.member}: zstd-compressed; install zstandard to read it")
            return None
        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


def accepts(path: Path) -> bool:
    """A tar by name or by content (`docker save -o image` has no suffix)."""
    return path.name.lower().endswith(".tar") or sniff(path) == Sniff(None, "tar")


def recognise(paths: Sequence[Path]) -> int:
    """One tar holding an image's manifest (`docker save`) or an OCI layout: it is read as
    a container image, not as a file system export, which a plain tar is."""
    if len(paths) != 1 or not accepts(paths[0]) or not is_image_archive(paths[0]):
        return NOT_MINE
    return BY_NAME_AND_STRUCTURE if paths[0].name.lower().endswith(".tar") else BY_CONTENT


register(
    Parser(
        name="image",
        evidence_kinds=("container-image",),
        accepts=accepts,
        parse=parse,
        artifacts=(
            RowSource(
                "container:image_layer",
                "one build step of a saved image, or one file a layer adds, changes or deletes",
            ),
        ),
        capture_kind="container-image",
        recognise=recognise,
        priority=30,
    )
)
