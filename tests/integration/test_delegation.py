"""Delegation (issue 32) on the real API server: a worker's agent spawns child tasks through longshot-gateway and
awaits them; the operator creates the children, they run (process kubelet: the real runner, scripted backend) and
merge through the merge queue before their parent; spawns past the limits are refused with a reason the agent reads.
The gateway's routes are tested with real Pod-bound tokens."""

from __future__ import annotations

import subprocess

import httpx
import pytest
import sample_repo
from gateway_attempts import make_attempt
from k8s_builders import condition, create, dump, get, list_of
from test_delivery import delivery_build, finalized, script_configmap

from longshot.agent import delegation as agent_delegation
from longshot.agent import errors as agent_errors
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

ON = {"delegation": {"enabled": True, "maxChildren": 3}}


def unit_test(name: str) -> str:
    return (f"import unittest\n\nfrom calc.{name} import {name}\n\n\nclass T(unittest.TestCase):\n"
            f"    def test_it(self):\n        self.assertEqual({name}(), '{name}')\n")


def module(name: str) -> str:
    return f"def {name}():\n    return '{name}'\n"


def writes(name: str) -> list[dict]:
    return [{"write": {"path": f"calc/{name}.py", "content": module(name)}},
            {"write": {"path": f"tests/test_{name}.py", "content": unit_test(name)}}]


def script(children: list[str]) -> dict:
    return {
        "roles": {"planner": [{"finish": {"summary": "one task", "tasks": [
            {"name": "parent", "description": "Add parent() and delegate the rest", "scope": ["calc/parent.py"]}]}}]},
        "tasks": {
            "parent": [
                *({"spawn": {"name": c, "prompt": f"Add calc/{c}.py with {c}() and its test",
                             "scope": [f"calc/{c}.py", f"tests/test_{c}.py"]}, "check": True} for c in children),
                {"await": {"names": children, "timeout": 300}, "check": True},
                *writes("parent"),
                {"finish": "parent() on top of the children"}],
            **{f"parent-{c}": [*writes(c), {"finish": f"{c}()"}] for c in children},
        },
    }


def first_commit_touching(url: str, branch: str = "main") -> dict[str, int]:
    """For each file: the position (oldest first) of the first commit on ``branch`` that touched it."""
    out = subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "log", "--reverse", "--name-only",
                          "--format=@%H", branch], check=True, capture_output=True, text=True).stdout
    seen: dict[str, int] = {}
    n = -1
    for line in out.splitlines():
        if line.startswith("@"):
            n += 1
        elif line.strip():
            seen.setdefault(line.strip(), n)
    return seen


def test_a_worker_delegates_two_children_that_merge_before_it(operator, kubelet, core_v1, custom, namespace,
                                                              tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, script(["alpha", "beta"]))
    create(custom, namespace, delivery_build(url, workers={"max": 6}, **ON))

    b = finalized(custom, namespace, timeout=240)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    parent = get(custom, namespace, "agenttasks", "demo-parent")
    kids = {c["name"]: c for c in parent["status"]["children"]}
    assert set(kids) == {"alpha", "beta"}
    for name, c in kids.items():
        assert (c["task"], c["phase"], c["done"], c["merged"]) == (f"demo-parent-{name}", "Succeeded", True, True)
        child = get(custom, namespace, "agenttasks", c["task"])
        assert child["metadata"]["labels"]["longshot.dev/parent"] == "demo-parent"
        assert child["metadata"]["annotations"]["longshot.dev/delegation-depth"] == "1"
        assert child["metadata"]["ownerReferences"][0]["kind"] == "BuildRequest"
    assert [r["name"] for r in parent["status"]["delegation"]["requests"]] == ["alpha", "beta"]
    order = first_commit_touching(url)
    assert order["calc/alpha.py"] < order["calc/parent.py"] and order["calc/beta.py"] < order["calc/parent.py"]
    workers = {t["metadata"]["name"]: t["status"]["phase"] for t in list_of(custom, namespace, "agenttasks")
               if t["spec"]["role"] == "worker"}
    assert workers == {"demo-parent": "Succeeded", "demo-parent-alpha": "Succeeded", "demo-parent-beta": "Succeeded"}


def test_a_spawn_past_max_total_tasks_is_refused_with_a_reason_the_agent_reads(operator, kubelet, core_v1, custom,
                                                                             namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, script(["alpha", "beta"]))
    # the planner and the parent are two tasks: one child more fits, the second is refused
    create(custom, namespace, delivery_build(url, workers={"max": 6}, planner={"maxTotalTasks": 3}, **ON))

    b = finalized(custom, namespace, timeout=240)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    kids = {c["name"]: c for c in get(custom, namespace, "agenttasks", "demo-parent")["status"]["children"]}
    assert kids["alpha"]["merged"] is True
    assert kids["beta"]["phase"] == "Refused" and kids["beta"]["done"] is True
    assert "spec.planner.maxTotalTasks (3)" in kids["beta"]["reason"]
    assert "task" not in kids["beta"]
    with pytest.raises(Exception, match="Not Found"):
        get(custom, namespace, "agenttasks", "demo-parent-beta")


