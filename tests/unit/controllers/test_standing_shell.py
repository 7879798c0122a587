"""The standing intake's shell (controllers/standing.py) against the in-memory API, the tracker replaced by a
function: an intake never gets a planner, its children are created once with their issues recorded, finished
children are commented and closed, and the status says what it saw."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

import driving
from fake_kube import Clock, FakeKube, build
from longshot import config
from longshot.controllers import manager as managermod
from longshot.controllers import standing as standingc
from longshot.core import standing
from longshot.runtime import trackers

pytestmark = pytest.mark.unit

INTAKE = {"tracker": {"provider": "github", "repository": "org/app"}, "labels": ["longshot"], "pollSeconds": 30,
          "maxActiveBuilds": 2}


def issue(n: int, *labels: str, author: str = "alice", writer: bool = True) -> trackers.Issue:
    return trackers.Issue(n, f"Issue {n}", f"body {n}", labels or ("longshot",), f"https://x/{n}", author=author,
                          author_writer=writer)


class MergingKube(FakeKube):
    """Metadata patches merge into labels and annotations, as the API server's merge patch does (the shared fake
    replaces them)."""

    def patch(self, kind: str, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        o = self.objects.get((kind, namespace, name))
        meta = dict(body.get("metadata") or {})
        if o is not None:
            for k in ("labels", "annotations"):
                if k in meta:
                    meta[k] = {**(o["metadata"].get(k) or {}), **meta[k]}
        return super().patch(kind, namespace, name, {**body, **({"metadata": meta} if meta else {})})


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Any:
    fake = MergingKube()
    clock = Clock()
    m = managermod.Manager(fake, config.Settings(namespace="ops", metrics_port=0), clock=clock, rand=lambda: 0.5,
                           monotonic=lambda: 0.0)
    m.ctx.preflight = lambda k, b: None
    reconcile = m.reconcilers["BuildRequest"]

    async def nothing() -> list[Any]:
        return []

    # only the intakes are reconciled: the children's phases are the test's to set
    m.reconcilers = {**m.reconcilers, "BuildRequest": lambda ns, n: reconcile(ns, n) if n == "intake" else nothing()}
    listed: list[trackers.Issue] = []
    polls: list[str] = []
    acted: list[tuple[str, int, str]] = []

    def poll(k: Any, b: Any, guard: Any = None, **_: Any) -> list[trackers.Issue]:
        polls.append(b.name)
        return list(listed)

    def act(k: Any, b: Any, comments: Any, closes: Any, guard: Any = None, **_: Any) -> Any:
        acted.extend((c.kind, c.issue, c.build) for c in comments)
        acted.extend(("close", x.issue, x.build) for x in closes)
        return list(comments), list(closes), None

    monkeypatch.setattr(standingc, "poll", poll)
    monkeypatch.setattr(standingc, "act", act)

    async def sync() -> None:
        for _ in range(20):
            for (kind, _, _), obj in list(fake.objects.items()):
                m.observe(kind, "MODIFIED", obj)
            await driving.step(m)
            if not m.queue.pending() or all(
                    q.next_due() is not None and not len(q) for q in m.queue.by_kind.values()):
                break

    return fake, m, clock, sync, listed, polls, acted


def brs(fake: FakeKube) -> dict[str, dict[str, Any]]:
    return {n: o for (k, _, n), o in fake.objects.items() if k == "BuildRequest"}


async def test_an_intake_starts_a_child_per_issue_and_never_plans_itself(world: Any) -> None:
    fake, m, clock, sync, listed, polls, acted = world
    listed += [issue(1), issue(2), issue(3), issue(4, "other")]
    fake.create(build("intake", intake=INTAKE, workers={"max": 7}))
    await sync()
    objs = brs(fake)
    assert set(objs) == {"intake", "intake-i1", "intake-i2"}  # maxActiveBuilds 2; 4 is not eligible
    assert not [k for k in fake.objects if k[0] == "AgentTask" and k[2].startswith("intake-planner")]
    child = objs["intake-i1"]
    assert child["metadata"]["annotations"]["longshot.dev/intake-issues"] == "1"
    assert child["metadata"]["labels"]["longshot.dev/intake"] == "intake"
    assert child["metadata"]["ownerReferences"][0]["name"] == "intake"
    assert "intake" not in child["spec"]
    assert child["spec"]["request"].startswith('do it\n\n<untrusted-input source="issue #1 by alice">\n')
    assert "\nIssue 1\n\nbody 1\n</untrusted-input>\n\n(Issue #1: https://x/1)" in child["spec"]["request"]
    assert child["spec"]["workers"] == {"max": 7}  # the template, without the defaults (the server adds them)
    st = objs["intake"]["status"]
    assert st["intake"]["started"] == 2 and st["intake"]["waiting"] == 1 and st["intake"]["eligible"] == 3
    assert st["intake"]["lastPoll"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Watching")
    assert ("started", 1, "intake-i1") in acted and ("started", 2, "intake-i2") in acted
    assert fake.objects[("BuildRequest", "ns", "intake-i1")]["metadata"]["annotations"][
        "longshot.dev/intake-started"] == "true"
    before = len(polls)

    # a child succeeds: it is commented on and its issue closed at once (no poll needed), the slot is taken at the
    # next poll
    fake.patch_status("BuildRequest", "ns", "intake-i1", {"phase": "Succeeded"})
    await sync()
    assert ("finished", 1, "intake-i1") in acted and ("close", 1, "intake-i1") in acted
    assert len(polls) == before
    assert "intake-i3" not in brs(fake)
    clock.now += timedelta(seconds=31)
    m.queue.add(("BuildRequest", "ns", "intake"))
    await sync()
    assert len(polls) == before + 1 and "intake-i3" in brs(fake)
    assert sorted(n for n in brs(fake) if n != "intake") == ["intake-i1", "intake-i2", "intake-i3"]


async def test_a_webhook_delivery_polls_at_once(world: Any) -> None:
    fake, m, _, sync, listed, polls, _ = world
    fake.secrets[("ns", "hook")] = {"token": "s"}
    fake.create(build("intake", intake={**INTAKE, "webhook": {"name": "hook"}}))
    fake.create(build("plain", intake=INTAKE))
    await sync()
    n = len(polls)
    listed.append(issue(7))
    seen: list[Any] = []
    bad = standingc.delivery(m.ctx, seen.append, "/intake/ns/intake", {"X-Gitlab-Token": "bad"}, b"")
    # the same answer for an intake that does not exist, one without a webhook Secret and a bad signature
    assert bad == standing.REFUSED_DELIVERY == (401, "no such intake, or a bad signature")
    assert standingc.delivery(m.ctx, seen.append, "/intake/ns/nope", {"X-Gitlab-Token": "s"}, b"") == bad
    assert standingc.delivery(m.ctx, seen.append, "/intake/ns/plain", {"X-Gitlab-Token": "s"}, b"") == bad
    assert standingc.delivery(m.ctx, seen.append, "/intake/NS/..", {"X-Gitlab-Token": "s"}, b"") == bad
    assert standingc.delivery(m.ctx, seen.append, "/intake/ns/intake", {"X-Gitlab-Token": "s"}, b"")[0] == 202
    assert seen == [("ns", "intake")]
    # recorded on the intake: the replica that holds its shard polls (here: no local poke needed)
    assert brs(fake)["intake"]["metadata"]["annotations"]["longshot.dev/intake-poll"]
    await sync()
    assert len(polls) == n + 1 and "intake-i7" in brs(fake)
    await sync()
    assert len(polls) == n + 1  # once per delivery


async def test_a_missing_secret_names_the_field(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, _, _, sync, *_ = world
    monkeypatch.setattr(standingc, "poll", lambda k, b, guard=None: standingc.client(k, b))
    fake.create(build("intake", intake={**INTAKE, "tracker": {**INTAKE["tracker"], "credentialsSecret": "gone"}}))
    await sync()
    st = brs(fake)["intake"]["status"]
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Configuration")
    assert "spec.intake.tracker.credentialsSecret" in ready["message"]
    assert next(c for c in st["conditions"] if c["type"] == "Stalled")["status"] == "True"
    assert set(brs(fake)) == {"intake"}


async def test_a_suspended_intake_starts_nothing_and_its_children_are_not_suspended(world: Any) -> None:
    fake, _, _, sync, listed, polls, _ = world
    listed += [issue(1)]
    fake.create(build("intake", intake=INTAKE, suspend=True))
    await sync()
    assert set(brs(fake)) == {"intake"} and polls
    assert "suspended" in next(c for c in brs(fake)["intake"]["status"]["conditions"] if c["type"] == "Ready")[
        "message"]
    fake.patch("BuildRequest", "ns", "intake", {"spec": {"suspend": False}})
    await sync()
    assert set(brs(fake)) == {"intake", "intake-i1"}
    assert "suspend" not in brs(fake)["intake-i1"]["spec"]


async def test_a_strangers_issue_starts_nothing_and_children_share_the_intake_budget(world: Any) -> None:
    fake, _, _, sync, listed, _, _ = world
    listed += [issue(1), issue(2, author="mallory", writer=False), issue(3), issue(4)]
    intake = {**INTAKE, "maxActiveBuilds": 5, "budget": {"maxTokens": 10_000}}
    fake.create(build("intake", intake=intake, budget={"maxTokens": 6000}))
    await sync()
    objs = brs(fake)
    assert set(objs) == {"intake", "intake-i1", "intake-i3"}
    assert objs["intake-i1"]["spec"]["budget"] == {"maxTokens": 6000}
    assert objs["intake-i3"]["spec"]["budget"] == {"maxTokens": 4000}
    ready = {c["type"]: c for c in objs["intake"]["status"]["conditions"]}["Ready"]
    assert "spec.intake.budget" in ready["message"] and objs["intake"]["status"]["intake"]["eligible"] == 3
