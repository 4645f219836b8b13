"""`verify --s3`: does S3 still hold every object version the case's manifests pin?

`verify` re-hashes the manifests themselves; that proves the case still names the same
versions, not that the bucket still keeps them. A version deleted or expired by a
lifecycle rule is evidence lost, and a responder should learn it while the bucket owner
can still restore it from a backup, not at the next timeline. One HeadObject per version
(no bytes read), pinned as the timeline's read is (VersionId, IfMatch on the ETag, size).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cloudir.aws import AwsOptions
from cloudir.case import Case
from cloudir.s3_manifest import (
    PinnedObject,
    PinnedReadError,
    check_pinned,
    is_manifest,
    read_manifest,
)


@dataclass
class PinnedCheck:
    checked: int = 0
    # {"manifest", "uri", "kind", "reason"}: kind missing, changed, unreadable
    problems: list[dict[str, str]] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)  # manifest lines that pin nothing

    @property
    def ok(self) -> bool:
        return not (self.problems or self.bad_lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "problems": self.problems,
            "bad_manifest_lines": self.bad_lines,
        }


def check_case_pins(
    case: Case,
    manifests: Iterable[str],
    options: AwsOptions,
    workers: int = 16,
    on_checked: Callable[[int, int], None] | None = None,
) -> PinnedCheck:
    """Check every version the given manifests (case-relative paths `verify` found
    unchanged) pin; `on_checked` hears (done, total)."""
    pins: list[tuple[str, PinnedObject]] = []
    result = PinnedCheck()
    for rel in sorted(m for m in manifests if is_manifest(m)):
        pinned, bad = read_manifest(case.root / rel)
        pins += [(rel, p) for p in pinned]
        result.bad_lines += [f"{rel} line {line}: {why}" for line, why in bad]
    if on_checked:
        on_checked(0, len(pins))

    def check(pin: tuple[str, PinnedObject]) -> dict[str, str] | None:
        rel, pinned = pin
        try:
            check_pinned(pinned, options)
        except PinnedReadError as exc:
            return {"manifest": rel, "uri": pinned.uri, "kind": exc.kind, "reason": str(exc)}
        return None

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, problem in enumerate(pool.map(check, pins), 1):
            result.checked += 1
            if problem:
                result.problems.append(problem)
            if on_checked:
                on_checked(done, len(pins))
    return result
