from datetime import UTC, datetime, timedelta

import pytest

from longshot.api import conditions

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_is_added_with_transition_time():
    conds, changed = conditions.set_condition([], "Ready", "False", "Pending", "waiting", now=T0,
                                              observed_generation=1)
    assert changed
    assert conds == [{"type": "Ready", "status": "False", "reason": "Pending", "message": "waiting",
                      "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1}]


def test_same_condition_again_is_a_no_op():
    conds, _ = conditions.set_condition([], "Ready", "False", "Pending", "waiting", now=T0)
    again, changed = conditions.set_condition(conds, "Ready", "False", "Pending", "waiting", now=T1)
    assert not changed
    assert again == conds


def test_message_change_keeps_transition_time():
    conds, _ = conditions.set_condition([], "Ready", "False", "Pending", "waiting", now=T0)
    conds2, changed = conditions.set_condition(conds, "Ready", "False", "InProgress", "working", now=T1)
    assert changed
    assert conds2[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert conds2[0]["reason"] == "InProgress"


def test_status_flip_moves_transition_time():
    conds, _ = conditions.set_condition([], "Ready", "False", "Pending", now=T0)
    conds2, changed = conditions.set_condition(conds, "Ready", "True", "Completed", now=T1)
    assert changed
    assert conds2[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"


def test_setter_is_pure_and_keeps_other_conditions():
    original = [{"type": "Planned", "status": "True", "reason": "PlanAccepted", "message": "",
                 "lastTransitionTime": "2025-12-31T00:00:00Z"}]
    snapshot = [dict(c) for c in original]
    conds, _ = conditions.set_condition(original, "Ready", "Unknown", "Pending", now=T0)
    assert original == snapshot
    assert [c["type"] for c in conds] == ["Planned", "Ready"]


def test_unknown_status_or_undocumented_reason_is_refused():
    with pytest.raises(ValueError, match="True, False or Unknown"):
        conditions.set_condition([], "Ready", "Yes", "Pending", now=T0)
    with pytest.raises(ValueError, match="not documented"):
        conditions.set_condition([], "Ready", "True", "BecauseISaidSo", now=T0)


def test_every_type_and_reason_is_documented_in_docs_conditions_md():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "conditions.md").read_text()
    types = {getattr(conditions, n) for n in dir(conditions) if n.isupper() and isinstance(getattr(conditions, n), str)
             and n not in ("TRUE", "FALSE", "UNKNOWN")}
    missing = sorted(t for t in types | set(conditions.REASONS) if f"`{t}`" not in doc)
    assert missing == []
