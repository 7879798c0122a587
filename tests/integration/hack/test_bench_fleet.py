"""``hack/bench_fleet.py``'s pure helpers: the percentile, the histogram quantile, the metrics-text sums, the audit
log's writes by client, the writes-per-merge figure, and the git objects its simulated agents write."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import hack_modules

pytestmark = pytest.mark.integration

bench = hack_modules.load("bench_fleet")


def test_the_percentile_interpolates_between_closest_ranks():
    assert bench.percentile([3.0, 1.0, 2.0, 4.0, 5.0], 0.5) == 3.0
    assert bench.percentile([1.0, 2.0], 0.95) == pytest.approx(1.95)
    assert bench.percentile([7.0], 0.95) == 7.0
    assert bench.percentile(list(map(float, range(101))), 0.95) == pytest.approx(95.0)
    assert bench.percentile([], 0.95) != bench.percentile([], 0.95)  # NaN


def test_the_histogram_quantile_interpolates_within_the_bucket_like_promql():
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert bench.histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert bench.histogram_quantile(0.95, buckets) == pytest.approx(0.75)
    assert bench.histogram_quantile(0.99, {1.0: 10.0, float("inf"): 20.0}) == 1.0  # in +Inf: the last bound
    empty = bench.histogram_quantile(0.95, {float("inf"): 0.0})
    assert empty != empty


METRICS = """# HELP longshot_reconciles_total Reconciles by kind of object and result.
# TYPE longshot_reconciles_total counter
longshot_reconciles_total{kind="AgentTask",result="Ok"} 10.0
longshot_reconciles_total{kind="AgentTask",result="Error"} 2.0
longshot_reconciles_total{kind="Queue",result="Ok"} 3.0
# HELP longshot_dispatch_latency_seconds Dispatch.
# TYPE longshot_dispatch_latency_seconds histogram
longshot_dispatch_latency_seconds_bucket{le="0.5"} 4.0
longshot_dispatch_latency_seconds_bucket{le="1.0"} 9.0
longshot_dispatch_latency_seconds_bucket{le="+Inf"} 10.0
longshot_dispatch_latency_seconds_sum 6.0
longshot_dispatch_latency_seconds_count 10.0
"""


def test_samples_sum_over_replicas_by_label_and_subtract_a_baseline():
    s = bench.Samples()
    s.add_text(METRICS)
    s.add_text(METRICS)  # a second replica
    assert s.by("longshot_reconciles_total", "kind") == {"AgentTask": 24.0, "Queue": 6.0}
    assert s.by("longshot_reconciles_total", "kind", result="Error") == {"AgentTask": 4.0}
    assert s.buckets("longshot_dispatch_latency_seconds") == {0.5: 8.0, 1.0: 18.0, float("inf"): 20.0}
    base = bench.Samples()
    base.add_text(METRICS)
    assert s.minus(base).by("longshot_reconciles_total", "kind") == {"AgentTask": 12.0, "Queue": 3.0}


def audit_line(verb: str, resource: str, agent: str, code: int = 200, subresource: str | None = None,
               stage: str = "ResponseComplete") -> str:
    ref = {"resource": resource, **({"subresource": subresource} if subresource else {})}
    return json.dumps({"kind": "Event", "stage": stage, "verb": verb, "userAgent": agent, "objectRef": ref,
                       "responseStatus": {"code": code}})


def test_the_audit_log_counts_writes_by_client_verb_resource_and_code():
    lines = [
        audit_line("create", "pods", "OpenAPI-Generator/31.0.0/python"),
        audit_line("patch", "agenttasks", "kopf/1.37", subresource="status"),
        audit_line("patch", "agenttasks", "kopf/1.37", code=409, subresource="status"),
        audit_line("create", "pods", "kube-scheduler/v1.34.4 (linux/amd64)", subresource="binding"),
        audit_line("patch", "pods", "kwok/v0.7.0", subresource="status"),
        audit_line("patch", "pods", bench.USER_AGENT, subresource="status"),
        audit_line("get", "pods", "kopf/1.37"),  # not a write
        audit_line("create", "pods", "kopf/1.37", stage="ResponseStarted"),  # not the complete event
        '{"kind": "Event", "stage": "ResponseCompl',  # a line cut by the reader
    ]
    got = bench.audit_writes(lines)
    assert got == {
        ("operator", "create", "pods", 200): 1,
        ("operator", "patch", "agenttasks/status", 200): 1,
        ("operator", "patch", "agenttasks/status", 409): 1,
        ("scheduler", "create", "pods/binding", 200): 1,
        ("kwok", "patch", "pods/status", 200): 1,
        ("bench", "patch", "pods/status", 200): 1,
    }


def test_writes_per_merge_spread_the_writes_before_the_clock_over_the_tasks():
    # 1,000 tasks created (1 write each) before the clock; 5,000 writes while 500 merged
    assert bench.api_writes_per_merge(1000, 1000, 5000, 500) == pytest.approx(11.0)
    nothing = bench.api_writes_per_merge(1000, 1000, 5000, 0)
    assert nothing != nothing


def named(verb: str, resource: str, name: str, agent: str = "kopf/1.37", code: int = 200,
          subresource: str | None = None) -> str:
    ref = {"resource": resource, **({"name": name} if name else {}), **({"subresource": subresource} if subresource
                                                                         else {})}
    return json.dumps({"kind": "Event", "stage": "ResponseComplete", "verb": verb, "userAgent": agent,
                       "objectRef": ref, "responseStatus": {"code": code}})


def test_a_merged_task_s_writes_are_its_own_plus_a_share_of_the_shared_ones_and_work_in_flight_is_left_out():
    user = bench.USER_AGENT
    lines = [
        # t1: merged. Its create, Pod, two statuses, ledger entry, MergeJob and its status: 7
        named("create", "agenttasks", "f-t1", user), named("create", "pods", "f-t1-a1"),
        named("patch", "agenttasks", "f-t1", subresource="status"),
        named("patch", "agenttasks", "f-t1", subresource="status"),
        named("patch", "agenttasks", "f-t1", code=409, subresource="status"),  # refused: not a write that counts
        named("create", "configmaps", "f-t1-a1-ledger"), named("create", "mergejobs", "f-t1"),
        named("patch", "mergejobs", "f-t1", subresource="status"),
        named("patch", "pods", "f-t1-a1", "kwok/v0.7.0", subresource="status"),  # not the user's or the operator's
        # t2: relaunched, its second attempt's MergeJob merged
        named("create", "agenttasks", "f-t2", user), named("create", "pods", "f-t2-a2"),
        named("create", "mergejobs", "f-t2-a2"),
        # t3: still running at the end
        named("create", "agenttasks", "f-t3", user), named("create", "pods", "f-t3-a1"),
        # shared: a gate task and its Pod, an Event, a Lease
        named("create", "agenttasks", "f-gate-b1-1"), named("create", "pods", "f-gate-b1-1-a1"),
        named("create", "events", ""), named("update", "leases", "shard-0"),
    ]
    life = bench.lifecycle(bench.audit_object_writes(lines), ["f-t1", "f-t2-a2"])
    assert life.merged == 2
    assert sum(life.per_task.values()) == 7 + 3 and life.per_task[("create", "agenttasks")] == 2
    assert sum(life.shared.values()) == 4 and life.in_flight == 2 and life.in_flight_tasks == 1
    assert life.per_merge == pytest.approx((10 + 4) / 2)
    assert bench.collapse(bench.audit_object_writes(lines))[("operator", "create", "pods", 200)] == 4
    nothing = bench.lifecycle({}, [])
    assert nothing.per_merge != nothing.per_merge


def test_culprits_are_a_seeded_share_of_the_tasks():
    names = [f"t{i:05d}" for i in range(20000)]
    culprits = [n for n in names if bench.is_culprit(n, 0.01, 7)]
    assert 140 < len(culprits) < 260
    assert culprits == [n for n in names if bench.is_culprit(n, 0.01, 7)]
    assert culprits != [n for n in names if bench.is_culprit(n, 0.01, 8)]
    assert not any(bench.is_culprit(n, 0.0, 7) for n in names[:100])


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout


def test_a_simulated_agent_s_commit_is_a_valid_git_commit_with_its_one_file(tmp_path: Path):
    repo = bench.make_repository(tmp_path, "r")
    try:
        base = repo.base
        path = bench.fanout_path("build-t00001")
        commit = repo.commit_file(base, path, b"result\n", "build-t00001: worker change\n")
        repo.set_ref("refs/heads/longshot/ns/build/build-t00001", commit)
        second = repo.commit_file(commit, bench.fanout_path("build-t00002"), b"more\n", "second\n")
        fixed = repo.commit_file(second, path, b"fixed\n", "fix\n")
    finally:
        repo.close()
    git(repo.path, "fsck", "--strict", "--no-dangling")
    assert git(repo.path, "rev-parse", "refs/heads/longshot/ns/build/build-t00001").strip() == commit
    assert git(repo.path, "diff", "--name-only", base, commit).split() == [path]
    assert git(repo.path, "show", f"{fixed}:{path}") == "fixed\n"
    assert sorted(git(repo.path, "ls-tree", "-r", "--name-only", fixed).split()) == sorted(
        ["Makefile", "README.md", path, bench.fanout_path("build-t00002")])


floor = hack_modules.load("bench_fleet_floor")


def test_the_floor_s_plain_git_merger_merges_each_ready_branch_into_main_and_times_each_merge(tmp_path: Path):
    """The floor's merger (``make bench-fleet``'s no-operator floor): branches the simulated agents wrote into the
    repository reach its ``main`` through a working clone's fetch, merge and push, in rounds of at most the window,
    each merge timed from the floor's start."""
    repo = bench.make_repository(tmp_path, "floor")
    try:
        branches = []
        for i in range(5):
            task = f"floor-t{i:05d}"
            commit = repo.commit_file(repo.base, f"work/{task}.txt", f"result of {task}\n".encode(), f"{task}\n")
            repo.set_ref(f"refs/heads/floor/{task}", commit)
            branches.append(f"floor/{task}")
    finally:
        repo.close()
    result = floor.FloorResult()
    env = {**bench.GIT_ENV, "GIT_TERMINAL_PROMPT": "0"}
    merger = floor.Merger(f"file://{repo.path}", tmp_path, env, 2, result, 0.0)
    for b in branches:  # offered before it runs: three rounds of at most two
        merger.offer(b)
    merger.thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(result.merged_at) < 5 and time.monotonic() < deadline and not result.errors:
            merger.thread.join(0.05)
    finally:
        merger.stop()
        merger.thread.join(10)
    assert result.errors == []
    assert len(result.merged_at) == 5 and result.pushes == 3
    files = git(repo.path, "ls-tree", "-r", "--name-only", "main").split()
    assert {f"work/floor-t{i:05d}.txt" for i in range(5)} <= set(files)
    assert floor.merged_within([1.0, 2.0, 9.0], 5.0) == 2
    assert floor.ratio(3, 4) == 0.75 and floor.ratio(3, 0) != floor.ratio(3, 0)  # NaN when the floor merged none


gateway_mode = hack_modules.load("bench_fleet_gateway")


def test_a_culprit_s_blob_id_through_the_gateway_is_the_one_git_stores(tmp_path: Path):
    # --through-gateway: a culprit's broken blob is known by its id (the gate looks it up in the commit it tests)
    repo = bench.make_repository(tmp_path, "r")
    try:
        for content in (b"BROKEN by build-t00001\n", b"", b"\0binary\xff"):
            assert gateway_mode.blob_id(content) == repo.write("blob", content)
            stored = subprocess.run(["git", "hash-object", "--stdin"], input=content, capture_output=True, check=True)
            assert gateway_mode.blob_id(content) == stored.stdout.decode().strip()
    finally:
        repo.close()
