"""Warm pools of agent sandboxes on a real API server (docs/warm-pools.md): a warm Pod is claimed once however many
replicas race for it, holds nothing before its claim and only its own task's input after it, and a claim whose
replica was killed before its status write is adopted by the restarted operator, never repeated or lost."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import threading
from collections import Counter
from typing import Any

import git_servers
import httpx
import kubernetes
import pytest
from gateway_attempts import pod_token, record_attempt, secret
from k8s_builders import build, create, get, list_of
from kubelet_double import finish_pod, plan_handoff

from longshot.agent import events, redact, runner
from longshot.agent import gateway as agent_gateway
from longshot.agent import settings as agent_settings
from longshot.api import handoff as ho
from longshot.api import keys
from longshot.config import Settings
from longshot.runtime import kube, pods
from longshot_testing import wait_for

pytestmark = pytest.mark.integration


def serialize(obj: Any) -> dict[str, Any]:
    return kubernetes.client.ApiClient().sanitize_for_serialization(obj)  # type: ignore[no-any-return]


def api_client_of(core_v1: Any) -> Any:
    return kubernetes.client.ApiClient(core_v1.api_client.configuration)


def agent_task(custom: Any, namespace: str, name: str, build_name: str = "wb") -> dict[str, Any]:
    return create(custom, namespace, {
        "apiVersion": "longshot.dev/v1alpha1", "kind": "AgentTask",
        "metadata": {"name": name, "labels": {keys.BUILD: build_name}},
        "spec": {"buildRef": {"name": build_name}, "description": f"the private plan of {name}", "role": "worker"}})


@pytest.fixture
def gateway_settings(gateway_settings: Any) -> Any:
    return gateway_settings.replace(claim_wait_seconds=1.0, claim_poll_seconds=0.1)


def test_two_replicas_racing_for_one_warm_sandbox_claim_it_once(api_client, custom, core_v1, namespace):
    b = create(custom, namespace, build("wb", agent={"warmPool": {"size": 1}}))
    settings = Settings(identity="test", gateway_url="http://gw:8080")
    warm = kube.Kube(api_client).create_pod(pods.build_warm_pod(b, settings, "wb-warm-1", 300))
    assert warm is not None
    rv = warm["metadata"]["resourceVersion"]
    claims = {name: pods.claim_patch(pods.build_agent_pod(agent_task(custom, namespace, name), b, settings, 1), rv,
                                     1000) for name in ("wb-t1", "wb-t2")}
    start, results = threading.Barrier(2), {}

    def claim(name: str) -> None:
        replica = kube.Kube(kubernetes.client.ApiClient(api_client.configuration))  # a replica of its own
        start.wait()
        try:
            results[name] = replica.claim_pod(namespace, "wb-warm-1", claims[name])
        except kube.Conflict as e:
            results[name] = e

    threads = [threading.Thread(target=claim, args=(n,)) for n in claims]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    won = [n for n, r in results.items() if isinstance(r, dict)]
    lost = [n for n, r in results.items() if isinstance(r, kube.Conflict)]
    assert len(won) == 1 and len(lost) == 1, results
    pod = serialize(core_v1.read_namespaced_pod("wb-warm-1", namespace))
    assert pod["metadata"]["ownerReferences"][0]["name"] == won[0]
    assert pod["metadata"]["labels"][keys.TASK] == won[0] == \
        ho.TaskInput.model_validate_json(pod["metadata"]["annotations"][ho.TASK_INPUT_ANNOTATION]).task
    assert pod["spec"]["activeDeadlineSeconds"] == 1000  # lowered by the claim
    # the loser's write can never land later either: its version is gone
    with pytest.raises(kube.Conflict):
        kube.Kube(api_client).claim_pod(namespace, "wb-warm-1", claims[lost[0]])


def test_a_warm_pod_holds_nothing_before_its_claim_and_only_its_own_task_after(
        api_client, custom, core_v1, namespace, gateway):
    b = create(custom, namespace, build("wb", agent={"warmPool": {"size": 2}}))
    settings = Settings(identity="test", gateway_url=gateway.url)
    operator = kube.Kube(api_client)
    warm = {n: operator.create_pod(pods.build_warm_pod(b, settings, n, 300)) for n in ("wb-warm-a", "wb-warm-b")}
    tokens = {n: {"Authorization": f"Bearer {pod_token(core_v1, namespace, p)}"} for n, p in warm.items()}
    before = tokens["wb-warm-a"]
    git = f"{gateway.url}/git/{namespace}/wb.git/info/refs?service=git-upload-pack"
    with httpx.Client(timeout=30) as http:
        # before the claim: no door but the claim's, and that one has nothing to give
        assert http.post(f"{gateway.url}/progress", json={"message": "x"}, headers=before).status_code == 403
        assert http.get(git, headers=before).status_code == 403
        assert http.post(f"{gateway.url}/model/openai/chat/completions", json={}, headers=before).status_code == 403
        assert http.get(f"{gateway.url}/v1/claim", headers=before).status_code == 204
        assert "annotations" not in warm["wb-warm-a"]["metadata"]
        # two tasks claim one sandbox each, as the operator does: the fenced patch, then the attempt's record
        for pod_name, task_name in (("wb-warm-a", "wb-t1"), ("wb-warm-b", "wb-t2")):
            t = agent_task(custom, namespace, task_name)
            cold = pods.build_agent_pod(t, b, settings, 1)
            claimed = operator.claim_pod(namespace, pod_name, pods.claim_patch(
                cold, warm[pod_name]["metadata"]["resourceVersion"], 1000))
            assert claimed is not None
            record_attempt(custom, namespace, task_name, 1, claimed)
        answers = {n: http.get(f"{gateway.url}/v1/claim", headers=h) for n, h in tokens.items()}
        assert {n: (r.status_code, r.json()["task"]) for n, r in answers.items()} == {
            "wb-warm-a": (200, "wb-t1"), "wb-warm-b": (200, "wb-t2")}
        assert "wb-t2" not in answers["wb-warm-a"].text and "wb-t1" not in answers["wb-warm-b"].text
        # after the claim the token is its attempt's: progress lands on its own task, and no other
        assert http.post(f"{gateway.url}/progress", json={"message": "mine"}, headers=before).status_code == 202
    assert (get(custom, namespace, "agenttasks", "wb-t1").get("status") or {}).get("progress", {}).get(
        "message") == "mine"
    assert not (get(custom, namespace, "agenttasks", "wb-t2").get("status") or {}).get("progress")


def agent_pods(core: Any, namespace: str) -> list[Any]:
    return core.list_namespaced_pod(namespace, label_selector="app.kubernetes.io/managed-by=longshot-operator").items


def pooled_build_planned(custom: Any, core: Any, namespace: str, name: str) -> None:
    """Build ``name`` (one worker at a time, a pool of 2) made, and its planner's Pod ended with a plan of 3 tasks."""
    create(custom, namespace, build(name, workers={"max": 1}, agent={"warmPool": {"size": 2}}))
    planner = wait_for(lambda: next((p for p in agent_pods(core, namespace)
                                     if (p.metadata.labels or {}).get(keys.TASK) == f"{name}-planner"), None),
                       timeout=60, what=f"{name}'s planner Pod")
    finish_pod(core, namespace, planner.metadata.name,
               message=plan_handoff(f"{name}-planner",
                                    [{"name": f"t{i}", "description": f"task {i}"} for i in range(3)]))


