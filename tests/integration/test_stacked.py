"""``spec.dependencies: stacked`` on the real API server with real git and the process kubelet (agent Pods run the
real runner with the scripted backend): a dependent starts from its dependency's branch before that merges, and
its branch merges after it, as its own commits only."""

from __future__ import annotations

import sample_repo
from k8s_builders import condition, create, dump, get
from test_delivery import add_tests, delivery_build, finalized, script_configmap

from longshot.api import timeutil

TEST = sample_repo.TEST_COMMAND


def script() -> dict:
    return {
        "roles": {"planner": [{"finish": {"summary": "add, then mul on top of it", "tasks": [
            {"name": "add", "description": "Add add()", "scope": ["calc/add.py", "tests/test_add.py"]},
            {"name": "mul", "description": "Add mul() using add()", "scope": ["calc/mul.py", "tests/test_mul.py"],
             "depends_on": ["add"]},
        ]}}]},
        "tasks": {
            "add": [{"write": {"path": "calc/add.py", "content": "def add(a, b):\n    return a + b\n"}},
                    {"write": {"path": "tests/test_add.py", "content": add_tests("add", "+")}},
                    {"finish": "Add add()"}],
            # mul's checkout must hold add's unmerged work: the attempt fails without it
            "mul": [{"read": {"path": "calc/add.py"}, "check": True},
                    {"write": {"path": "calc/mul.py", "content": "from calc.add import add\n\n\n"
                                                                "def mul(a, b):\n    return a * b + add(0, 0)\n"}},
                    {"write": {"path": "tests/test_mul.py", "content": add_tests("mul", "*")}},
                    {"finish": "Add mul()"}],
        },
    }


def test_a_stacked_dependent_starts_on_its_dependency_before_the_merge_and_merges_after_it(
        operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    bare = url.removeprefix("file://")
    # add's gate holds until mul's branch is pushed (bounded at 60 s): add cannot merge before mul has worked,
    # whatever the machine's speed, so mul can only have seen add's work on add's unmerged branch
    held = (f"for i in $(seq 600); do git --git-dir={bare} rev-parse -q --verify "
            f"refs/heads/longshot/{namespace}/demo/demo-mul >/dev/null && break; sleep 0.1; done; {TEST}")
    script_configmap(core_v1, namespace, script())
    create(custom, namespace, delivery_build(url, dependencies="stacked",
                                             qualityGate={"profile": "minimal", "testCommand": held}))

    b = finalized(custom, namespace, timeout=240)
    assert condition(b, "Finalized")["reason"] == "Passed", dump(custom, namespace)
    add = get(custom, namespace, "agenttasks", "demo-add")
    mul = get(custom, namespace, "agenttasks", "demo-mul")
    add_job = get(custom, namespace, "mergejobs", "demo-add")
    mul_job = get(custom, namespace, "mergejobs", "demo-mul")

    # mul ran once: its checkout had add's file (the scripted check would have failed the attempt)
    assert len(mul["status"]["attempts"]) == 1, dump(custom, namespace)
    # ... from add's branch head, before add merged: the target it started from did not have add
    add_commit = add["status"]["handoff"]["commit"]
    handoff = mul["status"]["handoff"]
    assert handoff["stackedOn"] == [add_commit]
    assert not sample_repo.is_ancestor(url, add_job["status"]["mergedCommit"], handoff["baseCommit"])
    started = timeutil.parse(mul["status"]["attempts"][0]["startTime"])
    add_merged = timeutil.parse(condition(add_job, "Merged")["lastTransitionTime"])
    assert started <= add_merged
    # mul's handoff and MergeJob carry its own change and what it was stacked on
    assert sorted(handoff["filesChanged"]) == ["calc/mul.py", "tests/test_mul.py"]
    assert mul_job["spec"]["stackedOn"] == [add_commit]

    # both merged, mul after add, and the target has both files and passes its tests
    assert add_job["status"]["phase"] == mul_job["status"]["phase"] == "Merged"
    assert add_job["status"]["mergedCommit"] != mul_job["status"]["mergedCommit"]
    assert sample_repo.is_ancestor(url, add_job["status"]["mergedCommit"], mul_job["status"]["mergedCommit"])
    assert sample_repo.show(url, "calc/add.py") and sample_repo.show(url, "calc/mul.py")
    assert sample_repo.run_tests(url, tmp_path) == 0
    # add's work is on the target once: mul's own commits were replayed, not add's again
    assert sum(m.startswith("Add add()") for m in sample_repo.log(url)) == 1


def test_a_stacked_dependent_never_merges_without_its_dependency(operator, kubelet, core_v1, custom, namespace,
                                                                 tmp_path):
    url = sample_repo.make(tmp_path)
    s = script()
    # add also adds a file the gate refuses: its candidate is evicted, and with no fixer allowed it never merges
    s["tasks"]["add"].insert(0, {"write": {"path": "BROKEN", "content": "the gate refuses this\n"}})
    script_configmap(core_v1, namespace, s)
    gate = {"profile": "minimal", "testCommand": f"test ! -e BROKEN && {TEST}"}
    create(custom, namespace, delivery_build(url, dependencies="stacked", merge={"maxFixers": 0}, qualityGate=gate,
                                             reconciler={"command": "true", "intervalSeconds": 30}))

    b = finalized(custom, namespace, timeout=240)
    assert condition(b, "Finalized")["status"] == "False", dump(custom, namespace)
    add_job = get(custom, namespace, "mergejobs", "demo-add")
    mul_job = get(custom, namespace, "mergejobs", "demo-mul")
    assert add_job["status"]["phase"] == "Failed" and condition(add_job, "Stalled")["reason"] == "NoFixer"
    # mul's branch carries add's work: it fails naming add instead of waiting forever or landing it
    assert mul_job["status"]["phase"] == "Failed", dump(custom, namespace)
    stalled = condition(mul_job, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "DependencyFailed"
    assert "dependency demo-add" in stalled["message"]
    assert sample_repo.show(url, "calc/add.py") is None and sample_repo.show(url, "calc/mul.py") is None
