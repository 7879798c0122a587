"""Chaos: the operator is SIGKILLed at 20 random moments of a 30-task build with conflicts and quality gates.

The build must finalize Passed with every task's work merged exactly once (one ``Longshot-Merge-Id`` per
MergeJob on main), and no Pod created twice (each Pod name seen with one UID only) and no task run more than
once (one attempt each, unless its attempt failed).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest
import sample_repo
from k8s_builders import condition, dump, get, list_of
from test_delivery import delivery_build, script_configmap

from longshot_testing import wait_for

N = 30
KILLS = 20
CONFLICTING = ("t07", "t08", "t19", "t20")
"""Two pairs of tasks that write the same file: one of each pair conflicts and goes to a fixer."""


def chaos_script() -> dict[str, object]:
    tasks = [{"name": f"t{i:02d}", "description": f"file {i}"} for i in range(N)]
    steps: dict[str, object] = {}
    for i in range(N):
        name = f"t{i:02d}"
        path = f"files/f{i:02d}.txt"
        if name in ("t07", "t08"):
            path = "shared/one.txt"
        if name in ("t19", "t20"):
            path = "shared/two.txt"
        steps[name] = [{"write": {"path": path, "content": f"{name}\n"}}, {"finish": f"wrote {path}"}]
    for pair, path in ((("t07", "t08"), "shared/one.txt"), (("t19", "t20"), "shared/two.txt")):
        for x in pair:
            steps[f"demo-{x}-fix"] = [{"write": {"path": path, "content": f"{pair[0]}+{pair[1]}\n"}},
                                      {"finish": "resolved"}]
    return {"roles": {"planner": [{"finish": {"summary": "thirty files", "tasks": tasks}}]}, "tasks": steps}


def merge_ids(url: str) -> list[str]:
    out = subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "log",
                          "--format=%(trailers:key=Longshot-Merge-Id,valueonly,separator=%x2C)", "main"],
                         check=True, capture_output=True, text=True).stdout
    return [v.strip() for line in out.splitlines() for v in line.split(",") if v.strip()]


# its own bounds: 420 s of kills, then up to 600 s to finalize (a loaded 2-core machine needs more than the default)
@pytest.mark.timeout(1200)
def test_killed_at_20_random_moments_a_30_task_build_finalizes_with_nothing_doubled(
        operator_process, kubelet, core_v1, custom, namespace, tmp_path):
    rng = random.Random(int(os.environ.get("LONGSHOT_CHAOS_SEED", "20261122")))
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, chaos_script())
    custom.create_namespaced_custom_object(
        "longshot.dev", "v1alpha1", namespace, "buildrequests",
        delivery_build(url, workers={"max": 6}, merge={"strategy": "rebase", "maxConflictRetries": 0, "window": 4},
                       qualityGate={"profile": "minimal", "testCommand": "true"},
                       reconciler={"command": "true", "intervalSeconds": 30}))
    proc = operator_process("chaos-0")
    kills = 0
    deadline = time.monotonic() + 420
    while kills < KILLS and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.5, 4.0))  # a random moment of the build (chaos, not synchronisation)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = operator_process(f"chaos-{kills}")
    assert kills == KILLS

    def done():
        b = get(custom, namespace, "buildrequests", "demo")
        return b if (condition(b, "Finalized") or {}).get("status") in ("True", "False") else None

    try:
        b = wait_for(done, timeout=600, what="Finalized after the chaos")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None
    assert condition(b, "Finalized")["status"] == "True", dump(custom, namespace)
    jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
    # every task's work is on main: merged itself, or carried by the fixer that took its branch over
    for i in range(N):
        job = jobs[f"demo-t{i:02d}"]
        assert job["status"]["phase"] in ("Merged", "Superseded"), (job["metadata"]["name"], job["status"])
    ids = merge_ids(url)
    assert len(ids) == len(set(ids)), "a MergeJob merged twice"
    merged_uids = {j["metadata"]["uid"] for j in jobs.values() if j["status"]["phase"] == "Merged"}
    assert set(ids) == merged_uids, dump(custom, namespace)
    for i in range(N):
        if f"t{i:02d}" not in CONFLICTING:
            assert sample_repo.show(url, f"files/f{i:02d}.txt") == f"t{i:02d}\n"
    # no Pod created twice, and no task ran again because of a restart
    twice = {name: uids for name, uids in kubelet.uids.items() if len(uids) > 1}
    assert twice == {}
    for t in list_of(custom, namespace, "agenttasks"):
        attempts = t["status"].get("attempts", [])
        assert len(attempts) == 1 or any(a.get("failureClass") for a in attempts[:-1]), (t["metadata"]["name"],
                                                                                           attempts)
