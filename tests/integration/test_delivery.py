"""Delivery on the real API server with real git: gates, the merge queue, conflicts, sweeps, finalization,
metrics.

Agent Pods are run by the process kubelet (tests/integration/process_kubelet.py): the real agent runner
with the scripted backend, pushing to a real git repository.
"""

from __future__ import annotations

import httpx
import pytest
import sample_repo
import yaml
from k8s_builders import build, condition, create, dump, get, list_of

from longshot_testing import wait_for

TEST = sample_repo.TEST_COMMAND


def add_tests(name: str, op: str) -> str:
    return (f"import unittest\n\nfrom calc.{name} import {name}\n\n\nclass T(unittest.TestCase):\n"
            f"    def test_{name}(self):\n        self.assertEqual({name}(3, 4), 3 {op} 4)\n")


SCRIPT = {
    "roles": {
        "planner": [{"finish": {"summary": "two functions", "tasks": [
            {"name": "add", "description": "Add add()", "scope": ["calc/add.py", "tests/test_add.py"],
             "priority": 7},
            {"name": "mul", "description": "Add mul()", "scope": ["calc/mul.py", "tests/test_mul.py"],
             "depends_on": ["add"]},
        ]}}],
        "reviewer": [{"finish": {"summary": "fine", "verdict": "approved"}}],
    },
    "tasks": {
        "add": [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                {"write": {"path": "tests/test_add.py", "content": add_tests("add", "+")}},
                {"finish": "Add add()"}],
        "mul": [{"write": {"path": "calc/mul.py", "content": "def mul(a, b):\n    return a * b\n"}},
                {"write": {"path": "tests/test_mul.py", "content": add_tests("mul", "*")}},
                {"finish": "Add mul()"}],
    },
}


def script_configmap(core, namespace, script, name="script"):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": name},
                                                  "data": {"script.yaml": yaml.safe_dump(script)}})


def delivery_build(url, **spec):
    b = build("demo", repository__url=url)
    b["spec"].update({"agent": {"backend": "scripted", "script": {"name": "script"}},
                      "reconciler": {"command": TEST, "intervalSeconds": 30},
                      "qualityGate": {"profile": "minimal", "testCommand": TEST},
                      "finalization": {"maxAttempts": 2}})
    b["spec"].update(spec)
    return b


def finalized(custom, namespace, timeout=150):  # a loaded machine took over 90 s (2026-11-28)
    def done():
        b = get(custom, namespace, "buildrequests", "demo")
        c = condition(b, "Finalized")
        return b if c and c["status"] in ("True", "False") else None

    try:
        return wait_for(done, timeout=timeout, what="Finalized True or False")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None


