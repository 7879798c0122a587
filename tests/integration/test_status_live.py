"""What Flux (kstatus), Argo CD and `kubectl wait` make of the objects the operator itself writes, on a real API
server: issue 12's table, with builds driven into each state by the real operator and real agents."""

from __future__ import annotations

import sample_repo
import yaml
from k8s_builders import condition, dump, get
from test_delivery import delivery_build

from longshot_testing import wait_for
from status_tools import argo_health, kstatus_live_by_kind

BROKEN = {"tests/test_broken.py": "import unittest\n\n\nclass Broken(unittest.TestCase):\n"
                                  "    def test_never(self):\n        self.fail('never passes')\n"}


def one_task(name: str, steps: list[dict[str, object]]) -> dict[str, object]:
    return {"roles": {"planner": [{"finish": {"summary": "one", "tasks": [{"name": name, "description": "do"}]}}]},
            "tasks": {name: steps}}


def test_kstatus_argo_cd_and_kubectl_wait_on_live_objects(operator, kubelet, core_v1, custom, namespace, tmp_path,
                                                          control_plane, kubectl):
    good = sample_repo.make(tmp_path / "good")
    broken = sample_repo.make(tmp_path / "broken", BROKEN)
    write = [{"write": {"path": "x.txt", "content": "x\n"}}, {"finish": "x"}]
    cases = {
        "passed": (good, one_task("w", write), {}),
        "failed": (broken, one_task("w", write), {"qualityGate": {"profile": "minimal", "testCommand": "true"},
                                                  "finalization": {"maxAttempts": 1}}),
        "rejected": (good, {"roles": {"planner": [{"finish": {"summary": "cycle", "tasks": [
            {"name": "a", "description": "a", "depends_on": ["b"]},
            {"name": "b", "description": "b", "depends_on": ["a"]}]}}]}}, {"planner": {"maxReplans": 0}}),
        "nofinal": (good, one_task("w", [{"fail": {"class": "AgentError", "message": "cannot"}}]),
                    {"finalization": {"enabled": False}, "retry": {"maxAttempts": 1}}),
        "budget": (good, one_task("w", write), {"budget": {"maxTokens": 0}}),
    }
    for name, (url, script, spec) in cases.items():
        core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": f"script-{name}"},
                                                         "data": {"script.yaml": yaml.safe_dump(script)}})
        b = delivery_build(url, **spec)
        b["metadata"]["name"] = name
        b["spec"]["agent"]["script"] = {"name": f"script-{name}"}
        custom.create_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", b)

    def settled(name: str):
        def check():
            b = get(custom, namespace, "buildrequests", name)
            rec = condition(b, "Reconciling") or {}
            return b if rec.get("status") == "False" and b["status"].get("observedGeneration") == \
                b["metadata"]["generation"] else None
        try:
            return wait_for(check, timeout=180, what=f"{name}: Reconciling=False")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None

    builds = {name: settled(name) for name in cases}
    live = kstatus_live_by_kind(control_plane.kubeconfig, namespace)
    expected = {  # kstatus, Argo CD, Ready reason
        "passed": ("Current", "Healthy", "Succeeded"),
        "failed": ("Failed", "Degraded", "TestsFailed"),
        "rejected": ("Failed", "Degraded", "PlanRejected"),
        "nofinal": ("Failed", "Degraded", "TasksFailed"),
        "budget": ("Failed", "Degraded", "BudgetExceeded"),
    }
    got = {name: (live[("BuildRequest", name)][0], argo_health(builds[name])[0],
                  condition(builds[name], "Ready")["reason"]) for name in cases}
    assert got == expected, dump(custom, namespace)
    for name, b in builds.items():
        assert (condition(b, "Ready")["status"] == "True") == (name == "passed")
        assert all(c["observedGeneration"] == b["metadata"]["generation"] for c in b["status"]["conditions"])
    # the README's wait returns on every outcome, at once now that they are settled
    for name in cases:
        out = kubectl("wait", f"buildrequests.longshot.dev/{name}", "-n", namespace,
                      "--for=condition=Reconciling=False", "--timeout=10s")
        assert out.returncode == 0, out.stderr
    for name in ("passed", "failed", "rejected", "nofinal"):
        out = kubectl("wait", f"buildrequests.longshot.dev/{name}", "-n", namespace,
                      "--for=jsonpath={.status.completionTime}", "--timeout=10s")
        assert out.returncode == 0, out.stderr
    # the tasks and MergeJobs the operator wrote are judged consistently too
    assert live[("MergeJob", "passed-w")][0] == "Current"
    assert live[("AgentTask", "nofinal-w")][0] == "Failed"
    assert argo_health(get(custom, namespace, "agenttasks", "nofinal-w"))[0] == "Degraded"
