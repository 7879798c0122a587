"""A custom quality gate with a coverage step on the real cluster: the gate's tester Pod runs the named steps on the
candidate as it would land, a coverage report under the threshold fails the ``coverage`` step, the fixer Pod is told
which step failed and why, raises the coverage, and its branch merges; main ends with the covered report."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from .conftest import apply, build_request, kget, script_configmap, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def lcov(found: int, hit: int) -> str:
    return f"TN:\nSF:calc.py\nDA:1,1\nLF:{found}\nLH:{hit}\nend_of_record\n"


SCRIPT = f"""
roles:
  planner:
    - finish:
        summary: one task
        tasks:
          - {{name: calc, description: "Add calc.py with a coverage report", scope: [calc.py, lcov.info]}}
tasks:
  calc:
    - write: {{path: calc.py, content: "def double(x):\\n    return 2 * x\\n"}}
    - write: {{path: lcov.info, content: {json.dumps(lcov(20, 10))}}}
    - finish: {{summary: "Add calc"}}
  cov-calc-fix:
    - write: {{path: lcov.info, content: {json.dumps(lcov(20, 19))}}}
    - finish: {{summary: "covered the missing lines"}}
steps:
  - finish: {{summary: nothing to do}}
"""

STEPS = [{"name": "unit", "command": "make test", "timeoutSeconds": 120},
         {"name": "coverage", "coverage": {"report": "lcov.info", "format": "lcov", "minPercent": 85}}]


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def test_a_custom_gate_with_a_coverage_step_sends_the_failing_step_to_a_fixer_then_merges(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, git_repo) -> None:
    br = build_request("cov", git_repo, script="script", qualityGate={"profile": "custom", "steps": STEPS})
    br["spec"]["finalization"]["maxAttempts"] = 2
    apply(kubectl, namespace, script_configmap("script", SCRIPT), br)

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "cov"), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 600, "BuildRequest cov to be finalized", interval=2)
    assert final["status"] == "True" and final["reason"] == "Passed", (final, kget(kubectl, "-n", namespace, "br",
                                                                                    "cov"))
    first = kget(kubectl, "-n", namespace, "mergejob", "cov-calc")
    assert first is not None and first["status"]["phase"] == "Superseded", first
    assert first["status"]["fixer"] == "cov-calc-fix", first["status"]
    fixer = kget(kubectl, "-n", namespace, "agenttask", "cov-calc-fix")
    description = (fixer or {}).get("spec", {}).get("description", "")
    assert "step unit passed (exit 0)" in description, description
    assert "step coverage failed: 50.0% of lines covered, below the 85% minimum (lcov.info)" in description
    fixed = kget(kubectl, "-n", namespace, "mergejob", "cov-calc-fix")
    assert condition(fixed, "Merged").get("status") == "True", fixed

    # the gate ran as Pods on the node: a tester Pod of each gate, and main holds the fixer's report
    pods = kget(kubectl, "-n", namespace, "pods") or {}
    roles = [p["metadata"].get("labels", {}).get("longshot.dev/role") for p in pods.get("items", [])]
    assert roles.count("tester") >= 2, roles
    bare = cluster.git_root / f"{namespace}.git"
    report = subprocess.run(["git", "-C", str(bare), "show", "main:lcov.info"], capture_output=True, text=True,
                            check=True).stdout
    assert report == lcov(20, 19)