def test_build_is_planned_worked_merged_swept_and_finalized(operator, kubelet, operator_env, core_v1, custom,
                                                            namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, SCRIPT)
    create(custom, namespace, delivery_build(url))

    b = finalized(custom, namespace)
    assert condition(b, "Finalized")["status"] == "True", dump(custom, namespace)
    assert condition(b, "Finalized")["reason"] == "Passed"
    assert (condition(b, "Ready")["status"], condition(b, "Ready")["reason"]) == ("True", "Succeeded")
    assert condition(b, "Stalled")["status"] == "False" and condition(b, "Reconciling")["status"] == "False"
    assert condition(b, "Merged")["status"] == "True"
    assert b["status"]["phase"] == "Succeeded" and b["status"]["completionTime"]
    assert b["status"]["merges"]["merged"] == 2
    assert b["status"]["lastSweep"]["result"] == "Passed"
    assert b["status"]["finalizationAttempts"] == 1
    # the code is on main, with a trailer per merge, and its tests pass
    assert sample_repo.show(url, "calc/add.py") and sample_repo.show(url, "calc/mul.py")
    messages = sample_repo.log(url)
    assert sum("Longshot-Merge: " in m for m in messages) == 2
    assert sum("Longshot-Merge-Id: " in m for m in messages) == 2
    assert sample_repo.run_tests(url, tmp_path) == 0
    # every merge passed a quality gate that tested it as it would land (a batch gate on a queue branch)
    gates = [t for t in list_of(custom, namespace, "agenttasks")
             if t["metadata"].get("labels", {}).get("longshot.dev/purpose") == "gate"]
    assert gates and all(t["status"]["handoff"]["verdict"] == "passed" for t in gates)
    assert all("/_queue/" in t["spec"]["branch"] for t in gates)
    jobs = list_of(custom, namespace, "mergejobs")
    assert {j["status"]["phase"] for j in jobs} == {"Merged"}
    assert all(condition(j, "Merged")["status"] == "True" and condition(j, "GatesPassed")["status"] == "True"
               for j in jobs)
    # mul depends on add: it started from a target commit that contains add's merged work
    mul = get(custom, namespace, "agenttasks", "demo-mul")
    add_job = get(custom, namespace, "mergejobs", "demo-add")
    assert len(mul["status"]["attempts"]) == 1
    assert sample_repo.is_ancestor(url, add_job["status"]["mergedCommit"], mul["status"]["handoff"]["baseCommit"])
    # the metrics endpoint shows what happened
    text = httpx.get(f"http://127.0.0.1:{operator_env['LONGSHOT_METRICS_PORT']}/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['longshot_merges_total{result="Merged"}'] >= 2
    # one observation per merged candidate (and per stale batch), each the real time its batch took to land
    assert samples["longshot_merge_duration_seconds_count"] == sum(
        v for k, v in samples.items() if k.startswith("longshot_merges_total{"))
    assert samples["longshot_merge_duration_seconds_sum"] > 0
    assert samples['longshot_finalizations_total{outcome="Passed"}'] >= 1
    assert samples['longshot_replica_role{role="leader"}'] == 1
    assert samples["longshot_dispatch_latency_seconds_count"] >= 3



def test_a_one_iteration_build_takes_its_last_gate_run_as_the_final_sweep(operator, kubelet, core_v1, custom,
                                                                        namespace, tmp_path):
    """Issue 13: the gate runs the reconciler's command on exactly the commit that lands; a final sweep Pod after it
    only ran that command on that commit again, one Pod round on every build's tail."""
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, SCRIPT)
    create(custom, namespace, delivery_build(url, planner={"maxIterations": 1}))
    b = finalized(custom, namespace)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    assert b["status"]["finalizationAttempts"] == 1 and b["status"]["merges"]["merged"] == 2
    head = sample_repo.git(tmp_path, "--git-dir", url.removeprefix("file://"), "rev-parse", "main").strip()
    assert b["status"]["lastSweep"]["result"] == "Passed" and b["status"]["lastSweep"]["commit"] == head
    ts = list_of(custom, namespace, "agenttasks")
    assert not [t["metadata"]["name"] for t in ts if t["metadata"]["labels"].get("longshot.dev/purpose") ==
                "final"]  # no final sweep Pod ran: the gate's run on the tip was the final sweep
    (adopted,) = [t for t in ts if t["metadata"].get("annotations", {}).get("longshot.dev/final-attempt") == "1"]
    assert adopted["metadata"]["labels"]["longshot.dev/purpose"] == "gate"
    assert adopted["status"]["handoff"]["commit"] == head and adopted["status"]["handoff"]["verdict"] == "passed"
    assert sample_repo.run_tests(url, tmp_path) == 0


def finalization_status(b):
    return condition(b, "Finalized")["status"], condition(b, "Finalized")["reason"]


def test_finalization_fails_with_its_reason_after_max_attempts(operator, kubelet, core_v1, custom, namespace,
                                                               tmp_path):
    broken = {"tests/test_broken.py": "import unittest\n\n\nclass Broken(unittest.TestCase):\n"
                                      "    def test_never(self):\n        self.fail('this repository cannot pass')\n"}
    url = sample_repo.make(tmp_path, broken)
    script = {"roles": {"planner": [{"finish": {"summary": "one", "tasks": [
        {"name": "docs", "description": "Write docs", "scope": ["docs.md"]}]}}]},
              "tasks": {"docs": [{"write": {"path": "docs.md", "content": "docs\n"}}, {"finish": "docs"}]},
              "steps": [{"finish": "nothing I can do"}]}
    script_configmap(core_v1, namespace, script)
    # no gate (the tests can never pass), two finalization attempts, a fixer that cannot fix it
    create(custom, namespace, delivery_build(url, qualityGate={"profile": "minimal", "testCommand": "true"},
                                             finalization={"maxAttempts": 2}))
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("False", "TestsFailed"), dump(custom, namespace)
    assert "after 2 finalization attempts" in condition(b, "Finalized")["message"]
    assert b["status"]["finalizationAttempts"] == 2
    assert (condition(b, "Ready")["status"], condition(b, "Ready")["reason"]) == ("False", "TestsFailed")
    assert (condition(b, "Stalled")["status"], condition(b, "Stalled")["reason"]) == ("True", "TestsFailed")
    assert b["status"]["phase"] == "Failed" and b["status"]["completionTime"]
    assert b["status"]["lastSweep"]["result"] == "Failed"
    # the failing final sweep got a fixer task, bounded
    fixers = [t for t in list_of(custom, namespace, "agenttasks") if t["spec"]["role"] == "fixer"]
    assert 1 <= len(fixers) <= 5
    assert sample_repo.show(url, "docs.md") == "docs\n"  # the work itself was merged


