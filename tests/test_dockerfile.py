"""The container image's promises, read from the Dockerfile itself: it builds offline from
wheels (no package index in any stage), runs as a non-root user, and runs `cloudir
triage` with the event on stdin. Building the image needs an engine and the pre-built
wheels; that test skips with a reason when either is missing."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, args)

    def all(self, instruction: str) -> list[str]:
        return [args for ins, args in self.instructions if ins == instruction]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction: comments dropped, continuations joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        word, _, args = pending.strip().partition(" ")
        found.append((word.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return found


def _stages() -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction, rest in _instructions(DOCKERFILE.read_text()):
        if instruction == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and instruction == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            assert stages, f"{instruction} before the first FROM"
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def test_multi_stage_on_a_slim_python_base() -> None:
    _, stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.1[1-9]-slim", stage.base), stage.base
    builder = stages[0]
    assert builder.name == "builder"
    runs = " && ".join(builder.all("RUN"))
    assert re.search(r"pip wheel --no-index --find-links /wheels .*-w /wheels \.", runs)


def test_no_stage_reaches_a_package_index_or_the_network() -> None:
    """Every pip install and pip wheel says --no-index; nothing downloads."""
    _, stages = _stages()
    pip_calls = 0
    for stage in stages:
        for run in stage.all("RUN"):
            for command in re.split(r"&&|;|\|\|", run):
                words = shlex.split(command.replace("--mount=", "MOUNT="))
                words = [w for w in words if not w.startswith("MOUNT=")]
                if words[:1] == ["pip"] and words[1:2] in (["install"], ["wheel"]):
                    pip_calls += 1
                    assert "--no-index" in words and "--find-links" in words, command
                assert not {"curl", "wget", "apt-get", "apk", "git"} & set(words), command
        for add in stage.all("ADD"):
            assert "://" not in add, f"ADD from the network: {add}"
    assert pip_calls >= 3  # hatchling, the wheel build, the install: the scan saw them


def test_the_final_stage_installs_only_wheels_from_the_builder() -> None:
    _, stages = _stages()
    final = stages[-1]
    assert not final.all("COPY") or all("--from=builder" in c for c in final.all("COPY"))
    [install] = [r for r in final.all("RUN") if "pip install" in r]
    assert "from=builder,source=/wheels" in install
    assert install.endswith("pip install --no-index --find-links /wheels cloudir")


def test_it_runs_as_a_numeric_non_root_user_after_installing() -> None:
    _, stages = _stages()
    final = stages[-1].instructions
    users = [i for i, (ins, _) in enumerate(final) if ins == "USER"]
    assert users, "no USER: the container would run as root"
    user = final[users[-1]][1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0), user
    runs_after = [args for ins, args in final[users[-1] :] if ins == "RUN"]
    assert runs_after == [], "RUN after USER would need the user to write system paths"
    setup = " ".join(args for ins, args in final if ins == "RUN")
    assert f"--uid {uid}" in setup and f"chown {uid}:" in setup and "/case" in setup


def test_entrypoint_is_cloudir_and_the_default_reads_the_event_on_stdin() -> None:
    _, stages = _stages()
    final = stages[-1]
    [entrypoint] = final.all("ENTRYPOINT")
    [cmd] = final.all("CMD")
    assert json.loads(entrypoint) == ["cloudir"]  # exec form: signals reach cloudir
    assert json.loads(cmd) == ["triage", "--case", "/case", "-"]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: patterns in order, the last one that matches the path or one of its
    parent folders decides; `!` re-includes."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, p) for p in prefixes):
            ignored = not negate
    return ignored


def test_the_build_context_holds_the_source_and_wheels_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("pyproject.toml", "README.md", "cloudir/triage/handoff.py", "dist/wheels/a.whl"):
        assert not _ignored(needed, patterns), needed
    kept_out_paths = (
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "demo-case/x",
        "dist/cloudir-0.1.0.tar.gz",
        "cloudir/__pycache__/x.pyc",
        "bench/out/x",
    )
    for kept_out in kept_out_paths:
        assert _ignored(kept_out, patterns), kept_out
    _, stages = _stages()
    for stage in stages:
        for copy in stage.all("COPY"):
            if "--from=" in copy:
                continue
            for source in copy.split()[:-1]:
                assert (REPO / source).exists() or source == "dist/wheels/", source


def test_the_image_builds_and_answers_help(tmp_path: Path) -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker command on this machine")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no Docker engine reachable")
    if not any((REPO / "dist" / "wheels").glob("*.whl")):
        pytest.skip("no pre-built wheels in dist/wheels (see the Dockerfile's header)")
    tag = "cloudir-test:dockerfile"
    subprocess.run(["docker", "build", "-t", tag, str(REPO)], check=True, timeout=1800)
    user = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "id", tag, "-u"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert user.stdout.strip() == "10001"
    helped = subprocess.run(
        ["docker", "run", "--rm", tag, "--help"], capture_output=True, text=True, check=False
    )
    assert helped.returncode == 0 and "triage" in helped.stdout
