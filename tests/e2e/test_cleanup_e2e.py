"""Cleanup on the real cluster (issue 31, "Done means"): once a build that succeeded is deleted, no ref Longshot wrote
is left in its repository (task branches ``longshot/...``, handoff refs ``refs/longshot/...``, queue branches): the
``longshot.dev/cleanup`` finalizer deletes them through the merge queue's credentials (``spec.cleanup.branches``,
``OnSuccess`` by default), and the work stays on main."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from .conftest import apply, build_request, kget, script_configmap, wait_for
from .test_build import SCRIPT, condition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def refs(bare: Any) -> list[str]:
    out = subprocess.run(["git", "-C", str(bare), "for-each-ref", "--format=%(refname)"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()


def test_deleting_a_build_that_succeeded_leaves_no_longshot_ref_in_its_repository(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, git_repo) -> None:
    apply(kubectl, namespace, script_configmap("script", SCRIPT), build_request("tidy", git_repo, script="script"))

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "tidy"), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 420, "BuildRequest tidy to be finalized", interval=2)
    assert final["status"] == "True", final
    bare = cluster.git_root / f"{namespace}.git"
    written = [r for r in refs(bare) if r.startswith(("refs/heads/longshot/", "refs/longshot/"))]
    assert written, refs(bare)  # the build did write refs of its own (its task branch, its handoffs)
    br = kget(kubectl, "-n", namespace, "br", "tidy") or {}
    assert "longshot.dev/cleanup" in (br.get("metadata") or {}).get("finalizers", [])

    kubectl("-n", namespace, "delete", "br", "tidy", "--wait=false")
    wait_for(lambda: kget(kubectl, "-n", namespace, "br", "tidy") is None, 300, "BuildRequest tidy to be gone",
             interval=2)
    left = [r for r in refs(bare) if r.startswith(("refs/heads/longshot/", "refs/longshot/"))]
    assert left == [], left
    log = subprocess.run(["git", "-C", str(bare), "log", "--format=%s", "main"], capture_output=True, text=True,
                         check=True).stdout
    assert "Add hello" in log  # the work that landed stays