def test_a_claim_whose_replica_was_killed_before_its_status_write_is_adopted_after_the_restart(
        operator_process, core_v1, custom, namespace, gateway):
    first = operator_process()
    # the planner's Pod: cold, or a warm one claimed (the pool grows for the pending planner too)
    pooled_build_planned(custom, core_v1, namespace, "wp")

    def warm_ready() -> list[Any] | None:
        warm = [p for p in agent_pods(core_v1, namespace) if keys.WARM_TEMPLATE in (p.metadata.labels or {})
                and p.metadata.owner_references[0].kind == "BuildRequest"]
        return warm if len(warm) == 2 else None

    warm = wait_for(warm_ready, timeout=60, what="two warm sandboxes for the pending tasks")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    # the dead replica's claim got as far as its first write: the Pod is the task's, its attempt is not recorded
    pending = next(t for t in list_of(custom, namespace, "agenttasks")
                   if t["spec"]["role"] == "worker" and not (t.get("status") or {}).get("attempts"))
    b = get(custom, namespace, "buildrequests", "wp")
    cold = pods.build_agent_pod(pending, b, Settings(identity="test", gateway_url=gateway.url), 1)
    sandbox = warm[0]
    kube.Kube(kubernetes.client.ApiClient(core_v1.api_client.configuration)).claim_pod(
        namespace, sandbox.metadata.name, pods.claim_patch(cold, sandbox.metadata.resource_version, 1900))
    name = pending["metadata"]["name"]

    operator_process()

    def adopted() -> dict[str, Any] | None:
        t = get(custom, namespace, "agenttasks", name)
        attempts = (t.get("status") or {}).get("attempts") or []
        return t if attempts and attempts[0].get("podUID") else None

    t = wait_for(adopted, timeout=60, what=f"{name}'s claimed sandbox adopted")
    assert [(a["number"], a["pod"], a["podUID"]) for a in t["status"]["attempts"]] == [
        (1, pods.pod_name(name, 1), sandbox.metadata.uid)]
    assert t["status"]["phase"] == "Running"
    pods_now = agent_pods(core_v1, namespace)
    by_task = Counter((p.metadata.labels or {}).get(keys.TASK) for p in pods_now
                      if (p.metadata.labels or {}).get(keys.TASK))
    assert by_task[name] == 1  # no cold Pod beside the claimed one, no second claim
    assert not any(p.metadata.name == pods.pod_name(name, 1) for p in pods_now)
    claimed_by = Counter((p.metadata.labels or {}).get(keys.WARM_CLAIM) for p in pods_now
                         if (p.metadata.labels or {}).get(keys.WARM_CLAIM))
    assert all(n == 1 for n in claimed_by.values()), claimed_by  # no sandbox holds two attempts


