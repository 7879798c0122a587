"""Delegation on the real cluster (issue 32): a worker Pod's agent spawns two child tasks through longshot-gateway
and awaits them; the operator creates the children, their Pods run on the node and their branches merge through the
merge queue first; the parent's branch merges after them and the build finalizes Passed."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from .conftest import apply, build_request, kget, script_configmap, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

CHILDREN = ["alpha", "beta"]


def module(name: str) -> str:
    return f"def {name}():\n    return '{name}'\n"


def writes(name: str) -> list[dict[str, Any]]:
    return [{"write": {"path": f"calc/{name}.py", "content": module(name)}}]


SCRIPT = json.dumps({
    "roles": {"planner": [{"finish": {"summary": "one task", "tasks": [
        {"name": "parent", "description": "Add parent() and delegate the rest", "scope": ["calc/parent.py"]}]}}]},
    "tasks": {
        "parent": [
            *({"spawn": {"name": c, "prompt": f"Add calc/{c}.py with {c}()", "scope": [f"calc/{c}.py"]},
               "check": True} for c in CHILDREN),
            {"await": {"names": CHILDREN, "timeout": 600}, "check": True},
            *writes("parent"),
            {"finish": "parent() on top of the children"}],
        **{f"parent-{c}": [*writes(c), {"finish": f"{c}()"}] for c in CHILDREN},
    },
    "steps": [{"finish": {"summary": "nothing to do"}}],
})


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def first_commit_touching(bare: str) -> dict[str, int]:
    out = subprocess.run(["git", "--git-dir", bare, "log", "--reverse", "--name-only", "--format=@%H", "main"],
                         check=True, capture_output=True, text=True).stdout
    seen: dict[str, int] = {}
    n = -1
    for line in out.splitlines():
        if line.startswith("@"):
            n += 1
        elif line.strip():
            seen.setdefault(line.strip(), n)
    return seen


def test_a_worker_pod_spawns_two_children_that_merge_before_it(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, git_repo) -> None:
    br = build_request("dlg", git_repo, script="script", workers={"max": 4},
                       delegation={"enabled": True, "maxChildren": 2})
    apply(kubectl, namespace, script_configmap("script", SCRIPT), br)

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "dlg"), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 900, "BuildRequest dlg to be finalized", interval=2)
    assert final["status"] == "True" and final["reason"] == "Passed", (final, kget(kubectl, "-n", namespace, "br",
                                                                                    "dlg"))
    parent = kget(kubectl, "-n", namespace, "agenttask", "dlg-parent")
    assert parent is not None
    kids = {c["name"]: c for c in parent["status"]["children"]}
    assert set(kids) == set(CHILDREN), parent["status"]
    for name, c in kids.items():
        assert (c["task"], c["phase"], c["merged"]) == (f"dlg-parent-{name}", "Succeeded", True), c
        child = kget(kubectl, "-n", namespace, "agenttask", c["task"])
        assert child is not None and child["metadata"]["labels"]["longshot.dev/parent"] == "dlg-parent"
    # every worker ran as a Pod on the node, which exited 0
    for task in ("dlg-parent", "dlg-parent-alpha", "dlg-parent-beta"):
        attempts = ((kget(kubectl, "-n", namespace, "agenttask", task) or {}).get("status") or {}).get("attempts")
        assert attempts and attempts[-1]["pod"] and attempts[-1].get("exitCode") == 0, (task, attempts)
    # the children's work reached main before the parent's
    order = first_commit_touching(str(cluster.git_root / f"{namespace}.git"))
    assert order["calc/alpha.py"] < order["calc/parent.py"], order
    assert order["calc/beta.py"] < order["calc/parent.py"], order
