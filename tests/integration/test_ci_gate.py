"""The team's own CI as the merge queue's gate (``spec.merge.gate.by: ci``) on the real API server, real git, the
stand-in forge (forge_server.py) and a real CI stand-in process (tests/ci_standin.py) that runs the repository's
tests on every pushed queue branch and posts the verdict through the forge's API (GitHub check runs; GitLab commit
statuses, whose pipeline is the gate). No tester Pod gates: the CI's verdict on each speculative commit does.

Every GitHub exchange (the operator's reads, the CI's posts) is checked against GitHub's published description when
the forge stops (``forge_server(check_contract)``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sample_repo
from forge_server import forge_server
from k8s_builders import condition, create, dump, get
from kubernetes.client.exceptions import ApiException
from test_delivery import add_tests, delivery_build, script_configmap

from longshot_testing import wait_for

TOKEN = "forge-token-0123456789"
PROJECT = "org/calc"
STANDIN = Path(__file__).resolve().parents[1] / "ci_standin.py"
BROKEN_TEST = ("import unittest\n\n\nclass T(unittest.TestCase):\n    def test_broken(self):\n"
               "        self.assertEqual(1, 2)\n")


def three_tasks_one_culprit():
    """a, b and c, independent; b adds a failing test (the culprit)."""
    def files(name, extra=None):
        return [{"write": {"path": f"calc/{name}.py", "content": f"def {name}(a, b):\n    return a + b\n"}},
                {"write": {"path": f"tests/test_{name}.py", "content": extra or add_tests(name, "+")}},
                {"finish": f"Add {name}()"}]

    tasks = [{"name": n, "description": f"Add {n}()", "scope": [f"calc/{n}.py", f"tests/test_{n}.py"]}
             for n in ("a", "b", "c")]
    return {"roles": {"planner": [{"finish": {"summary": "three functions", "tasks": tasks}}],
                      "reviewer": [{"finish": {"summary": "fine", "verdict": "approved"}}]},
            "tasks": {"a": files("a"), "b": files("b", BROKEN_TEST), "c": files("c")}}


def one_task():
    return {"roles": {"planner": [{"finish": {"summary": "one", "tasks": [
        {"name": "a", "description": "Add a()", "scope": ["calc/a.py"]}]}}]},
        "tasks": {"a": [{"write": {"path": "calc/a.py", "content": "def a():\n    return 1\n"}}, {"finish": "a"}]}}


def ci_build(url, api, provider, checks, *, timeout=120, **merge):
    return delivery_build(url, merge={
        "window": 4, "pullRequest": {"provider": provider, "apiUrl": api, "project": PROJECT,
                                     "tokenSecretRef": {"name": "forge-token"}},
        "gate": {"by": "ci", "checks": checks, "timeoutSeconds": timeout, "pollSeconds": 1}, **merge})


@pytest.fixture
def forge():
    with forge_server(TOKEN) as s:
        yield s


@pytest.fixture
def ci(tmp_path):
    """Start the CI stand-in on a repository (returns its process); stopped at the end."""
    procs = []

    def start(url, api, *, forge="github", delay=0.0, name="ci/test"):
        token = tmp_path / "ci-token"
        token.write_text(TOKEN)
        proc = subprocess.Popen([sys.executable, str(STANDIN), "--git-dir", url.removeprefix("file://"), "--api", api,
                                 "--project", PROJECT, "--token-file", str(token), "--forge", forge, "--name", name,
                                 "--command", sample_repo.TEST_COMMAND, "--delay", str(delay)],
                                stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    with open(tmp_path / "ci.log", "w") as log:
        yield start
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def secret(core_v1, namespace):
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "forge-token"}, "stringData": {"token": TOKEN}})


def job(custom, namespace, name, test, what, timeout=180):
    def reached():
        try:
            j = get(custom, namespace, "mergejobs", name)
        except ApiException:
            return None
        return j if test(j) else None

    try:
        return wait_for(reached, timeout=timeout, what=f"MergeJob {name} {what}")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None


def phase(p):
    return lambda j: (j.get("status") or {}).get("phase") == p


def queue_refs(url):
    return subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "for-each-ref", "--format=%(refname)",
                           "refs/heads/longshot"], capture_output=True, text=True, check=True).stdout.split()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_the_ci_gates_the_batch_the_culprit_alone_is_evicted_and_its_fixer_gets_the_check_and_its_link(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge, ci, provider):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    api = forge.github_url if provider == "github" else forge.gitlab_url
    check = "ci/test" if provider == "github" else "pipeline"  # GitLab: the commit's pipeline is the gate
    ci(url, api, forge=provider)
    script_configmap(core_v1, namespace, three_tasks_one_culprit())
    secret(core_v1, namespace)
    create(custom, namespace, ci_build(url, api, provider, [check], requireApproval=True))

    # the three wait for approval; approved together, they are gated together as they would land
    names = [f"demo-{n}" for n in ("a", "b", "c")]
    for n in names:
        job(custom, namespace, n, phase("AwaitingApproval"), "AwaitingApproval")
    for n in names:
        custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "mergejobs", n,
                                              {"spec": {"approved": True}})

    # the innocents land, the culprit alone is evicted by the CI's verdict
    for n in ("demo-a", "demo-c"):
        job(custom, namespace, n, phase("Merged"), "Merged")
    culprit = job(custom, namespace, "demo-b", phase("Failed"), "Failed")
    gates = condition(culprit, "GatesPassed")
    assert (gates["status"], gates["reason"]) == ("False", "Evicted")
    assert f"the required CI checks {check}" in gates["message"]
    assert sample_repo.show(url, "calc/a.py") and sample_repo.show(url, "calc/c.py")
    assert sample_repo.show(url, "tests/test_b.py") is None
    assert sample_repo.run_tests(url, tmp_path / "verify") == 0  # the target is green

    # the fixer is told the failing check's name and its link on the CI
    fixer_name = culprit["status"]["fixer"]
    fixer = get(custom, namespace, "agenttasks", fixer_name)
    description = fixer["spec"]["description"]
    assert f"the required check {check} failed" in description, description
    assert "http://ci.example/org/calc/runs/" in description if provider == "github" else \
        "https://gitlab.example/org/calc/-/pipelines/" in description

    # the queue read the CI's verdicts from the forge: no tester Pod gated
    assert not [t for t in custom.list_namespaced_custom_object("longshot.dev", "v1alpha1", namespace,
                                                                "agenttasks")["items"]
                if t["metadata"].get("labels", {}).get("longshot.dev/batch")]
    reads = [r for r in forge.requests if r.method == "GET" and ("check-runs" in r.path or "/status" in r.path
                                                                  or "pipelines" in r.path)]
    assert reads, "the queue never read the CI's checks"
    # and the queue branches are deleted after use
    wait_for(lambda: not [r for r in queue_refs(url) if "/_queue/" in r], timeout=60,
             what=f"no queue branch left (now {[r for r in queue_refs(url) if '/_queue/' in r]})")


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("checks", "delay", "reason"), [
    (["ci/absent"], 0.0, "no check named ci/absent was reported on the commit within 10s"),
    (["ci/test"], 600.0, "the required check ci/test was still pending after 10s"),
], ids=["missing", "timeout"])
def test_a_missing_or_timed_out_check_breaks_the_gate_with_its_reason_and_evicts_nobody(
        operator, kubelet, core_v1, custom, namespace, tmp_path, forge, ci, checks, delay, reason):
    url = sample_repo.make(tmp_path)
    forge.repo(PROJECT, url)
    ci(url, forge.github_url, delay=delay)
    script_configmap(core_v1, namespace, one_task())
    secret(core_v1, namespace)
    create(custom, namespace, ci_build(url, forge.github_url, "github", checks, timeout=10))

    j = job(custom, namespace, "demo-a", lambda j: reason in str((j.get("status") or {}).get("attempts")),
            f"an Error saying {reason!r}")
    assert j["status"]["attempts"][-1]["result"] == "Error"
    assert j["status"]["phase"] in ("Queued", "Testing")  # tried again, not evicted, no fixer
    assert not j["status"].get("fixer")


def test_the_api_refuses_a_ci_gate_without_checks_or_forge(custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    no_checks = ci_build(url, "http://127.0.0.1:1/github", "github", [])
    with pytest.raises(ApiException) as e:
        create(custom, namespace, no_checks)
    assert "spec.merge.gate.checks" in e.value.body
    no_forge = delivery_build(url, merge={"gate": {"by": "ci", "checks": ["ci/test"]}})
    with pytest.raises(ApiException) as e:
        create(custom, namespace, no_forge)
    assert "spec.merge.pullRequest" in e.value.body
