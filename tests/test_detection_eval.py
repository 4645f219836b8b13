"""The detection evaluation set's shape (tests/data/detection_eval/).

Only the set's consistency is tested here: every record labelled with a known behaviour,
the JSON well-formed CloudTrail, the Stratus labels pointing at real events, the committed
files what bench/make_detection_eval.py writes. How well the rules do on the set is the
bench's result (bench/detection_quality.py), never a test's threshold.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
EVAL_DIR = REPO / "tests" / "data" / "detection_eval"
BENCH = REPO / "bench"
CLOUDTRAIL_KEYS = (
    "eventVersion",
    "userIdentity",
    "eventTime",
    "eventSource",
    "eventName",
    "awsRegion",
    "sourceIPAddress",
    "userAgent",
    "requestParameters",
    "eventID",
    "eventType",
    "recipientAccountId",
)


def _bench_module(name: str) -> ModuleType:
    """A bench script as a module (bench/ is not a package; its scripts `import common`)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    return _bench_module("detection_quality")


@pytest.fixture(scope="module")
def behaviours() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load((EVAL_DIR / "behaviours.yml").read_text())["behaviours"])


def _written_files() -> list[Path]:
    return sorted(EVAL_DIR.glob("*/*.json"))


def test_behaviours_say_whether_they_are_malicious(behaviours: dict[str, Any]) -> None:
    assert behaviours
    for name, spec in behaviours.items():
        assert isinstance(spec["malicious"], bool), name
        assert spec["what"].strip(), name
        assert name.startswith("benign-") is not spec["malicious"], name


@pytest.mark.parametrize("path", _written_files(), ids=lambda p: p.name)
def test_every_written_record_is_labelled_cloudtrail(
    path: Path, behaviours: dict[str, Any]
) -> None:
    document = json.loads(path.read_text())
    assert document["description"].strip()
    records = document["Records"]
    assert records
    malicious = path.parent.name == "attacks"
    assert path.parent.name in {"attacks", "benign"}
    previous = ""
    for n, record in enumerate(records):
        where = f"{path.name} record {n}"
        for key in CLOUDTRAIL_KEYS:
            assert key in record, f"{where}: no {key}"
        assert record["userIdentity"]["type"], where
        assert record["eventTime"] >= previous, f"{where}: out of time order"
        previous = record["eventTime"]
        label = record["evalLabel"]
        assert set(label) == {"behaviour", "malicious"}, where
        assert label["behaviour"] in behaviours, f"{where}: unknown {label['behaviour']!r}"
        assert label["malicious"] is behaviours[label["behaviour"]]["malicious"], where
        assert label["malicious"] is malicious, f"{where}: in {path.parent.name}/"


def test_stratus_labels_point_to_real_events(quality: ModuleType) -> None:
    """load_eval_set refuses a label matching no event, an unlabelled event, a technique
    file without labels, an unknown behaviour and a repeated eventID."""
    eval_set = quality.load_eval_set()
    stratus = [e for e in eval_set.events if e.origin.startswith("stratus:")]
    techniques = {e.origin for e in stratus}
    assert len(techniques) == len(list(quality.STRATUS_DIR.glob("*.json")))
    assert all(e.malicious for e in stratus)
    ids = Counter(e.event_id for e in [*eval_set.events, *eval_set.tooling])
    assert max(ids.values()) == 1


def test_every_behaviour_has_events(quality: ModuleType, behaviours: dict[str, Any]) -> None:
    eval_set = quality.load_eval_set()
    assert {e.behaviour for e in eval_set.events} == set(behaviours)


def test_a_label_without_events_is_refused(quality: ModuleType, tmp_path: Path) -> None:
    labels = yaml.safe_load((EVAL_DIR / "stratus-labels.yml").read_text())
    labels["techniques"]["aws.defense-evasion.cloudtrail-stop"]["attack"].append("NoSuchCall")
    (tmp_path / "stratus-labels.yml").write_text(yaml.safe_dump(labels))
    (tmp_path / "behaviours.yml").write_text((EVAL_DIR / "behaviours.yml").read_text())
    with pytest.raises(ValueError, match="'NoSuchCall' matches no event"):
        quality.load_eval_set(tmp_path)


def test_capture_input_carries_no_labels(quality: ModuleType, tmp_path: Path) -> None:
    eval_set = quality.load_eval_set()
    quality.write_capture_input(eval_set, tmp_path / "in")
    written = sorted((tmp_path / "in").glob("*.json"))
    assert len(written) == len(eval_set.files)
    for path in written:
        text = path.read_text()
        assert "evalLabel" not in text, path.name
        assert json.loads(text)["Records"], path.name


def test_committed_files_are_what_the_generator_writes() -> None:
    """The written scenarios are generated; a hand edit of the JSON would be lost on the
    next regeneration, so the two must agree."""
    maker = _bench_module("make_detection_eval")
    for make in maker.SCENARIOS:
        scenario = make()
        folder = "attacks" if scenario.name.startswith("attack-") else "benign"
        committed = json.loads((EVAL_DIR / folder / f"{scenario.name}.json").read_text())
        assert committed == scenario.document(), scenario.name
    expected = {f"{make().name}.json" for make in maker.SCENARIOS}
    assert {p.name for p in _written_files()} == expected