def conflict_script():
    return {
        "roles": {"planner": [{"finish": {"summary": "two edits of one file", "tasks": [
            {"name": "a", "description": "greet in English", "priority": 9},
            {"name": "b", "description": "greet in French", "priority": 1}]}}]},
        "tasks": {
            "a": [{"write": {"path": "calc/greet.py", "content": "GREETING = 'hello'\n"}}, {"finish": "english"}],
            "b": [{"write": {"path": "calc/greet.py", "content": "GREETING = 'bonjour'\n"}}, {"finish": "french"}],
            # whichever branch merges second conflicts; its fixer resolves it
            **{f"demo-{x}-fix": [{"write": {"path": "calc/greet.py", "content": "GREETING = 'hello / bonjour'\n"}},
                                 {"finish": "resolved: both greetings"}] for x in "ab"},
        },
    }


@pytest.mark.parametrize("retries", [0, 2])
def test_conflict_leads_to_a_fixer_task_and_then_a_merge(operator, kubelet, core_v1, custom, namespace, tmp_path,
                                                         retries):
    """With retries left (the default 2) the conflicted branch would wait for the target to move, and nothing
    else is left to move it: it goes to a fixer when the queue holds nothing else (``TargetIdle``)."""
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, conflict_script())
    create(custom, namespace, delivery_build(url, merge={"strategy": "rebase", "maxConflictRetries": retries}))
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
    # the two branches ran in parallel from the same base: one merged, the other conflicted and was handed to a
    # fixer, whose branch then merged and superseded it
    phases = {name: jobs[name]["status"]["phase"] for name in ("demo-a", "demo-b")}
    assert sorted(phases.values()) == ["Merged", "Superseded"], phases
    loser = next(name for name, phase in phases.items() if phase == "Superseded")
    conflicted = jobs[loser]
    assert conflicted["status"]["conflictingFiles"] == ["calc/greet.py"]
    assert conflicted["status"]["fixer"] == f"{loser}-fix"
    assert any(a["result"] == "Conflicted" for a in conflicted["status"]["attempts"])
    fixer = get(custom, namespace, "agenttasks", f"{loser}-fix")
    assert fixer["spec"]["role"] == "fixer" and fixer["spec"]["scope"] == ["calc/greet.py"]
    assert fixer["spec"]["branch"] == conflicted["spec"]["branch"]
    assert jobs[f"{loser}-fix"]["status"]["phase"] == "Merged"
    assert not any(name.endswith("-fix-fix") for name in jobs)  # no cascade
    assert sample_repo.show(url, "calc/greet.py") == "GREETING = 'hello / bonjour'\n"
    assert condition(b, "Merged")["status"] == "True"


