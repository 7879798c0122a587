"""BuildSchedules on the real API server (docs/schedules.md): a run at its time makes one child BuildRequest owned by
the schedule, ``Forbid`` holds the next run while a child is active, ``Replace`` cancels the active child, history
limits delete old children, a restarted or second replica never makes a run twice, the children go with the
schedule (garbage collection by the real kube-controller-manager), and a spec that cannot run is a condition.

The runs are driven with the operator's own controllers on an injected clock (``tests/driving.py``: the path the
workers take) so no test waits for a real minute; the last tests run the whole operator (kopf, leadership) against
the same API server for what needs no clock.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from k8s_builders import GROUP, VERSION, build, condition, create, get, list_of, schedule, task

import driving
from longshot import config
from longshot.controllers import manager as managermod
from longshot.core import schedules
from longshot.runtime import kube
from longshot_testing import wait_for

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def children(custom: Any, namespace: str) -> dict[str, dict[str, Any]]:
    return {b["metadata"]["name"]: b for b in list_of(custom, namespace, "buildrequests")
            if b["metadata"].get("labels", {}).get(schedules.SCHEDULE_LABEL)}


def next_five_minutes(t: datetime) -> datetime:
    """The first ``*/5`` run after ``t``."""
    t = t.replace(second=0, microsecond=0)
    return t + timedelta(minutes=5 - t.minute % 5)


class Replica:
    """The operator's manager on a real API server, its clock injected, fed what a watch would deliver."""

    def __init__(self, api_client: Any, custom: Any, namespace: str, clock: Clock) -> None:
        self.custom, self.namespace = custom, namespace
        self.m = managermod.Manager(kube.Kube(api_client), config.Settings(namespace=namespace, metrics_port=0),
                                    clock=clock)

    async def turn(self) -> None:
        """Deliver the namespace's objects as a watch would, then the schedule controller's due reconciles."""
        for plural, kind in (("buildschedules", "BuildSchedule"), ("buildrequests", "BuildRequest"),
                             ("agenttasks", "AgentTask")):
            for obj in list_of(self.custom, self.namespace, plural):
                self.m.observe(kind, "MODIFIED", obj)
        await driving.drain(self.m.controllers["BuildSchedule"])


def finish(custom: Any, namespace: str, name: str, phase: str, at: datetime) -> None:
    custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, "buildrequests", name, {"status": {
        "phase": phase, "completionTime": at.isoformat().replace("+00:00", "Z")}})


