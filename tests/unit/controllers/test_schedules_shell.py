"""controllers.schedules: the child manifest (a pure builder) and what the shell reads of a child."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from longshot.api import keys, objects
from longshot.controllers import schedules as schedulesc
from longshot.core import schedules

pytestmark = pytest.mark.unit

RUN = datetime(2026, 6, 1, 2, 30, tzinfo=UTC)


def schedule(**metadata: object) -> objects.BuildSchedule:
    return objects.parse({
        "apiVersion": "longshot.dev/v1alpha1", "kind": "BuildSchedule",
        "metadata": {"name": "nightly", "namespace": "team-a", "uid": "u-1",
                     "creationTimestamp": "2026-05-01T00:00:00Z"},
        "spec": {"schedule": "30 2 * * *", "buildTemplate": {"metadata": metadata, "spec": {
            "request": "do it", "repository": {"url": "https://git.example.com/o/r.git", "credentialsSecret": "git"},
            "workers": {"max": 2}}}}}, objects.BuildSchedule)


def test_the_child_is_owned_labelled_annotated_and_the_operator_s_labels_win() -> None:
    s = schedule(labels={"team": "a", schedules.SCHEDULE_LABEL: "someone-else", keys.MANAGED_BY: "me"},
                 annotations={"note": "hi", schedules.SCHEDULED_ANNOTATION: "never"})
    m = schedulesc.manifest(s, schedules.Create(schedules.child_name("nightly", RUN), RUN))
    meta = m["metadata"]
    assert (m["kind"], meta["name"], meta["namespace"]) == ("BuildRequest", schedules.child_name("nightly", RUN),
                                                          "team-a")
    assert meta["labels"] == {"team": "a", schedules.SCHEDULE_LABEL: "nightly", keys.MANAGED_BY: keys.OPERATOR}
    assert meta["annotations"] == {"note": "hi", schedules.SCHEDULED_ANNOTATION: "2026-06-01T02:30:00Z"}
    assert meta["ownerReferences"] == [{"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildSchedule",
                                        "name": "nightly", "uid": "u-1", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert m["spec"] == {"request": "do it", "workers": {"max": 2},
                         "repository": {"url": "https://git.example.com/o/r.git", "credentialsSecret": "git"}}


def test_a_child_is_read_from_its_annotation_phase_and_replacement() -> None:
    now = datetime(2026, 6, 2, tzinfo=UTC)
    body = {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": "c", "namespace": "team-a", "creationTimestamp": "2026-06-01T02:30:05Z",
                         "annotations": {schedules.SCHEDULED_ANNOTATION: "2026-06-01T02:30:00Z"}},
            "spec": {"request": "x", "repository": {"url": "https://git.example.com/o/r.git"}},
            "status": {"phase": "Succeeded", "completionTime": "2026-06-01T03:00:00Z"}}
    child = schedulesc.child_of(objects.parse(body, objects.BuildRequest), now)
    assert child == schedules.Child("c", RUN, "Succeeded", datetime(2026, 6, 1, 3, tzinfo=UTC), False)
    body["metadata"]["annotations"] = {schedules.REPLACED_ANNOTATION: "x"}
    body["status"] = {"phase": "Working"}
    child = schedulesc.child_of(objects.parse(body, objects.BuildRequest), now)
    assert (child.run, child.outcome, child.replaced, child.active) == (
        datetime(2026, 6, 1, 2, 30, 5, tzinfo=UTC), "Active", True, False)
