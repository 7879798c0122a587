"""A build on warm sandboxes on the real cluster (docs/warm-pools.md): with ``spec.agent.warmPool`` its tasks claim
Pods started ahead (the runner up, waiting at the gateway's /v1/claim, its repository pre-cloned through the gateway:
``preClone``), and the build still plans, works, merges and finalizes Passed with every file on main."""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from typing import Any

import pytest

from .conftest import apply, build_request, kget, script_configmap, wait_for
from .test_build import condition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TASKS = ("one", "two", "three")

SCRIPT = """
roles:
  planner:
    - finish:
        summary: three tasks
        tasks:
""" + "".join(f"          - {{name: {t}, description: \"Add {t}.txt\", scope: [{t}.txt]}}\n" for t in TASKS) + """
  reviewer:
    - finish: {summary: fine, verdict: approved}
tasks:
""" + "".join(f"""  {t}:
    - write: {{path: {t}.txt, content: "{t}\\n"}}
    - finish: {{summary: "Add {t}"}}
""" for t in TASKS) + """
steps:
  - finish: {summary: nothing to do}
"""


def test_a_build_on_warm_sandboxes_claims_them_and_finalizes_passed(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, git_repo) -> None:
    # one worker at a time: the tasks that wait find sandboxes the pool started meanwhile
    apply(kubectl, namespace, script_configmap("script", SCRIPT),
          build_request("warm", git_repo, script="script", workers={"max": 1}, agent={
              "backend": "scripted", "script": {"name": "script"}, "timeoutSeconds": 300,
              "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
              "warmPool": {"size": 2, "preClone": True}}))

    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", "warm"), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 600, "BuildRequest warm to be finalized", interval=2)
    br = kget(kubectl, "-n", namespace, "br", "warm")
    assert final["status"] == "True", (final, (br or {}).get("status"))
    # hits: attempts that ran in a claimed warm sandbox (its Pod carries the attempt's name as its claim label)
    claimed = kget(kubectl, "-n", namespace, "pods", "-l", "longshot.dev/warm-claim")
    hits = {(p["metadata"]["labels"]["longshot.dev/task"], p["metadata"]["labels"]["longshot.dev/attempt"])
            for p in (claimed or {}).get("items") or []}
    assert hits, "no attempt ran in a warm sandbox"
    assert len(hits) == len((claimed or {}).get("items") or []), "a sandbox ran two attempts"
    tasks = (kget(kubectl, "-n", namespace, "at") or {}).get("items") or []
    for t in tasks:
        for a in (t.get("status") or {}).get("attempts") or []:
            assert a.get("podUID"), (t["metadata"]["name"], a)
    # the attempts that ran in a sandbox which had cloned before its claim fetched into that clone (the transcript's
    # cloning event, in the attempts' ledger entries)
    pre_cloned = []
    for task, attempt in hits:
        entry = kget(kubectl, "-n", namespace, "configmap", f"{task}-a{attempt}-ledger") or {}
        raw = (entry.get("binaryData") or {}).get("transcript.jsonl.gz")
        lines = gzip.decompress(base64.b64decode(raw)).decode().splitlines() if raw else []
        pre_cloned += [e for e in map(json.loads, lines) if e.get("message") == "cloning" and "pre_cloned_seconds" in e]
    assert pre_cloned, "no claimed attempt used its sandbox's pre-clone"
    files = subprocess.run(["git", "--git-dir", str(cluster.git_root / f"{namespace}.git"), "ls-tree", "--name-only",
                            "main"], check=True, capture_output=True, text=True).stdout.split()
    assert {f"{t}.txt" for t in TASKS} <= set(files), files