def test_merges_follow_priority_then_arrival_with_each_strategy_history(operator, kubelet, core_v1, custom,
                                                                       namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    tasks = [{"name": f"f{i}", "description": f"file {i}", "priority": p, "scope": [f"f{i}.txt"]}
             for i, p in enumerate([2, 9, 5])]
    script = {"roles": {"planner": [{"finish": {"summary": "three files", "tasks": tasks}}]},
              "tasks": {f"f{i}": [{"write": {"path": f"f{i}.txt", "content": f"{i}\n"}}, {"finish": f"file {i}"}]
                        for i in range(3)}}
    script_configmap(core_v1, namespace, script)
    b = delivery_build(url, merge={"strategy": "merge-commit"}, workers={"max": 1},
                       qualityGate={"profile": "minimal", "testCommand": "true"})
    create(custom, namespace, b)
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    # workers.max=1: tasks ran, and merged, one at a time by priority: f1 (9), f2 (5), f0 (2)
    merges = [m for m in sample_repo.log(url) if "Longshot-Merge:" in m]
    order = [m.split("Longshot-Merge: ")[1].split()[0].split("/")[1] for m in reversed(merges)]
    assert order == ["demo-f1", "demo-f2", "demo-f0"]
    # merge-commit: every merge is a two-parent commit on main
    parents = sample_repo.git(tmp_path, "--git-dir", url.removeprefix("file://"), "log", "--format=%P",
                              "--first-parent", "main").splitlines()
    assert sum(len(p.split()) == 2 for p in parents) == 3


def test_the_only_worker_failing_is_never_a_pass(operator, kubelet, core_v1, custom, namespace, tmp_path):
    """Issue 10: a build whose only worker failed reported Finalized=True/Passed with nothing merged."""
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [{"name": "w", "description": "work"}]}}]},
        "tasks": {"w": [{"fail": {"class": "AgentError", "message": "push blocked by the secret scan"}}]}})
    create(custom, namespace, delivery_build(url, retry={"maxAttempts": 1}))
    b = finalized(custom, namespace, timeout=120)
    assert finalization_status(b) == ("False", "TasksFailed"), dump(custom, namespace)
    assert "demo-w failed" in condition(b, "Finalized")["message"]
    assert "push blocked by the secret scan" in condition(b, "Finalized")["message"]
    assert (condition(b, "Ready")["status"], condition(b, "Stalled")["status"]) == ("False", "True")
    assert b["status"]["phase"] == "Failed"
    events = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=demo").items
    assert any(e.reason == "TasksFailed" for e in events)


def test_a_failed_gate_goes_to_a_fixer_with_the_output_and_then_merges(operator, kubelet, core_v1, custom,
                                                                        namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    broken = add_tests("add", "+").replace("3 + 4", "3 + 5")
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [
            {"name": "add", "description": "Add add()"}]}}]},
        "tasks": {"add": [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                          {"write": {"path": "tests/test_add.py", "content": broken}}, {"finish": "Add add()"}],
                  "demo-add-fix": [{"write": {"path": "tests/test_add.py", "content": add_tests("add", "+")}},
                                   {"finish": "fixed the expectation"}]}})
    create(custom, namespace, delivery_build(url))
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    job = get(custom, namespace, "mergejobs", "demo-add")
    assert job["status"]["phase"] == "Superseded" and job["status"]["fixer"] == "demo-add-fix"
    fixer = get(custom, namespace, "agenttasks", "demo-add-fix")
    assert TEST in fixer["spec"]["description"] and "AssertionError" in fixer["spec"]["description"]
    assert fixer["spec"]["branch"] == job["spec"]["branch"]
    assert get(custom, namespace, "mergejobs", "demo-add-fix")["status"]["phase"] == "Merged"
    assert sample_repo.run_tests(url, tmp_path) == 0


def test_changes_requested_goes_to_a_fixer_with_the_reasons(operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [{"name": "add", "description": "Add add()"}]}}],
                  "reviewer": [{"finish": {"summary": "fine now", "verdict": "approved"}}]},
        "tasks": {**SCRIPT["tasks"],
                  "demo-add-review": [{"finish": {"summary": "needs a docstring", "verdict": "changes-requested",
                                                  "reasons": ["add() needs a docstring"]}}],
                  "demo-add-fix": [{"write": {"path": "calc/add.py", "content":
                                              'def add(a, b):\n    """Sum."""\n    return a + b\n'}},
                                   {"finish": "docstring"}]}})
    create(custom, namespace, delivery_build(url, qualityGate={"profile": "strict", "testCommand": TEST}))
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    job = get(custom, namespace, "mergejobs", "demo-add")
    assert job["status"]["phase"] == "Superseded"
    assert condition(job, "ChecksPassed")["reason"] == "ChangesRequested"
    assert "add() needs a docstring" in get(custom, namespace, "agenttasks", "demo-add-fix")["spec"]["description"]
    assert '"""Sum."""' in sample_repo.show(url, "calc/add.py")


