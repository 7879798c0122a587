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