async def test_a_scheduled_build_runs_at_its_time_and_honours_forbid(api_client, custom, namespace):
    sched = create(custom, namespace, schedule("nightly", concurrencyPolicy="Forbid", successfulBuildsHistoryLimit=1,
                                               buildTemplate__metadata={"labels": {"team": "platform"}}))
    created = datetime.fromisoformat(sched["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    first = next_five_minutes(created)
    clock = Clock(first - timedelta(seconds=30))
    replica = Replica(api_client, custom, namespace, clock)

    await replica.turn()  # before its time: nothing, and the status says when
    assert children(custom, namespace) == {}
    st = get(custom, namespace, "buildschedules", "nightly")["status"]
    assert st["nextScheduleTime"] == first.isoformat().replace("+00:00", "Z")
    assert condition(get(custom, namespace, "buildschedules", "nightly"), "Ready")["reason"] == "Scheduled"

    clock.now = first + timedelta(seconds=1)
    await replica.turn()  # its time: one child, named from the run, owned by the schedule
    name1 = schedules.child_name("nightly", first)
    kids = children(custom, namespace)
    assert list(kids) == [name1]
    child = kids[name1]
    owner = child["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "BuildSchedule", "nightly", sched["metadata"]["uid"], True)
    assert child["metadata"]["labels"]["team"] == "platform"
    assert child["metadata"]["annotations"][schedules.SCHEDULED_ANNOTATION] == first.isoformat().replace("+00:00", "Z")
    assert child["spec"]["request"] == build()["spec"]["request"] and child["spec"]["workers"] == {"max": 4}
    st = get(custom, namespace, "buildschedules", "nightly")["status"]
    assert st["active"] == [{"name": name1}] and st["lastScheduleTime"] == child["metadata"]["annotations"][
        schedules.SCHEDULED_ANNOTATION]

    second = first + timedelta(minutes=5)
    clock.now = second + timedelta(seconds=1)
    await replica.turn()  # Forbid: the child is active, the next run waits
    assert list(children(custom, namespace)) == [name1]
    ready = condition(get(custom, namespace, "buildschedules", "nightly"), "Ready")
    assert ready["reason"] == "Scheduled" and f"waits for {name1}" in ready["message"]

    finish(custom, namespace, name1, "Succeeded", clock.now)
    clock.now += timedelta(seconds=5)
    await replica.turn()  # the child ended: the waiting run starts now (no starting deadline: it may be late)
    name2 = schedules.child_name("nightly", second)
    assert sorted(children(custom, namespace)) == sorted([name1, name2])
    st = get(custom, namespace, "buildschedules", "nightly")["status"]
    assert st["active"] == [{"name": name2}] and st["lastSuccessfulTime"].startswith(clock.now.strftime("%Y-%m-%d"))

    finish(custom, namespace, name2, "Succeeded", clock.now)
    await replica.turn()  # successfulBuildsHistoryLimit 1: the older success goes
    wait_for(lambda: list(children(custom, namespace)) == [name2], timeout=30, what="the oldest child deleted")

    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "buildschedules", "nightly")
    wait_for(lambda: children(custom, namespace) == {}, timeout=60,
             what="the children garbage-collected with their schedule")


async def test_a_restarted_or_second_replica_never_makes_a_run_twice(api_client, custom, namespace):
    sched = create(custom, namespace, schedule("hourly", schedule="@hourly"))
    created = datetime.fromisoformat(sched["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    run = created.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    clock = Clock(run + timedelta(seconds=2))
    a, b = Replica(api_client, custom, namespace, clock), Replica(api_client, custom, namespace, clock)
    b.m.observe("BuildSchedule", "ADDED", sched)  # b saw the schedule before a made the child, and nothing since
    await a.turn()
    assert list(children(custom, namespace)) == [schedules.child_name("hourly", run)]
    await driving.drain(b.m.controllers["BuildSchedule"])  # decides the same run: AlreadyExists, nothing new
    await b.turn()
    restarted = Replica(api_client, custom, namespace, clock)
    await restarted.turn()
    assert list(children(custom, namespace)) == [schedules.child_name("hourly", run)]


async def test_replace_cancels_the_active_child_as_a_person_does_and_starts_the_next(api_client, custom, namespace):
    sched = create(custom, namespace, schedule("rolling", concurrencyPolicy="Replace"))
    created = datetime.fromisoformat(sched["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    first = next_five_minutes(created)
    clock = Clock(first + timedelta(seconds=1))
    replica = Replica(api_client, custom, namespace, clock)
    await replica.turn()
    old = schedules.child_name("rolling", first)
    work = task("rolling-work", buildRef={"name": old})
    create(custom, namespace, work)

    clock.now = first + timedelta(minutes=5, seconds=1)
    await replica.turn()
    new = schedules.child_name("rolling", first + timedelta(minutes=5))
    kids = children(custom, namespace)
    assert sorted(kids) == sorted([old, new])
    assert kids[old]["spec"]["suspend"] is True
    assert schedules.REPLACED_ANNOTATION in kids[old]["metadata"]["annotations"]
    assert get(custom, namespace, "agenttasks", "rolling-work")["spec"]["cancel"] is True
    assert kids[new]["spec"]["suspend"] is False
    assert get(custom, namespace, "buildschedules", "rolling")["status"]["active"] == [{"name": new}]


async def test_a_child_the_api_server_refuses_is_a_condition_with_its_answer(api_client, kubectl, custom,
                                                                           namespace):
    """An admission policy (here a small one; in an installation the chart's egress, image or RuntimeClass policies)
    refuses the child: the schedule says so, and makes it once the template is fixed."""
    policy = f"no-blocked-team-{namespace[-6:]}"
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": policy},
         "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
             "apiGroups": ["longshot.dev"], "apiVersions": ["*"], "operations": ["CREATE"],
             "resources": ["buildrequests"]}]},
             "validations": [{"expression": "!has(object.metadata.labels) || !('team' in object.metadata.labels) "
                                            "|| object.metadata.labels['team'] != 'blocked'",
                              "message": "team blocked may not build"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": policy},
         "spec": {"policyName": policy, "validationActions": ["Deny"], "matchResources": {"namespaceSelector": {
             "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}}]}))
    try:
        probe = {**build("probe"), "metadata": {"name": "probe", "labels": {"team": "blocked"}}}
        wait_for(lambda: kubectl("-n", namespace, "create", "--dry-run=server", "-f", "-", input=json.dumps(probe),
                                 check=False).returncode != 0, timeout=30, what="the policy to take effect")
        sched = create(custom, namespace, schedule("blocked", buildTemplate__metadata={"labels": {"team": "blocked"}}))
        created = datetime.fromisoformat(sched["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        clock = Clock(next_five_minutes(created) + timedelta(seconds=1))
        replica = Replica(api_client, custom, namespace, clock)
        await replica.turn()
        assert children(custom, namespace) == {}
        got = get(custom, namespace, "buildschedules", "blocked")
        ready, stalled = condition(got, "Ready"), condition(got, "Stalled")
        assert (ready["status"], ready["reason"], stalled["status"]) == ("False", "ChildRefused", "True")
        assert "team blocked may not build" in ready["message"] and "spec.buildTemplate" in ready["message"]
        assert "lastScheduleTime" not in got["status"] and got["status"]["active"] == []

        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "buildschedules", "blocked", {
            "spec": {"buildTemplate": {"metadata": {"labels": {"team": "platform"}}}}})
        await replica.turn()  # the edit: the same run's child is made now
        assert list(children(custom, namespace)) == [schedules.child_name("blocked", next_five_minutes(created))]
        assert condition(get(custom, namespace, "buildschedules", "blocked"), "Ready")["reason"] == "Scheduled"
    finally:
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy, "--wait=false",
                check=False)


def test_the_operator_reports_the_next_run_and_a_spec_that_cannot_run(operator, kubectl, custom, namespace):
    """The whole operator (kopf's watch, leadership, the controller's workers) on the real clock."""
    create(custom, namespace, schedule("daily", schedule="@daily", timeZone="Asia/Kolkata"))
    create(custom, namespace, schedule("mars", timeZone="Mars/Olympus_Mons"))
    create(custom, namespace, schedule("minute-61", schedule="61 * * * *"))

    def ready(name: str) -> dict[str, Any] | None:
        c = condition(get(custom, namespace, "buildschedules", name), "Ready")
        return c if c is not None and c["reason"] != "Pending" else None

    daily = wait_for(lambda: ready("daily"), timeout=60, what="the daily schedule's Ready")
    assert (daily["status"], daily["reason"]) == ("True", "Scheduled")
    nxt = datetime.fromisoformat(get(custom, namespace, "buildschedules", "daily")["status"]["nextScheduleTime"]
                                 .replace("Z", "+00:00"))
    assert (nxt.hour, nxt.minute) == (18, 30) and nxt > datetime.now(UTC)  # midnight in Kolkata is 18:30 UTC
    for name, reason, field in (("mars", "UnknownTimeZone", "spec.timeZone"),
                                ("minute-61", "InvalidSchedule", "spec.schedule")):
        got = wait_for(lambda n=name: ready(n), timeout=60, what=f"{name}'s Ready")
        assert (got["status"], got["reason"]) == ("False", reason) and field in got["message"]
        stalled = condition(get(custom, namespace, "buildschedules", name), "Stalled")
        assert (stalled["status"], stalled["reason"]) == ("True", reason)
    line = next(ln for ln in kubectl("get", "bs", "-n", namespace).stdout.splitlines() if ln.startswith("daily"))
    assert nxt.strftime("%Y-%m-%dT18:30:00Z") in line
    assert children(custom, namespace) == {}
