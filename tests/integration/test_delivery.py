"""Delivery on the real API server with real git: gates, the merge queue, conflicts, sweeps, finalization,
metrics.

Agent Pods are run by the process kubelet (tests/integration/process_kubelet.py): the real agent runner
with the scripted backend, pushing to a real git repository.
"""

from __future__ import annotations

import httpx
import sample_repo
import yaml
from k8s_builders import build, condition, create, dump, get, list_of

from longshot.testing import wait_for

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


def finalized(custom, namespace, timeout=90):
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
    assert condition(b, "Finalized")["status"] == "True", condition(b, "Finalized")
    assert condition(b, "Finalized")["reason"] == "Passed"
    assert condition(b, "Ready")["status"] == "True"
    assert condition(b, "Merged")["status"] == "True"
    assert b["status"]["phase"] == "Succeeded"
    assert b["status"]["merges"]["merged"] == 2
    assert b["status"]["lastSweep"]["result"] == "Passed"
    assert b["status"]["finalizationAttempts"] == 1
    # the code is on main, with a trailer per merge, and its tests pass
    assert sample_repo.show(url, "calc/add.py") and sample_repo.show(url, "calc/mul.py")
    messages = sample_repo.log(url)
    assert sum("Longshot-Merge: " in m for m in messages) == 2
    assert sample_repo.run_tests(url, tmp_path) == 0
    # each merge passed its quality gate first, in a tester Pod
    gates = [t for t in list_of(custom, namespace, "agenttasks")
             if t["metadata"].get("labels", {}).get("longshot.dev/purpose") == "gate"]
    assert len(gates) == 2 and all(t["status"]["handoff"]["verdict"] == "passed" for t in gates)
    jobs = list_of(custom, namespace, "mergejobs")
    assert {j["status"]["phase"] for j in jobs} == {"Merged"}
    assert all(condition(j, "Merged")["status"] == "True" for j in jobs)
    # the metrics endpoint shows what happened
    text = httpx.get(f"http://127.0.0.1:{operator_env['LONGSHOT_METRICS_PORT']}/metrics").text
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['longshot_merges_total{result="Merged"}'] >= 2
    assert samples['longshot_finalizations_total{outcome="Passed"}'] >= 1
    assert samples['longshot_replica_role{role="leader"}'] == 1


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
    assert condition(b, "Ready")["status"] == "True" and b["status"]["phase"] == "Failed"
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


def test_conflict_leads_to_a_fixer_task_and_then_a_merge(operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, conflict_script())
    create(custom, namespace, delivery_build(url, merge={"strategy": "rebase", "maxConflictRetries": 0}))
    b = finalized(custom, namespace, timeout=150)
    assert finalization_status(b) == ("True", "Passed"), dump(custom, namespace)
    jobs = {j["metadata"]["name"]: j for j in list_of(custom, namespace, "mergejobs")}
    # the two branches ran in parallel from the same base: the first to pass its gate merged, the other
    # conflicted and was handed to a fixer
    phases = {name: jobs[name]["status"]["phase"] for name in ("demo-a", "demo-b")}
    assert sorted(phases.values()) == ["Conflicted", "Merged"], phases
    loser = next(name for name, phase in phases.items() if phase == "Conflicted")
    conflicted = jobs[loser]
    assert conflicted["status"]["conflictingFiles"] == ["calc/greet.py"]
    assert condition(conflicted, "Ready")["reason"] == "FixerCreated"
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
