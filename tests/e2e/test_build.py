"""A whole build on the real cluster: plan, work, gate, merge and finalize, with commits really on main."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from .conftest import apply, build_request, kget, script_configmap, wait_for

# the first test also waits for the session cluster (cold: image builds, several minutes)
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SCRIPT = """
roles:
  planner:
    - finish:
        summary: one task
        tasks:
          - {name: hello, description: "Add hello.py with its test", scope: [hello.py, test_hello.py]}
  reviewer:
    - finish: {summary: fine, verdict: approved}
tasks:
  hello:
    - write: {path: hello.py, content: "def hello():\\n    return 'hello'\\n"}
    - write:
        path: test_hello.py
        content: |
          import unittest

          from hello import hello


          class HelloTest(unittest.TestCase):
              def test_hello(self):
                  self.assertEqual(hello(), "hello")
    - write: {path: Makefile, content: "test:\\n\\tpython3 -m unittest -v\\n"}
    - finish: {summary: "Add hello"}
steps:
  - finish: {summary: nothing to do}
"""


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def test_build_is_planned_worked_merged_and_finalized(operator, cluster, kubectl, namespace, git_repo) -> None:  # type: ignore[no-untyped-def]
    apply(kubectl, namespace, script_configmap("script", SCRIPT), build_request("hello", git_repo, script="script"))

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "hello"), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 420, "BuildRequest hello to be finalized", interval=2)
    br = kget(kubectl, "-n", namespace, "br", "hello")
    assert final["status"] == "True", (final, (br or {}).get("status"))
    merge = kget(kubectl, "-n", namespace, "mergejob", "hello-hello")
    assert condition(merge, "Merged").get("status") == "True", merge

    # the work is on main in the git server the Pods pushed to, and its tests pass there
    bare = cluster.git_root / f"{namespace}.git"
    log = subprocess.run(["git", "-C", str(bare), "log", "--format=%s%n%b", "main"], capture_output=True,
                         text=True, check=True).stdout
    assert "Add hello" in log
    assert "Longshot-Task: hello-hello" in log
    files = subprocess.run(["git", "-C", str(bare), "ls-tree", "--name-only", "main"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert {"hello.py", "test_hello.py"} <= set(files)