def test_a_build_claims_a_sandbox_another_build_of_its_repository_made(operator_process, core_v1, custom, namespace):
    """One pool per repository and template (docs/warm-pools.md): the second build's first attempt runs in a
    sandbox the pool made for the first build, claimed through the real API server."""
    operator_process()
    pooled_build_planned(custom, core_v1, namespace, "wa")

    def made_for_wa() -> list[Any] | None:
        warm = [p for p in agent_pods(core_v1, namespace) if keys.WARM_TEMPLATE in (p.metadata.labels or {})
                and p.metadata.owner_references[0].kind == "BuildRequest"
                and p.metadata.owner_references[0].name == "wa"]
        return warm if len(warm) == 2 else None

    made = {p.metadata.name for p in wait_for(made_for_wa, timeout=60, what="wa's two warm sandboxes")}
    # wa runs one task at a time and its other two wait: the next build of the repository starts its planner
    create(custom, namespace, build("wb", workers={"max": 1}, agent={"warmPool": {"size": 2}}))

    def wb_planner() -> Any:
        return next((p for p in agent_pods(core_v1, namespace)
                     if (p.metadata.labels or {}).get(keys.TASK) == "wb-planner"), None)

    pod = wait_for(wb_planner, timeout=60, what="wb's planner Pod")
    assert pod.metadata.name in made, (pod.metadata.name, made)  # a sandbox wa's pool made, not a cold Pod
    assert [(o.kind, o.name) for o in pod.metadata.owner_references] == [("AgentTask", "wb-planner")]
    assert pod.metadata.labels[keys.BUILD] == "wb"
    t = wait_for(lambda: (lambda t: t if ((t.get("status") or {}).get("attempts") or [{}])[0].get("podUID")
                          else None)(get(custom, namespace, "agenttasks", "wb-planner")),
                 timeout=60, what="wb's planner attempt recorded")
    assert t["status"]["attempts"][0]["podUID"] == pod.metadata.uid