def test_batch_bisection_evicts_exactly_the_culprit(operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    names = ["f0", "f1", "f2", "f3"]
    tasks = [{"name": n, "description": f"file {n}", "scope": [f"{n}.py"]} for n in names]
    culprit = "f2"
    script = {"roles": {"planner": [{"finish": {"summary": "four", "tasks": tasks}}]},
              "tasks": {n: [{"write": {"path": f"tests/test_{n}.py", "content":
                                       "import unittest\n\n\nclass T(unittest.TestCase):\n    def test_it(self):\n"
                                       f"        self.assertEqual(1, {2 if n == culprit else 1})\n"}},
                            {"finish": f"file {n}"}] for n in names}}
    script["tasks"][f"demo-{culprit}-fix"] = [
        {"write": {"path": f"tests/test_{culprit}.py", "content": "import unittest\n\n\nclass T(unittest.TestCase):"
                   "\n    def test_it(self):\n        self.assertEqual(1, 1)\n"}}, {"finish": "fixed"}]
    script_configmap(core_v1, namespace, script)
    create(custom, namespace, delivery_build(url, workers={"max": 4}, merge={"strategy": "rebase", "window": 4}))
    b = finalized(custom, namespace, timeout=240)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
    evicted = [n for n, j in jobs.items() if any(a["result"] == "GatesFailed" for a in j["status"].get("attempts", []))]
    assert evicted == [f"demo-{culprit}"], {n: j["status"].get("attempts") for n, j in jobs.items()}
    assert jobs[f"demo-{culprit}"]["status"]["phase"] == "Superseded"
    assert all(jobs[f"demo-{n}"]["status"]["phase"] == "Merged" for n in names if n != culprit)
    # every commit the target moved to passed the tests
    assert sample_repo.run_tests(url, tmp_path) == 0


def test_a_candidate_ready_while_a_batch_is_gated_is_gated_stacked_on_it(operator, kubelet, core_v1, custom,
                                                                         namespace, tmp_path):
    """Zuul's dependent pipeline: the first batch's gate is held (its command waits for a file while the tree lacks
    s1.py); the second task only finishes once that gate runs, so its MergeJob is ready while the first batch is
    under test. It joins a batch built on the first batch's speculative commit and is gated at once; when the
    first batch lands, it lands on its gate result, without a second gate."""
    url = sample_repo.make(tmp_path)
    gating, release = tmp_path / "gating", tmp_path / "release"
    hold = (f"if [ ! -e s1.py ]; then touch {gating}; i=0; "
            f"while [ ! -e {release} ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done; fi; {TEST}")
    wait_gating = f"i=0; while [ ! -e {gating} ] && [ $i -lt 1800 ]; do sleep 0.1; i=$((i+1)); done; test -e {gating}"
    script = {"roles": {"planner": [{"finish": {"summary": "two", "tasks": [
        {"name": "s0", "description": "s0", "scope": ["s0.py"]},
        {"name": "s1", "description": "s1", "scope": ["s1.py"]}]}}]},
        "tasks": {"s0": [{"write": {"path": "s0.py", "content": "S0 = 0\n"}}, {"finish": "s0"}],
                  "s1": [{"run": {"command": wait_gating, "check": True}},
                         {"write": {"path": "s1.py", "content": "S1 = 1\n"}}, {"finish": "s1"}]}}
    script_configmap(core_v1, namespace, script)
    create(custom, namespace, delivery_build(url, workers={"max": 2}, merge={"strategy": "rebase", "window": 4},
                                             qualityGate={"profile": "minimal", "testCommand": hold}))

    def stacked():
        jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
        below, above = (jobs.get(n, {}).get("status", {}) for n in ("demo-s0", "demo-s1"))
        if below.get("phase") != "Testing" or above.get("phase") != "Testing":
            return None
        if above["batch"]["base"] != below["batch"]["commit"]:
            return None
        gate = next((t for t in list_of(custom, namespace, "agenttasks")
                     if t["metadata"].get("labels", {}).get("longshot.dev/batch") == above["batch"]["id"]), None)
        handoff = (gate or {}).get("status", {}).get("handoff") or {}
        return above["batch"] if handoff.get("verdict") == "passed" else None

    try:
        batch = wait_for(stacked, timeout=120, what="demo-s1 gated (passed) on demo-s0's speculative commit")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None
    assert batch["position"] == 1
    release.touch()
    b = finalized(custom, namespace, timeout=180)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
    assert {n: jobs[n]["status"]["phase"] for n in ("demo-s0", "demo-s1")} == {"demo-s0": "Merged", "demo-s1": "Merged"}
    gates = [t["metadata"]["name"] for t in list_of(custom, namespace, "agenttasks")
             if t["metadata"].get("labels", {}).get("longshot.dev/purpose") == "gate"]
    assert len(gates) == 2, gates  # one per batch: s1 was not gated again after s0 landed
    # the target moved to the stacked batch's tested commit, which holds s0 then s1
    assert jobs["demo-s1"]["status"]["mergedCommit"] == batch["commit"]
    assert sample_repo.run_tests(url, tmp_path) == 0
