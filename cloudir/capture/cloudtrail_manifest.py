"""`capture cloudtrail --manifest`: the trail's objects pinned by version, not copied.

For a trail too large to bring to one machine (an organization's, read by Spark next to
the bucket), the case records which bytes are the evidence instead of holding them: every
version of every log object the window needs, with its VersionId, ETag and size, in a
manifest file hashed into custody (cloudir/s3_manifest.py says how it is read).

Every version is pinned, not only the latest: a log rewritten after delivery keeps its
delivered version in a versioned bucket, and both go into the timeline, where copies of
an event that disagree are kept and named as tampering. A key whose latest version is a
delete marker is a deleted log; its earlier versions are pinned and the deletion is a
note on the item. Without versioning a manifest can only pin the ETag: an overwrite or a
delete loses the evidence for good, so the capture says so, and copying is the answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from cloudir.aws import Aws, call
from cloudir.capture.cloudtrail import ItemResult, _open_items, day_pages, named_outside
from cloudir.case import Case
from cloudir.evidence_item import EvidenceItem
from cloudir.progress import Reporter
from cloudir.s3_manifest import (
    MANIFEST_SUFFIX,
    NULL_VERSION,
    PinnedObject,
    is_manifest,
    manifest_bytes,
    read_manifest,
)
from cloudir.timewindow import Window

MANIFEST_FOLDER = "manifests"


@dataclass(frozen=True)
class DeleteMarker:
    """A key's delete marker: the log was deleted at `when` (ISO 8601 UTC)."""

    key: str
    when: str | None
    is_latest: bool


def capture_manifest(
    case: Case,
    aws: Aws,
    bucket: str,
    prefix: str,
    accounts: list[str],
    regions: list[str],
    window: Window,
    identity: dict[str, str],
    report: Reporter,
) -> list[ItemResult]:
    """Pin every log object version the window needs, one manifest per item and run."""
    s3 = aws.client("s3")
    versioning = bucket_versioning(s3, bucket)
    bucket_region = bucket_location(s3, bucket)
    if versioning != "Enabled":
        report(
            f"warning: versioning is {versioning.lower()} on s3://{bucket}: a manifest pins "
            "each object's ETag only, and an overwrite or delete loses it for good; "
            "capture without --manifest to hold copies"
        )
    with contextlib.ExitStack() as items:
        plan = _open_items(
            case, s3, bucket, prefix, accounts, regions, window, identity, items,
            lister=list_day_versions, mode="manifest",
        )  # fmt: skip
        listed = sum(sum(isinstance(o, PinnedObject) for o in found) for _, found in plan)
        report(f"{listed} log object versions in {len(plan)} account/region folder(s) to pin")
        for result, found in plan:
            result.item.summary = _manifest_summary
            versions = [o for o in found if isinstance(o, PinnedObject)]
            pinned = [replace(o, region=bucket_region) for o in versions]
            result.listed = len(pinned)
            markers = [o for o in found if isinstance(o, DeleteMarker)]
            _pin(case, result.item, bucket, pinned, markers, versioning)
            result.item.finish(
                _manifest_summary(result.item),
                source={"window": window.as_dict(), "versioning": versioning},
            )
    return [result for result, _ in plan]


def bucket_versioning(s3: Any, bucket: str) -> str:
    """Enabled, Suspended or Off (a bucket that never had versioning answers no Status)."""
    resp = call(f"s3:GetBucketVersioning s3://{bucket}", s3.get_bucket_versioning, Bucket=bucket)
    return str(resp.get("Status") or "Off")


def bucket_location(s3: Any, bucket: str) -> str:
    """The bucket's region, where the pinned reads go (us-east-1 answers no constraint)."""
    resp = call(f"s3:GetBucketLocation s3://{bucket}", s3.get_bucket_location, Bucket=bucket)
    constraint = resp.get("LocationConstraint")
    return str({"EU": "eu-west-1", None: "us-east-1", "": "us-east-1"}.get(constraint, constraint))