# --- pre-clone (docs/warm-pools.md, "Pre-clone") ------------------------------------------------------------------

PASSWORD = "s3cr3t-upstream-passw0rd"
GIT_IDENTITY = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
                "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
                "GIT_TERMINAL_PROMPT": "0"}


def forge_commit(admin: Any, seed: Any, forge_repo: Any, name: str) -> str:
    (seed / name).write_text(name)
    admin("add", "-A", cwd=seed)
    admin("commit", "--quiet", "-m", name, cwd=seed)
    admin("push", "--quiet", str(forge_repo), "main", cwd=seed)
    return str(admin("rev-parse", "HEAD", cwd=seed))


def as_agent(token: str, *args: str, cwd: Any = None) -> Any:
    """git as the runner runs it: the Pod's token as an extra header, nothing else."""
    env = {**GIT_IDENTITY, "PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "GIT_CONFIG_COUNT": "1",
           "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": f"Authorization: Bearer {token}"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_a_pre_cloning_sandbox_clones_its_builds_repository_before_its_claim_may_not_push_and_its_attempt_fetches(
        core_v1, custom, namespace, gateway, tmp_path):
    admin = git_servers.Git(GIT_IDENTITY, isolated=True, strip=True)
    root, seed = tmp_path / "forge", tmp_path / "seed"
    root.mkdir()
    admin("init", "--quiet", "--bare", "-b", "main", str(root / "app.git"))
    admin("init", "--quiet", "-b", "main", str(seed))
    first = forge_commit(admin, seed, root / "app.git", "one")
    with git_servers.git_http(root, git=admin, accounts=[("alice", PASSWORD)]) as forge:
        secret(core_v1, namespace, "git-token", {"username": "alice", "password": PASSWORD})
        repo = {"url": forge.url("app"), "credentialsSecret": "git-token"}
        b = create(custom, namespace, build("pc", repository=repo, agent={"warmPool": {"size": 1, "preClone": True}}))
        off = create(custom, namespace, build("nopc", repository=repo, agent={"warmPool": {"size": 1}}))
        settings = Settings(identity="test", gateway_url=gateway.url)
        operator = kube.Kube(api_client_of(core_v1))
        sandbox = operator.create_pod(pods.build_warm_pod(b, settings, "pc-warm-1", 300))
        other = operator.create_pod(pods.build_warm_pod(off, settings, "nopc-warm-1", 300))
        assert sandbox is not None and other is not None
        token, other_token = pod_token(core_v1, namespace, sandbox), pod_token(core_v1, namespace, other)
        with httpx.Client(timeout=30) as http:
            asked = http.get(f"{gateway.url}/v1/claim?wait=0", headers={"Authorization": f"Bearer {token}"})
            assert (asked.status_code, asked.headers.get(ho.PRE_CLONE_HEADER)) == (204, f"{namespace}/pc")
            plain = http.get(f"{gateway.url}/v1/claim?wait=0", headers={"Authorization": f"Bearer {other_token}"})
            assert plain.status_code == 204 and ho.PRE_CLONE_HEADER not in plain.headers  # its pool does not
            polled = http.get(f"{gateway.url}/v1/claim", headers={"Authorization": f"Bearer {token}"})
            assert polled.status_code == 204 and ho.PRE_CLONE_HEADER not in polled.headers  # a long poll: not asked
            # before the claim: every other door still closed, the push's advertisement included
            for url in (f"{gateway.url}/git/{namespace}/pc.git/info/refs?service=git-receive-pack",):
                assert http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 403
            assert http.post(f"{gateway.url}/progress", json={"message": "x"},
                             headers={"Authorization": f"Bearer {token}"}).status_code == 403
        # the runner's pre-clone, as the warm sandbox runs it
        (tmp_path / "token").write_text(token)
        gw = agent_gateway.Gateway(url=gateway.url, token_file=tmp_path / "token")
        env = {**GIT_IDENTITY, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LONGSHOT_WORKSPACE_DIR":
               str(tmp_path / "ws"), "LONGSHOT_TASK_INPUT": str(tmp_path / "task.json")}
        paths, tuning = agent_settings.Paths.from_env(env), agent_settings.Settings.from_env(env)
        out = io.StringIO()
        ev = events.Events(redact.Redactor(), stream=out)
        warm = runner.PreClone(paths, gw, ev, env, 60)
        warm(namespace, "pc")
        assert warm.url == f"{gateway.url}/git/{namespace}/pc.git"
        assert admin("rev-parse", "HEAD", cwd=paths.checkout) == first
        assert token not in out.getvalue() and PASSWORD not in out.getvalue()
        assert "alice" not in (paths.checkout / ".git" / "config").read_text()  # no credential in the clone
        # it reads its own build's repository only, and pushes nothing before its claim
        assert as_agent(token, "ls-remote", f"{gateway.url}/git/{namespace}/nopc.git").returncode != 0
        admin("checkout", "--quiet", "-b", "sneak", cwd=paths.checkout)
        refused = as_agent(token, "push", warm.url, "sneak:refs/heads/sneak", cwd=paths.checkout)
        assert refused.returncode != 0 and "403" in refused.stderr
        assert as_agent(other_token, "ls-remote", f"{gateway.url}/git/{namespace}/nopc.git").returncode != 0
        admin("checkout", "--quiet", "main", cwd=paths.checkout)
        admin("branch", "--quiet", "-D", "sneak", cwd=paths.checkout)
        marker = paths.checkout / ".git" / "made-before-the-claim"
        marker.write_text("x")
        # the target moves on; then an attempt claims the sandbox
        second = forge_commit(admin, seed, root / "app.git", "two")
        t = agent_task(custom, namespace, "pc-t1", "pc")
        claimed = operator.claim_pod(namespace, "pc-warm-1", pods.claim_patch(
            pods.build_agent_pod(t, b, settings, 1), sandbox["metadata"]["resourceVersion"], 1000))
        record_attempt(custom, namespace, "pc-t1", 1, claimed)
        (tmp_path / "task.json").write_text("")
        task = runner.load_task_input(paths.task_input, gw, sleep=lambda s: None)
        assert task.task == "pc-t1"
        access = runner.repository_access(task, paths, ev, gw)
        attempt = runner.prepare(task, paths, tuning, ev, env, access, gw, sleep=lambda s: None,
                                 rand=lambda: 0.5, pre_cloned=warm)
        # fetched into the pre-clone, not cloned afresh: the checkout is the one made before the claim, at the new tip
        assert admin("rev-parse", "HEAD", cwd=paths.checkout) == second == attempt.git.head()
        assert (paths.checkout / "one").exists() and (paths.checkout / "two").exists()
        assert marker.exists()
        # a pre-clone that cannot be brought up to date is dropped, and the attempt clones afresh
        admin("symbolic-ref", "--delete", "refs/remotes/origin/HEAD", cwd=paths.checkout)
        again = runner.prepare(task, paths, tuning, ev, env, access, gw, sleep=lambda s: None, rand=lambda: 0.5,
                               pre_cloned=warm)
        assert again.git.head() == second and not marker.exists()
        assert "could not be brought up to date" in out.getvalue()
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        cloning = next(e for e in lines if e.get("message") == "cloning")
        assert "pre_cloned_seconds" in cloning
        assert token not in out.getvalue()
