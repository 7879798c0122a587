"""Dependencies carry code, on the real cluster (issue 10): a three-layer plan (a module, a second module that
imports it, tests over both) finalizes with every dependent starting from a target that contains its
dependencies' merged work, so each one succeeds and passes its gate at its first attempt."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from .conftest import apply, build_request, kget, script_configmap, wait_for
from .test_build import condition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

# each layer's agent READS the layer below (a `check: true` step fails the attempt if the file is missing), so a
# dependent that started from the base branch instead of the merged dependency would fail
SCRIPT = """
roles:
  planner:
    - finish:
        summary: three layers
        tasks:
          - {name: core, description: "calc/core.py with add()", scope: [calc/core.py]}
          - {name: api, description: "calc/api.py that imports core", scope: [calc/api.py], depends_on: [core]}
          - {name: tests, description: "tests over core and api", scope: [tests/test_calc.py], depends_on: [api]}
tasks:
  core:
    - write: {path: calc/__init__.py, content: ""}
    - write: {path: calc/core.py, content: "def add(a, b):\\n    return a + b\\n"}
    - finish: {summary: "core module"}
  api:
    - read: {path: calc/core.py}
      check: true
    - write:
        path: calc/api.py
        content: |
          from calc.core import add


          def total(xs):
              t = 0
              for x in xs:
                  t = add(t, x)
              return t
    - finish: {summary: "api over core"}
  tests:
    - read: {path: calc/api.py}
      check: true
    - read: {path: calc/core.py}
      check: true
    - write:
        path: tests/test_calc.py
        content: |
          import unittest

          from calc.api import total
          from calc.core import add


          class CalcTest(unittest.TestCase):
              def test_add(self):
                  self.assertEqual(add(2, 3), 5)

              def test_total(self):
                  self.assertEqual(total([1, 2, 3]), 6)
    - write: {path: tests/__init__.py, content: ""}
    - write: {path: Makefile, content: "test:\\n\\tpython3 -m unittest discover -s tests -v\\n"}
    - finish: {summary: "tests over both"}
steps:
  - finish: {summary: nothing to do}
"""


def test_a_three_layer_plan_builds_on_merged_code_at_the_first_attempt(operator, cluster, kubectl, namespace,  # type: ignore[no-untyped-def]
                                                                       git_repo) -> None:
    br = build_request("layers", git_repo, script="script")
    br["spec"]["qualityGate"] = {"profile": "minimal", "testCommand": "make test"}
    apply(kubectl, namespace, script_configmap("script", SCRIPT), br)

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "layers"), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 900, "BuildRequest layers to be finalized", interval=2)
    b = kget(kubectl, "-n", namespace, "br", "layers")
    assert final["status"] == "True", (final, (b or {}).get("status"))
    assert condition(b, "Ready").get("status") == "True"
    merged: dict[str, str] = {}
    for name in ("core", "api", "tests"):
        task = kget(kubectl, "-n", namespace, "agenttask", f"layers-{name}") or {}
        attempts = task["status"]["attempts"]
        assert len(attempts) == 1 and task["status"]["phase"] == "Succeeded", (name, attempts)
        job = kget(kubectl, "-n", namespace, "mergejob", f"layers-{name}") or {}
        assert job["status"]["phase"] == "Merged", (name, job.get("status"))
        gates = [c for c in job["status"]["conditions"] if c["type"] == "GatesPassed"]
        assert gates and gates[0]["status"] == "True"
        merged[name] = job["status"]["mergedCommit"]
        base = task["status"]["handoff"]["baseCommit"]
        # each dependent started from a target commit that already contained its dependency's merge
        dep = {"api": "core", "tests": "api"}.get(name)
        if dep is not None:
            bare = cluster.git_root / f"{namespace}.git"
            rc = subprocess.run(["git", "-C", str(bare), "merge-base", "--is-ancestor", merged[dep], base]).returncode
            assert rc == 0, f"{name} started from {base}, which does not contain {dep}'s merge {merged[dep]}"
