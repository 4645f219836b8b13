"""Container images (`docker save`, kaniko, OCI layouts): each build step's changes, with
whiteouts applied. The corpus's `images/dive` Dockerfile is the ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cloudir, query

DIVE = "images/dive"
DOCKER, KANIKO = "test-docker-image.tar", "test-kaniko-image.tar"
OCI = ("test-oci-uncompressed-image.tar", "test-oci-gzip-image.tar", "test-oci-zstd-image.tar")


@pytest.fixture(scope="module")
def image_case(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = tmp_path_factory.mktemp("images") / "case"
    for name in (DOCKER, KANIKO, *OCI):
        captured = cloudir("capture", "files", "--case", str(case), str(corpus / DIVE / name))
        assert captured.code == 0, captured.stderr
        assert "(container-image)" in captured.stdout
    result = cloudir("timeline", "--case", str(case), "--json")
    assert result.code == 0, result.stderr
    assert result.json()["errors"] == 0
    return case


def changes(case: Path, image: str) -> list[dict[str, Any]]:
    rows = query(
        case,
        "SELECT timestamp, action, target, raw FROM timeline "
        f"WHERE evidence_id = 'container-image-{image}' ORDER BY timestamp, target",
    )
    for row in rows:
        row["raw"] = json.loads(row["raw"])
    return rows


def final_paths(rows: list[dict[str, Any]]) -> set[str]:
    """The image's files after every layer: replay the rows as the engine would."""
    present: set[str] = set()
    for row in sorted(rows, key=lambda r: r["raw"]["layer"]):
        path = row["target"]
        if row["action"] == "image:deleted":
            present = {p for p in present if p != path and not p.startswith(path + "/")}
        else:
            present.add(path)
    return present


@pytest.mark.parametrize("image", [DOCKER, KANIKO])
def test_each_dockerfile_step_changes_what_it_says(image_case: Path, image: str) -> None:
    rows = changes(image_case, image)
    by_step = {}
    for row in rows:
        by_step.setdefault(row["raw"]["layer"], []).append(row)
    # RUN mv /root/example/somefile3.txt /root/saved.txt: a whiteout and an addition
    moved = {(r["action"], r["target"]) for r in by_step[8]}
    assert {
        ("image:deleted", "/root/example/somefile3.txt"),
        ("image:added", "/root/saved.txt"),
    } <= moved
    assert "mv /root/example/somefile3.txt /root/saved.txt" in by_step[8][0]["raw"]["created_by"]
    # RUN rm -rf /root/example/: one whiteout hides the folder and the 4 entries left in it
    [removed] = [r for r in by_step[10] if r["action"] == "image:deleted"]
    assert removed["target"] == "/root/example"
    assert removed["raw"]["entries_hidden"] == 5
    assert "rm -rf /root/example/" in removed["raw"]["created_by"]
    # RUN chmod +x /root/saved.txt: the same path, changed, now executable
    [chmod] = [r for r in by_step[14] if r["target"] == "/root/saved.txt"]
    assert chmod["action"] == "image:changed"
    assert int(chmod["raw"]["mode"], 8) & 0o111


@pytest.mark.parametrize("image", [DOCKER, KANIKO])
def test_the_merged_image_is_the_dockerfiles_result(image_case: Path, image: str) -> None:
    present = final_paths(changes(image_case, image))
    # (what ADD .scripts/ brought differs between the two builds' contexts; not checked)
    expected = {
        "/somefile.txt", "/root/saved.txt", "/root/.saved.txt", "/tmp/saved.again1.txt",
        "/root/.data/saved.again2.txt",
    }  # fmt: skip
    assert expected <= present
    assert not {p for p in present if p.startswith("/root/example")}


def test_docker_steps_are_timed_by_the_image_history(image_case: Path) -> None:
    rows = changes(image_case, DOCKER)
    [rm] = [r for r in rows if r["action"] == "image:deleted" and r["target"] == "/root/example"]
    assert rm["timestamp"] == "2018-12-28 16:50:54.171097+00:00"


def test_every_oci_compression_gives_the_same_change(image_case: Path) -> None:
    seen = []
    for image in OCI:
        [row] = changes(image_case, image)
        seen.append((row["timestamp"], row["action"], row["target"], row["raw"]["created_by"]))
    assert len(set(seen)) == 1
    assert seen[0][1:] == ("image:added", "/README.md", "COPY README.md /README.md # buildkit")


def test_a_plain_tar_is_not_taken_for_an_image(tmp_path: Path) -> None:
    import tarfile

    from cloudir.analyze.parsers.image_layers import is_image_archive

    plain = tmp_path / "rootfs.tar"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/hostname").write_text("x\n")
    with tarfile.open(plain, "w") as tar:
        tar.add(tmp_path / "etc", arcname="etc")
    assert not is_image_archive(plain)
