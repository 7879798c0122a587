"""Issue 29, items 4 and 5, on the real API server: pathological scopes are refused by the API server naming the
field; what gets past the CRD (a planner's handoff) costs only its own build while a build in another namespace
progresses; the merge-side secret scan past its deadline fails only that MergeJob."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import sample_repo
from k8s_builders import build, condition, create, get, list_of, task
from kubelet_double import finish_pod, plan_handoff

from longshot.api import common
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

PLANNER = "demo-planner"
DEEP = "a/" * 1000 + "x.py"  # the scope: RecursionError in the operator-wide select


def api_error(fn: Any) -> str:
    with pytest.raises(kubernetes.client.ApiException) as e:
        fn()
    assert e.value.status == 422, e.value.body
    return str(e.value.body)


def test_the_api_server_refuses_pathological_scopes_naming_the_field(custom: Any, namespace: str) -> None:
    body = api_error(lambda: create(custom, namespace, task("deep", scope=[DEEP])))
    assert "spec.scope[0]" in body and "1024" in body, body
    body = api_error(lambda: create(custom, namespace, task("segments", scope=["a/" * 40 + "x.py"])))
    assert "spec.scope[0]" in body and "should match" in body, body
    body = api_error(lambda: create(custom, namespace,
                                    task("many", scope=[f"f{i}" for i in range(common.MAX_SCOPE_ENTRIES + 1)])))
    assert "spec.scope" in body and "128" in body, body
    ok = create(custom, namespace, task("fine", scope=["/".join(["s"] * common.MAX_SCOPE_SEGMENTS)]))
    assert ok["spec"]["scope"] == ["/".join(["s"] * common.MAX_SCOPE_SEGMENTS)]


@pytest.fixture
def other_namespace(core_v1: Any, namespace: str) -> Iterator[str]:
    name = f"o-{hashlib.sha1(namespace.encode()).hexdigest()[:10]}"
    core_v1.create_namespace({"metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted", "longshot.dev/test": "true"}}})
    yield name
    core_v1.delete_namespace(name)


@pytest.fixture
def operator_two(control_plane: Any, namespace: str, other_namespace: str, operator_env: dict[str, str]
                 ) -> Iterator[object]:
    """The operator watching the test's namespace and another one (two tenants)."""
    from kopf.testing import KopfRunner

    import longshot.controllers  # noqa: F401  (registers the handlers)

    with KopfRunner(["run", "--standalone", "--namespace", namespace, "--namespace", other_namespace,
                     "-m", "longshot.controllers"], timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output


def agent_pods(core: Any, namespace: str) -> set[str]:
    pods = core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/managed-by=longshot-operator")
    return {p.metadata.name for p in pods.items}


def demo(**patch: Any) -> dict[str, Any]:
    b = build("demo", **patch)
    b["spec"]["workers"] = {"max": 10}
    return b


def raw_plan(tasks: list[dict[str, Any]]) -> str:
    """A planner's handoff as an agent may write it (no client-side validation)."""
    return json.dumps({"kind": "Handoff", "protocol": "longshot.dev/handoff-v1", "task": PLANNER, "attempt": 1,
                       "role": "planner", "outcome": "succeeded", "tasks": tasks})


def heavy_scope(tail: str) -> list[str]:
    """A scope at the CRD's bounds whose every entry pair with a like one is disjoint and costs the most."""
    return ["/".join(["x"] * (common.MAX_SCOPE_SEGMENTS - 1) + [f"*.{tail}{i}"])
            for i in range(common.MAX_SCOPE_ENTRIES)]


def test_hostile_plans_cost_only_their_own_build_and_another_tenant_progresses(
        operator_two: object, core_v1: Any, custom: Any, namespace: str, other_namespace: str) -> None:
    create(custom, namespace, demo())
    create(custom, other_namespace, demo())
    for ns in (namespace, other_namespace):
        wait_for(lambda ns=ns: f"{PLANNER}-a1" in agent_pods(core_v1, ns), timeout=60, what=f"planner Pod in {ns}")

    # the hostile tenant's planner: the scope (refused by the handoff parser, naming the field) ...
    finish_pod(core_v1, namespace, f"{PLANNER}-a1",
               message=raw_plan([{"name": "deep", "description": "d", "scope": [DEEP]},
                                 {"name": "deep2", "description": "d", "scope": [DEEP]}]))

    def refused() -> dict[str, Any] | None:
        t = get(custom, namespace, "agenttasks", PLANNER)
        attempts = (t.get("status") or {}).get("attempts") or []
        return t if attempts and attempts[0].get("failureClass") == "InvalidHandoff" else None

    planner = wait_for(refused, timeout=60, what="the planner's attempt failed as InvalidHandoff")
    assert "tasks.0.scope.0" in json.dumps(planner["status"])
    # ... then, in its retry, two tasks at the bounds (accepted) whose scope checks cost the most
    wait_for(lambda: f"{PLANNER}-a2" in agent_pods(core_v1, namespace), timeout=120, what="the planner's retry")
    finish_pod(core_v1, namespace, f"{PLANNER}-a2", message=plan_handoff(PLANNER, [
        {"name": "heavy1", "description": "d", "scope": heavy_scope("a")},
        {"name": "heavy2", "description": "d", "scope": heavy_scope("b")}], attempt=2))

    # the other tenant plans and dispatches all the while
    finish_pod(core_v1, other_namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "models", "description": "Add the models", "scope": ["app/models.py"]},
        {"name": "docs", "description": "Document", "scope": ["README.md"]}]))
    wait_for(lambda: {"demo-models-a1", "demo-docs-a1"} <= agent_pods(core_v1, other_namespace), timeout=60,
             what="the other tenant's worker Pods")
    # the hostile build runs one of its heavy tasks: the other waits (its check answers "overlap" past its budget)
    wait_for(lambda: {"demo-heavy1-a1", "demo-heavy2-a1"} & agent_pods(core_v1, namespace), timeout=60,
             what="a worker Pod of the hostile build")
    pods = agent_pods(core_v1, namespace)
    assert len({"demo-heavy1-a1", "demo-heavy2-a1"} & pods) == 1, pods
    for ns in (namespace, other_namespace):
        b = get(custom, ns, "buildrequests", "demo")
        assert (condition(b, "Stalled") or {}).get("reason") != "DispatchFailed", b["status"]


