"""A roadmap-driven build in two iterations on the real cluster: the operator reads ROADMAP.md at the target tip
(no planner Pod), the first iteration's worker writes a new item into the roadmap, the second iteration plans it,
every item is checked off in the commit that merges its work, and the build finalizes."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import pytest

from .conftest import apply, build_request, kget, script_configmap, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

ROADMAP = "# Roadmap\n\n- [ ] hello\n- [x] skeleton\n"

SCRIPT = """
tasks:
  hello:
    - write: {path: hello.py, content: "def hello():\\n    return 'hello'\\n"}
    - edit: {path: ROADMAP.md, old: "- [x] skeleton\\n", new: "- [x] skeleton\\n- [ ] goodbye\\n"}
    - finish: {summary: "hello(), and goodbye is next"}
  goodbye:
    - run: {command: "test -f hello.py", check: true}
    - write: {path: goodbye.py, content: "def goodbye():\\n    return 'goodbye'\\n"}
    - finish: {summary: "goodbye()"}
steps:
  - finish: {summary: nothing to do}
"""


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return dict(c)
    return {}


def git(bare, *args: str) -> str:  # type: ignore[no-untyped-def]
    return subprocess.run(["git", "-C", str(bare), *args], capture_output=True, text=True, check=True).stdout


def test_a_roadmap_build_in_two_iterations_finalizes(operator, cluster, kubectl, namespace, git_repo) -> None:  # type: ignore[no-untyped-def]
    bare = cluster.git_root / f"{namespace}.git"
    seed = bare.parent / f"{namespace}-seed"
    subprocess.run(["rm", "-rf", str(seed)], check=True)
    subprocess.run(["git", "clone", "-q", str(bare), str(seed)], check=True)
    (seed / "ROADMAP.md").write_text(ROADMAP)
    cfg = ["-c", "user.name=e2e", "-c", "user.email=e2e@localhost"]
    subprocess.run(["git", "-C", str(seed), *cfg, "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(seed), *cfg, "commit", "-q", "-m", "roadmap"], check=True)
    subprocess.run(["git", "-C", str(seed), "push", "-q", "origin", "main"], check=True)

    started = time.monotonic()
    apply(kubectl, namespace, script_configmap("script", SCRIPT),
          build_request("road", git_repo, script="script", planner={"source": "roadmap", "maxIterations": 2}))

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "road"), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 900, "BuildRequest road to be finalized", interval=2)
    elapsed = time.monotonic() - started
    br = kget(kubectl, "-n", namespace, "br", "road") or {}
    print(f"\nroadmap build, 2 iterations, to Finalized={final['status']}: {elapsed:.0f} s")
    assert final["status"] == "True", (final, br.get("status"))
    st = br["status"]
    assert st["iteration"] == 2 and [i["tasks"] for i in st["iterations"]] == [1, 1]
    assert [i["merged"] for i in st["iterations"]] == [1, 1]
    tasks = (kget(kubectl, "-n", namespace, "agenttasks") or {}).get("items") or []
    assert not [t for t in tasks if t["spec"]["role"] == "planner"]  # the operator read the roadmap itself
    assert git(bare, "show", "main:ROADMAP.md") == "# Roadmap\n\n- [x] hello\n- [x] skeleton\n- [x] goodbye\n"
    for task, path in (("road-hello", "hello.py"), ("road-goodbye", "goodbye.py")):
        merged = ((kget(kubectl, "-n", namespace, "mergejob", task) or {}).get("status") or {}).get("mergedCommit")
        assert merged, task
        assert sorted(git(bare, "diff-tree", "--no-commit-id", "--name-only", "-r", merged).split()) == sorted(
            [path, "ROADMAP.md"])