def list_day_versions(
    s3: Any, bucket: str, region_prefix: str, window: Window
) -> Iterator[PinnedObject | DeleteMarker]:
    """Every version and delete marker in the day folders the window needs, as
    `cloudtrail.list_day_objects` chooses the folders and files."""
    versions = s3.get_paginator("list_object_versions")
    for page in day_pages(versions, "ListObjectVersions", bucket, region_prefix, window):
        for version in page.get("Versions", []):
            if not named_outside(version["Key"], window):
                yield PinnedObject(
                    bucket,
                    version["Key"],
                    str(version.get("VersionId") or NULL_VERSION),
                    str(version.get("ETag", "")).strip('"'),
                    int(version["Size"]),
                    _iso(version.get("LastModified")),
                )
        for marker in page.get("DeleteMarkers", []):
            if not named_outside(marker["Key"], window):
                when = _iso(marker.get("LastModified"))
                yield DeleteMarker(marker["Key"], when, bool(marker.get("IsLatest")))


def _pin(
    case: Case,
    item: EvidenceItem,
    bucket: str,
    listed: list[PinnedObject],
    markers: list[DeleteMarker],
    versioning: str,
) -> None:
    """Write this run's manifest: the versions no earlier manifest of the item pins.
    `bucket` is the one captured from, named in the versioning note even when the window
    listed no object."""
    held = _pinned_before(case, item.evidence_id)
    new = sorted(
        (o for o in listed if (o.key, o.version_id) not in held),
        key=lambda o: (o.key, o.last_modified or "", o.version_id),
    )
    for _ in range(len(listed) - len(new)):
        item.skip()
    for note in _tampering_notes(listed, markers):
        item.note(note)
    if versioning != "Enabled":
        item.note(f"versioning {versioning.lower()} on s3://{bucket}: pinned by ETag only")
    if not new:
        return
    item.store(
        _manifest_name(case, item.evidence_id),
        manifest_bytes(new),
        source={
            "type": "s3-manifest",
            "bucket": new[0].bucket,
            "objects": len(new),
            "object_bytes": sum(o.size for o in new),
            "versioning": versioning,
        },
        captured=len(new),
    )


def _pinned_before(case: Case, evidence_id: str) -> set[tuple[str, str]]:
    """The versions this item's recorded manifests pin (a file custody does not record
    is not the item's, and pins nothing)."""
    held: set[tuple[str, str]] = set()
    recorded = case.recorded_files()
    for path in case.evidence_files(evidence_id):
        if is_manifest(path) and case.relpath(path) in recorded:
            pinned, _ = read_manifest(path)
            held.update((o.key, o.version_id) for o in pinned)
    return held


def _tampering_notes(listed: list[PinnedObject], markers: list[DeleteMarker]) -> list[str]:
    """Logs changed after delivery: rewritten (several versions) or deleted (a marker)."""
    versions: dict[str, int] = {}
    for o in listed:
        versions[o.key] = versions.get(o.key, 0) + 1
    notes = [
        f"{key}: rewritten after delivery: {count} versions, all pinned"
        for key, count in sorted(versions.items())
        if count > 1
    ]
    for marker in sorted(markers, key=lambda m: (m.key, m.when or "")):
        kept = versions.get(marker.key, 0)
        state = "deleted" if marker.is_latest else "deleted and restored"
        notes.append(
            f"{marker.key}: {state} (delete marker at {marker.when or 'unknown time'}); "
            f"{kept} earlier version(s) pinned"
        )
    return notes


def _manifest_name(case: Case, evidence_id: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{MANIFEST_FOLDER}/{stamp}{MANIFEST_SUFFIX}"
    n = 1
    while case.target_path(evidence_id, name).exists():
        n += 1
        name = f"{MANIFEST_FOLDER}/{stamp}-{n}{MANIFEST_SUFFIX}"
    return name


def _manifest_summary(item: EvidenceItem) -> str:
    return (
        f"{item.captured} object versions pinned in a manifest, {item.skipped} pinned "
        f"before, {len(item.problems)} failed"
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None
