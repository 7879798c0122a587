"""The build reconcile as a pipeline of named stages (``controllers.builds.STAGES``), each timed by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fake_kube import Clock, FakeKube, build
from longshot import config, metrics
from longshot.controllers import builds as buildsc
from longshot.controllers import executor as ex
from longshot.controllers import manager as managermod
from longshot.core import cleanup

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[3] / "docs"


def ran() -> dict[str, float]:
    return {s: metrics.REGISTRY.get_sample_value("longshot_build_stage_seconds_count", {"stage": s}) or 0.0
            for s in buildsc.BUILD_STAGES}


def wired() -> managermod.Manager:
    fake = FakeKube()
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=Clock(), rand=lambda: 0.5,
                           monotonic=lambda: 0.0)
    m.ctx.preflight = lambda k, b: None
    b = build()
    b["metadata"]["finalizers"] = [cleanup.FINALIZER]
    obj = fake.create(b)
    assert obj is not None
    m.observe("BuildRequest", "ADDED", obj)
    return m


async def test_a_new_build_runs_the_stages_up_to_its_planners_creation_then_writes_its_status_once():
    m = wired()
    before = ran()
    actions = await m.builds.reconcile(("ns", "b"))
    after = ran()
    counted = {s for s in buildsc.BUILD_STAGES if after[s] > before[s]}
    assert counted == {"networkpolicy", "observe", "preflight", "plans", "retention", "ledger", "delegation", "intake",
                       "status"}  # the planner being created counts from the next reconcile on
    creates = [a.manifest["metadata"]["name"] for a in actions if isinstance(a, ex.CreateObject)]
    assert creates == ["b-planner"]
    (write,) = [a for a in actions if isinstance(a, ex.WriteStatus)]
    assert write.kind == "BuildRequest" and write.status["phase"] == "Planning"
    assert isinstance(actions[-1], ex.WriteStatus)  # last


async def test_a_build_without_the_clean_ups_finalizer_is_the_clean_ups_alone():
    fake = FakeKube()
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=Clock(), rand=lambda: 0.5,
                           monotonic=lambda: 0.0)
    obj = fake.create(build())
    assert obj is not None
    m.observe("BuildRequest", "ADDED", obj)
    before = ran()
    actions = await m.builds.reconcile(("ns", "b"))
    after = ran()
    assert {s for s in buildsc.BUILD_STAGES if after[s] > before[s]} == {"cleanup"}
    assert [type(a) for a in actions] == [ex.PatchObject]


def test_every_stage_has_a_name_of_its_own_and_the_metrics_table_lists_them_all():
    assert len(set(buildsc.BUILD_STAGES)) == len(buildsc.BUILD_STAGES)
    row = next(line for line in (DOCS / "merge-queue.md").read_text().splitlines()
               if line.startswith("| `longshot_build_stage_seconds`"))
    listed = re.search(r"BUILD_STAGES`: ([a-z, ]+)\)", row)
    assert listed is not None
    assert tuple(s.strip() for s in listed.group(1).split(",")) == buildsc.BUILD_STAGES


async def test_a_deleted_build_whose_secret_reads_forbidden_lets_go_at_once():
    """Issue 55: deleting a namespace removes the secret-reader RoleBinding with the Secret, so the clean-up reads
    the build's credentials as Forbidden, not missing. It gives up at once (a Warning Event, the finalizer removed)
    instead of backing off for minutes while the namespace stays Terminating."""
    from longshot.runtime import kube as kubemod

    fake = FakeKube()
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=Clock(), rand=lambda: 0.5,
                           monotonic=lambda: 0.0)
    b = build(repository={"url": "https://git.example/r.git", "credentialsSecret": "git-token"})
    b["metadata"]["finalizers"] = [cleanup.FINALIZER]
    b["metadata"]["deletionTimestamp"] = "2026-11-28T00:00:00Z"
    obj = fake.create(b)
    assert obj is not None
    m.observe("BuildRequest", "ADDED", obj)
    fake.fail_next["get_secret"] = [kubemod.Forbidden("Secret ns/git-token")]
    actions = await m.builds.reconcile(("ns", "b"))
    events = [a for a in actions if isinstance(a, ex.RecordEvent)]
    assert [e.reason for e in events] == ["CleanupAbandoned"] and "Forbidden" in events[0].message
    (patch,) = [a for a in actions if isinstance(a, ex.PatchObject)]
    assert cleanup.FINALIZER not in patch.body["metadata"]["finalizers"]
    assert not any(isinstance(a, ex.Requeue) for a in actions)