def test_a_build_whose_part_of_the_dispatch_plan_raises_gets_dispatch_failed_and_the_other_tenant_dispatches(
        operator_two: object, core_v1: Any, custom: Any, namespace: str, other_namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever raises in one build's part of the plan (here the scope check, made to raise for that build's
    scopes as the recursive check did on the issue's plan, in the operator under test) costs only that build:
    the real BuildRequest gets Stalled=True/DispatchFailed naming the error class, the other tenant's tasks
    start, and the condition clears once the plan reads the build again without an error."""
    from longshot.core import scheduler

    check = scheduler._Taken.blocks  # (the scope checks of a candidate against a build's running tasks)

    def poisoned(self: Any, scope: tuple[str, ...], group: str, spent: int) -> tuple[bool, int, bool]:
        taken = [e for s, _ in (*self.literal, *self.other) for e in s]
        if any(e.startswith("poison/") for e in (*scope, *taken)):
            raise RecursionError("maximum recursion depth exceeded")
        return check(self, scope, group, spent)

    monkeypatch.setattr(scheduler._Taken, "blocks", poisoned)
    create(custom, namespace, demo())
    create(custom, other_namespace, demo())
    for ns in (namespace, other_namespace):
        wait_for(lambda ns=ns: f"{PLANNER}-a1" in agent_pods(core_v1, ns), timeout=60, what=f"planner Pod in {ns}")
    finish_pod(core_v1, namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "p1", "description": "d", "scope": ["poison/a"]},
        {"name": "p2", "description": "d", "scope": ["poison/b"]}]))
    finish_pod(core_v1, other_namespace, f"{PLANNER}-a1", message=plan_handoff(PLANNER, [
        {"name": "models", "description": "Add the models", "scope": ["app/models.py"]},
        {"name": "docs", "description": "Document", "scope": ["README.md"]}]))

    def stalled() -> dict[str, Any] | None:
        b = get(custom, namespace, "buildrequests", "demo")
        c = condition(b, "Stalled") or {}
        return b if (c.get("status"), c.get("reason")) == ("True", "DispatchFailed") else None

    b = wait_for(stalled, timeout=90, what="Stalled=True/DispatchFailed on the hostile build")
    message = condition(b, "Stalled")["message"]
    assert "(RecursionError)" in message and "Traceback" not in message, message
    assert condition(b, "Ready")["reason"] == "DispatchFailed"
    wait_for(lambda: {"demo-models-a1", "demo-docs-a1"} <= agent_pods(core_v1, other_namespace), timeout=60,
             what="the other tenant's worker Pods")
    # the dispatcher plans as soon as anything changes: the plan's first task may be planned alone, before its
    # sibling exists, where no scope is compared and nothing raises; the two are never both admitted, since every
    # plan that holds both raises for this build
    assert len({"demo-p1-a1", "demo-p2-a1"} & agent_pods(core_v1, namespace)) <= 1
    other = get(custom, other_namespace, "buildrequests", "demo")
    assert (condition(other, "Stalled") or {}).get("reason") != "DispatchFailed"
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=demo").items
    assert any(e.reason == "DispatchFailed" for e in events)

    monkeypatch.setattr(scheduler._Taken, "blocks", check)  # the bad data is gone (a fix, a cancel)
    finish_pod(core_v1, other_namespace, "demo-docs-a1", exit_code=1, reason="Error")  # a change: a new plan
    wait_for(lambda: {"demo-p1-a1"} & agent_pods(core_v1, namespace), timeout=90, what="the healed build's Pod")
    wait_for(lambda: (condition(get(custom, namespace, "buildrequests", "demo"), "Stalled") or {}).get("reason")
             != "DispatchFailed", timeout=60, what="DispatchFailed cleared")


# --- the merge side ----------------------------------------------------------------------------------------

TEST = "python -m pytest -q tests"
BIG_MB = 80


@pytest.fixture
def operator_env(operator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A 250 ms limit on the merge queue's secret scan of one branch (the default is 90 s). The 80 MiB branch takes
    far longer than that (1.1 s here when idle; load only slows it), and the one-file branch far less (5 ms here when
    idle: its git processes). A 10 ms limit was too close to the small branch's cost: on a loaded machine its scan
    timed out too (CI, 2026-11-25)."""
    monkeypatch.setenv("LONGSHOT_SCAN_TIMEOUT_SECONDS", "0.25")
    return {**operator_env, "LONGSHOT_SCAN_TIMEOUT_SECONDS": "0.25"}


@pytest.mark.timeout(900)  # a whole delivery (planner, two workers, a 40 MiB push) on a busy machine
def test_a_scan_past_its_deadline_fails_only_that_merge_job_and_a_fixer_gets_it(
        operator: object, kubelet: object, core_v1: Any, custom: Any, namespace: str, tmp_path: Any) -> None:
    url = sample_repo.make(tmp_path)
    generate = (f"python3 -c \"open('data/anchors.txt', 'w').write(('sk-' * 341 + chr(10)) * {BIG_MB} * 1024)\"")
    script = {
        "roles": {"planner": [{"finish": {"summary": "two", "tasks": [
            {"name": "big", "description": "Add a big data file", "scope": ["data"]},
            {"name": "small", "description": "Add a note", "scope": ["NOTES.md"]}]}}]},
        "tasks": {
            "big": [{"run": {"command": "mkdir -p data"}}, {"run": {"command": generate, "check": True}},
                    {"write": {"path": "settings.yaml", "content": "token" * 800 + "\n"}},  # the line
                    {"finish": "data"}],
            "small": [{"write": {"path": "NOTES.md", "content": "notes\n"}}, {"finish": "note"}],
            "demo-big-fix": [{"finish": "nothing to do"}]}}
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "script"},
                                                     "data": {"script.yaml": json.dumps(script)}})
    b = build("demo", repository__url=url)
    b["spec"].update({"agent": {"backend": "scripted", "script": {"name": "script"}},
                      "qualityGate": {"profile": "minimal", "testCommand": TEST}, "workers": {"max": 4}})
    create(custom, namespace, b)

    def job(name: str, predicate: Any) -> dict[str, Any] | None:
        try:
            j = get(custom, namespace, "mergejobs", name)
        except kubernetes.client.ApiException:
            return None
        return j if predicate(j) else None

    timed_out = wait_for(lambda: job("demo-big", lambda j: (condition(j, "ChecksPassed") or {}).get("reason")
                                     == "ScanTimedOut"), timeout=600, what="demo-big ChecksPassed=False/ScanTimedOut")
    assert condition(timed_out, "ChecksPassed")["status"] == "False"
    assert "did not finish within 0.25s" in condition(timed_out, "ChecksPassed")["message"]
    merged = wait_for(lambda: job("demo-small", lambda j: (j.get("status") or {}).get("phase") == "Merged"),
                      timeout=300, what="demo-small Merged")
    assert merged["status"]["phase"] == "Merged"
    fixer = wait_for(lambda: next((t for t in list_of(custom, namespace, "agenttasks")
                                   if t["metadata"]["name"] == "demo-big-fix"), None), timeout=60,
                     what="the fixer of demo-big")
    assert "did not finish within 0.25s" in fixer["spec"]["description"]