# --- the gateway's routes, with real Pod-bound tokens -------------------------------------------------


@pytest.fixture
def attempt(gateway, core_v1, custom, namespace):
    return lambda **kw: make_attempt(core_v1, custom, namespace, gateway.url, **kw)


def test_the_gateway_refuses_a_spawn_when_delegation_is_off_naming_the_field(gateway, attempt, custom, namespace):
    a = attempt()
    r = httpx.post(f"{gateway.url}/delegation/spawn", json={"tasks": [{"name": "x", "prompt": "p"}]},
                   headers=a.headers, timeout=30)
    assert r.status_code == 403 and "spec.delegation.enabled" in r.json()["error"]
    assert "delegation" not in (get(custom, namespace, "agenttasks", a.name).get("status") or {})
    client = agent_delegation.Client(gateway.url, lambda: a.token)
    with pytest.raises(agent_errors.ToolError, match=r"spec\.delegation\.enabled"):
        agent_delegation.spawn(client, {"name": "x", "prompt": "p"})


def test_the_gateway_records_a_spawn_on_the_callers_own_task_and_bounds_it(gateway, attempt, custom, namespace):
    a = attempt(build_spec=ON)
    client = agent_delegation.Client(gateway.url, lambda: a.token)
    agent_delegation.spawn(client, {"name": "api", "prompt": "Add the API", "scope": ["api/**"]})
    agent_delegation.spawn(client, {"name": "api", "prompt": "Add the API"})  # the same child again: no change
    requests = get(custom, namespace, "agenttasks", a.name)["status"]["delegation"]["requests"]
    assert requests == [{"name": "api", "prompt": "Add the API", "scope": ["api/**"], "attempt": 1}]
    assert client.children() == {"children": [], "requested": ["api"]}

    def spawn(body):
        return httpx.post(f"{gateway.url}/delegation/spawn", json=body, headers=a.headers, timeout=30)

    assert spawn({"tasks": [{"name": "Bad_Name", "prompt": "p"}]}).status_code == 400
    r = spawn({"tasks": [{"name": "big", "prompt": "x" * (16 * 1024 + 1)}]})
    assert r.status_code == 400 and "16384" in r.json()["error"]
    r = spawn({"tasks": [{"name": "api", "prompt": "something else"}]})
    assert r.status_code == 409 and "another prompt" in r.json()["error"]
    r = spawn({"tasks": [{"name": f"c{i}", "prompt": "p"} for i in range(4)]})
    assert r.status_code == 400 and "maxChildren is 3" in r.json()["error"]
    assert spawn({"tasks": [{"name": "b", "prompt": "p"}, {"name": "c", "prompt": "p"}]}).status_code == 202
    r = spawn({"tasks": [{"name": "d", "prompt": "p"}]})
    assert r.status_code == 403 and "spec.delegation.maxChildren (3)" in r.json()["error"]
    assert httpx.get(f"{gateway.url}/delegation/children", timeout=30).status_code == 401
    names = [r["name"] for r in get(custom, namespace, "agenttasks", a.name)["status"]["delegation"]["requests"]]
    assert names == ["api", "b", "c"]


def test_a_task_past_max_depth_or_not_a_worker_may_not_spawn(gateway, attempt, custom, namespace):
    deep = attempt(build_spec={"delegation": {"enabled": True, "maxDepth": 1}})
    # a child (depth 1) may not have children of its own under maxDepth 1
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "agenttasks", deep.name, {
        "metadata": {"annotations": {"longshot.dev/delegation-depth": "1"}}})
    r = httpx.post(f"{gateway.url}/delegation/spawn", json={"tasks": [{"name": "x", "prompt": "p"}]},
                   headers=deep.headers, timeout=30)
    assert r.status_code == 403 and "spec.delegation.maxDepth (1)" in r.json()["error"]
    fixer = attempt(build="b2", task="b2-t1", role="fixer", branch="longshot/x", build_spec=ON)
    r = httpx.post(f"{gateway.url}/delegation/spawn", json={"tasks": [{"name": "x", "prompt": "p"}]},
                   headers=fixer.headers, timeout=30)
    assert r.status_code == 403 and "only worker tasks" in r.json()["error"]


def test_await_returns_once_every_named_child_is_done(gateway, attempt, custom, namespace):
    a = attempt(build_spec=ON)
    client = agent_delegation.Client(gateway.url, lambda: a.token)
    agent_delegation.spawn(client, {"name": "api", "prompt": "p"})
    with pytest.raises(agent_errors.ToolError, match="no child named nope"):
        agent_delegation.wait(client, {"names": ["nope"]})
    # as the operator writes it
    custom.patch_namespaced_custom_object_status("longshot.dev", "v1alpha1", namespace, "agenttasks", a.name, {
        "status": {"children": [{"name": "api", "task": f"{a.name}-api", "phase": "Succeeded", "done": True,
                                 "merged": True, "summary": "the API"}]}})
    wait_for(lambda: client.children()["children"], timeout=30, what="status.children through the gateway")
    text = agent_delegation.wait(client, {"names": ["api"], "timeout": 5})
    assert text.startswith("every child is done") and "- api: Succeeded, merged: the API" in text
