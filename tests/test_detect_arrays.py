"""Any-element semantics on generated record shapes: the engine and the reference agree.

A raw field's path may cross arrays anywhere (`requestParameters.a.b.c` with `a` a list of
objects, `c` a list of strings, both, or neither), and the engine finds the values with an
inline fallback (sigma/fields.FieldPlan.element_values) whose parses it keeps few. These
tests generate the shapes (Hypothesis) and hold the engine to the plain-Python reference
(tests/sigma_reference.py) on every row, so a cheaper fallback cannot drop or add a match.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sigma_reference import load_rules, read_timeline, rule_matches
from tests.timeline_rows import timeline_row, write_timeline

DETECTIONS = {
    "deep-equals": "requestParameters.a.b.c: v1",
    "deep-prefixes": "requestParameters.a.b.c|startswith: [v1, w, p9]",
    # `t` is a leaf of the struct, so `t.value` is read with its own parse, once per row
    "clashing-prefixes": "requestParameters.t.value|startswith: [x1, y, z9]",
    "leaf-prefixes": "requestParameters.t|startswith: [x1, y]",
    "not-deep": "requestParameters.a.b.c|contains: v",
}
CONDITIONS = {"not-deep": "not s"}

LEAVES = st.sampled_from(["v1", "V1x", "w2", "x1", "Y3", "p9", "z", "", 7, None, True])
VALUES = LEAVES | st.lists(LEAVES, max_size=3)


def _nested(keys: list[str]) -> st.SearchStrategy[Any]:
    """A value at `keys`: each level an object, a list holding objects and distractors,
    or something else entirely."""
    if not keys:
        return VALUES
    inner = st.builds(lambda v, k=keys[0]: {k: v}, _nested(keys[1:]))
    listed = st.lists(inner | st.sampled_from([{}, "s", 1, None]), min_size=1, max_size=3)
    return inner | listed | st.sampled_from([{}, "text", 3])


PARAMETERS = st.fixed_dictionaries(
    {}, optional={"a": _nested(["b", "c"]), "t": VALUES | _nested(["value"])}
)
RECORDS = st.lists(
    PARAMETERS | st.lists(PARAMETERS, min_size=1, max_size=2), min_size=1, max_size=6
)


def _write_rules(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, selection in DETECTIONS.items():
        (folder / f"{name}.yml").write_text(
            f"title: {name}\nid: {uuid.uuid5(uuid.NAMESPACE_URL, name)}\nstatus: test\n"
            "logsource:\n  product: aws\n  service: cloudtrail\n"
            f"detection:\n  s:\n    {selection}\n  condition: {CONDITIONS.get(name, 's')}\n"
            "level: low\n"
        )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=RECORDS)
def test_engine_finds_exactly_the_reference_matches_on_any_array_shape(
    records: list[Any], tmp_path_factory: Any
) -> None:
    from cloudir.analyze.detect import detect
    from cloudir.case import Case

    base = tmp_path_factory.mktemp("arrays")
    rules = base / "rules"
    _write_rules(rules)
    rows = [
        timeline_row(
            "aws:cloudtrail",
            f"2026-11-20T10:00:{n:02d}Z",
            {"eventSource": "ec2.amazonaws.com", "eventName": "RunInstances", "n": n,
             "requestParameters": parameters},
            action="ec2.amazonaws.com:RunInstances",
        )
        for n, parameters in enumerate(records)
    ]  # fmt: skip
    write_timeline(base / "case", rows)
    result = detect(Case.open(base / "case"), [rules], builtin=False)
    engine = {f["title"]: set(f["event_ids"]) for f in result.findings}
    timeline = read_timeline(base / "case")
    for rule in load_rules([rules]):
        expected = {row.event_id for row in timeline if rule_matches(rule, row)}
        assert engine.get(rule.title, set()) == expected, (rule.title, records)
