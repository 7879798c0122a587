"""Fair admission when the cluster is full (issue 57), on a real API server and a real kube-scheduler.

Two Nodes with 1 cpu each (``allocatable``; no kubelet: the test plays it, marking each bound agent Pod Running, as
kwok would) and the operator with ``LONGSHOT_ADMISSION_CAPACITY=auto``: an agent Pod requests 250m, so 8 fit.
Tenant A (the ``namespace`` fixture) has one build with 1,600 pending AgentTasks (created through the API, as its
planner would). Once A fills the nodes, tenant B creates one build: its planner task waits in line, says so in its
``Admitted`` condition, and when one of A's agents ends (capacity frees), B's planner Pod is the next Pod made,
within 2 s. No Pod is ever made that the kube-scheduler cannot place: every agent Pod is bound, none is reported
Unschedulable, and the Pods bound never ask for more than the nodes have.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from k8s_builders import build, condition, create, get, task
from kubelet_double import finish_pod, handoff, run_pod

from longshot_testing import controlplane, wait_for

pytestmark = pytest.mark.integration

NODES = 2
NODE_CPU = "1"
AGENT_CPU_MILLIS = 250
SLOTS = NODES * 1000 // AGENT_CPU_MILLIS
NOISY_TASKS = 1600
BOUND_SECONDS = 2.0
"""How soon after capacity frees tenant B's first agent Pod must be made (the issue's bound)."""
MANAGED = "app.kubernetes.io/managed-by=longshot-operator"


@pytest.fixture
def quiet_namespace(another_namespace) -> str:  # type: ignore[no-untyped-def]
    """Tenant B's namespace (Pod Security ``restricted``, as the ``namespace`` fixture's)."""
    return str(another_namespace("t-quiet"))


@pytest.fixture
def small_nodes(control_plane: controlplane.ControlPlane, core_v1: kubernetes.client.CoreV1Api,
                tmp_path: Path) -> Iterator[list[str]]:
    """Two Ready Nodes of 1 cpu and a real kube-scheduler binding Pods to them (removed afterwards)."""
    # names of their own: the Pods of an earlier test's namespace, still being deleted, stay bound to its nodes
    suffix = uuid.uuid4().hex[:6]
    names = [f"small-node-{suffix}-{i}" for i in range(NODES)]
    cap = {"cpu": NODE_CPU, "memory": "8Gi", "pods": "110"}
    for n in names:
        core_v1.create_node({"metadata": {"name": n, "labels": {"kubernetes.io/hostname": n}}})
        core_v1.patch_node_status(n, {"status": {"allocatable": cap, "capacity": cap, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "the test plays the kubelet",
             "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}]}})
        core_v1.patch_node(n, {"spec": {"taints": None}})
    kubeconfig = controlplane.write_kubeconfig(tmp_path / "scheduler.kubeconfig", control_plane.server,
                                               control_plane.pki / "ca.crt", control_plane.scheduler_token,
                                               user="system:kube-scheduler")
    conf = tmp_path / "scheduler.yaml"
    conf.write_text("apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n"
                    f"clientConnection: {{kubeconfig: {kubeconfig}}}\nleaderElection: {{leaderElect: false}}\n")
    log = open(tmp_path / "kube-scheduler.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([control_plane.binary("kube-scheduler"), f"--config={conf}",
                             f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
                             "--bind-address=127.0.0.1", f"--secure-port={controlplane.free_port()}", "--v=1"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield names
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        for n in names:
            try:
                core_v1.delete_node(n)
            except kubernetes.client.ApiException as e:
                if e.status != 404:
                    raise


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Kubelet:
    """Watches the agent Pods of the namespaces: records when each was made (as the watch saw it), marks each bound
    one Running, and remembers any the kube-scheduler found no room for."""

    def __init__(self, core: kubernetes.client.CoreV1Api, namespaces: list[str]) -> None:
        self.core = core
        self.namespaces = namespaces
        self.made: dict[tuple[str, str], float] = {}
        self.order: list[tuple[str, str]] = []
        self.running: set[tuple[str, str]] = set()
        self.unschedulable: set[tuple[str, str]] = set()
        self.ended: set[tuple[str, str]] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(4)
        self.threads = [threading.Thread(target=self._watch, args=(ns,), daemon=True) for ns in namespaces]

    def __enter__(self) -> Kubelet:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(35)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _watch(self, namespace: str) -> None:
        while not self.stop.is_set():
            w = kubernetes.watch.Watch()
            try:
                for event in w.stream(self.core.list_namespaced_pod, namespace, label_selector=MANAGED,
                                      timeout_seconds=5):
                    self._seen(event["type"], event["object"])
                    if self.stop.is_set():
                        break
            except Exception:
                if self.stop.is_set():
                    return

    def _seen(self, kind: str, pod: Any) -> None:
        key = (pod.metadata.namespace, pod.metadata.name)
        with self.lock:
            if key not in self.made:
                self.made[key] = time.monotonic()
                self.order.append(key)
            for c in pod.status.conditions or []:
                if c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable":
                    self.unschedulable.add(key)
            start = (kind != "DELETED" and pod.spec.node_name and pod.status.phase == "Pending"
                     and key not in self.running and pod.metadata.deletion_timestamp is None)
            if start:
                self.running.add(key)
        if start:
            self.pool.submit(run_pod, self.core, key[0], key[1])

    def live(self) -> list[tuple[str, str]]:
        """Agent Pods that exist and have not ended, as this watch saw them made (ended ones are recorded by
        :meth:`end`)."""
        with self.lock:
            return [k for k in self.order if k not in self.ended]

    def end(self, key: tuple[str, str], message: str) -> float:
        """End an agent (its Pod Succeeded with a handoff); the moment capacity frees."""
        with self.lock:
            self.ended.add(key)
        finish_pod(self.core, key[0], key[1], message=message)
        return time.monotonic()


def _create_tasks(custom: kubernetes.client.CustomObjectsApi, namespace: str, build_name: str, n: int) -> None:
    def one(i: int) -> None:
        t = task(f"w{i:04d}", buildRef={"name": build_name}, description=f"task {i}")
        t["metadata"]["labels"] = {"longshot.dev/build": build_name}
        create(custom, namespace, t)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(n)))


def _metric(port: str, name: str) -> float | None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
def fair_operator(namespace: str, quiet_namespace: str, operator_watching, operator_env: dict[str, str],
                  monkeypatch: pytest.MonkeyPatch) -> object:  # type: ignore[no-untyped-def]
    """The operator admitting by capacity, watching tenant A's namespace and tenant B's."""
    for k, v in {"LONGSHOT_ADMISSION_CAPACITY": "auto", "LONGSHOT_ADMISSION_REFRESH_SECONDS": "1",
                 "LONGSHOT_MAX_WORKERS": "50"}.items():
        monkeypatch.setenv(k, v)
        operator_env[k] = v
    return operator_watching(namespace, quiet_namespace)


@pytest.mark.timeout(240)
def test_a_quiet_tenant_gets_the_first_slot_that_frees_and_no_pod_is_made_that_cannot_run(
        small_nodes, fair_operator, core_v1, custom, namespace, quiet_namespace, operator_env):
    with Kubelet(core_v1, [namespace, quiet_namespace]) as kubelet:
        noisy = build("noisy", workers={"max": 1000})
        noisy["spec"]["finalization"] = {"enabled": False}
        create(custom, namespace, noisy)
        _create_tasks(custom, namespace, "noisy", NOISY_TASKS)
        # A fills the nodes: 8 agents (its planner and 7 workers) running, and the rest of its 1,600 wait in line
        wait_for(lambda: len(kubelet.running) >= SLOTS, timeout=90, what=f"{SLOTS} of tenant A's agents running",
                 interval=0.2)
        wait_for(lambda: (condition(get(custom, namespace, "agenttasks", "w0000") or {}, "Admitted") or {}
                          ).get("reason") in ("WaitingForCapacity", "Admitted"), timeout=30,
                 what="tenant A's first task admitted or in line")
        waiting = _metric(operator_env["LONGSHOT_METRICS_PORT"], "longshot_admission_waiting_tasks")
        assert waiting is not None and waiting > 0, waiting
        assert _metric(operator_env["LONGSHOT_METRICS_PORT"],
                       'longshot_admission_capacity_mode{mode="auto"}') == 1.0

        # B's build: its planner task waits in line, first, and says so
        create(custom, quiet_namespace, build("quiet"))
        planner = "quiet-planner"

        def in_line() -> dict[str, Any] | None:
            try:
                t = get(custom, quiet_namespace, "agenttasks", planner)
            except kubernetes.client.ApiException:
                return None
            c = condition(t, "Admitted") or {}
            return c if c.get("reason") == "WaitingForCapacity" else None

        said = wait_for(in_line, timeout=60, what="tenant B's planner task waiting for capacity, in line")
        assert said["status"] == "False" and "place 1 in line" in said["message"], said
        assert f"namespace {quiet_namespace} runs 0 agent(s)" in said["message"], said
        assert len(kubelet.live()) == SLOTS  # nothing was made past the room while B waited

        # capacity frees: one of A's agents ends; the next Pod made is B's, within the bound
        ended = kubelet.live()[-1]
        before = set(kubelet.made)
        freed = kubelet.end(ended, handoff(ended[1].rsplit("-a", 1)[0], summary="nothing to change"))
        wait_for(lambda: any(k[0] == quiet_namespace for k in kubelet.made), timeout=60,
                 what="tenant B's first agent Pod", interval=0.02)
        quiet_pod = next(k for k in kubelet.made if k[0] == quiet_namespace)
        took = kubelet.made[quiet_pod] - freed
        print(f"tenant B's first agent Pod {took:.2f}s after one of A's {NOISY_TASKS}-task build's agents ended")
        assert took < BOUND_SECONDS, f"tenant B's first Pod came {took:.2f}s after capacity freed"
        made_after = [k for k in kubelet.order if k not in before]
        assert made_after[0] == quiet_pod, made_after  # the freed room went to B, not to A's line
        wait_for(lambda: quiet_pod in kubelet.running, timeout=30, what="tenant B's Pod bound and running")

    # no Pod was made that could not run: every one was bound, none reported Unschedulable, and never more at once
    # than the nodes hold
    assert kubelet.unschedulable == set()
    pods = core_v1.list_pod_for_all_namespaces(label_selector=MANAGED).items
    live = [p for p in pods if p.metadata.namespace in (namespace, quiet_namespace)
            and p.status.phase not in ("Succeeded", "Failed")]
    assert all(p.spec.node_name for p in live), [p.metadata.name for p in live if not p.spec.node_name]
    assert len(live) <= SLOTS, len(live)


@pytest.fixture
def auto_operator(operator_watching, namespace: str, operator_env: dict[str, str],
                  monkeypatch: pytest.MonkeyPatch) -> object:  # type: ignore[no-untyped-def]
    """The operator with admission by capacity on (the chart's default), watching the test's namespace."""
    for k, v in {"LONGSHOT_ADMISSION_CAPACITY": "auto", "LONGSHOT_ADMISSION_REFRESH_SECONDS": "1"}.items():
        monkeypatch.setenv(k, v)
        operator_env[k] = v
    return operator_watching(namespace)


def test_without_nodes_to_count_admission_falls_back_to_the_numeric_limits(
        auto_operator, core_v1, custom, namespace, operator_env, caplog):
    assert [n.metadata.name for n in core_v1.list_node().items] == []  # this tier's control plane has no Node
    create(custom, namespace, build("lone"))
    wait_for(lambda: core_v1.list_namespaced_pod(namespace, label_selector=MANAGED).items, timeout=60,
             what="the build's planner Pod, admitted by the numeric limits")
    port = operator_env["LONGSHOT_METRICS_PORT"]
    wait_for(lambda: _metric(port, 'longshot_admission_capacity_mode{mode="fallback"}') == 1.0, timeout=30,
             what="the fallback said in longshot_admission_capacity_mode")
    assert any("admitting by the numeric limits alone" in r.getMessage() for r in caplog.records)


QUOTA_CPU = "500m"
"""Tenant A's ResourceQuota (``requests.cpu``): room for two of its 250m agents, of the nodes' eight."""


@pytest.mark.timeout(180)
def test_a_tenant_at_its_resource_quota_is_held_by_admission_and_the_other_tenant_takes_the_rest(
        small_nodes, fair_operator, core_v1, custom, namespace, quiet_namespace, caplog):
    """A real ResourceQuota (its ``status`` kept by the real kube-controller-manager) in tenant A's namespace: A gets
    the two agents it leaves room for, says ``Admitted=False/TenantLimit`` on its next task instead of having its
    Pods refused by the quota, and does not stop tenant B from filling the other six slots."""
    core_v1.create_namespaced_resource_quota(namespace, {"metadata": {"name": "agents"},
                                                         "spec": {"hard": {"requests.cpu": QUOTA_CPU}}})
    wait_for(lambda: (core_v1.read_namespaced_resource_quota("agents", namespace).status.hard or {}).get(
        "requests.cpu"), timeout=30, what="the quota's status written by the kube-controller-manager")
    with Kubelet(core_v1, [namespace, quiet_namespace]) as kubelet:
        def start(ns: str, name: str) -> None:
            b = build(name, workers={"max": 1000})
            b["spec"]["finalization"] = {"enabled": False}
            create(custom, ns, b)
            _create_tasks(custom, ns, name, 20)

        def running(ns: str) -> int:
            with kubelet.lock:
                return sum(1 for k in kubelet.running if k[0] == ns and k not in kubelet.ended)

        def held() -> dict[str, Any] | None:
            for t in custom.list_namespaced_custom_object("longshot.dev", "v1alpha1", namespace,
                                                          "agenttasks")["items"]:
                c = condition(t, "Admitted") or {}
                if c.get("reason") == "TenantLimit":
                    return c
            return None

        # tenant A first, alone: it gets what its quota leaves (2 agents) though the nodes have room for 8, and its
        # next task says why it waits (B comes after, so which tenant a free slot goes to is not what is tested)
        start(namespace, "noisy")
        try:
            wait_for(lambda: running(namespace) == 2 and held() is not None, timeout=90,
                     what="tenant A at its quota (2 agents) with its next task held", interval=0.2)
        except TimeoutError:
            raise AssertionError(f"A runs {running(namespace)}, held: {held()}") from None
        start(quiet_namespace, "quiet")
        try:
            wait_for(lambda: running(quiet_namespace) == SLOTS - 2, timeout=90,
                     what=f"tenant B in the other {SLOTS - 2} slots", interval=0.2)
        except TimeoutError:
            raise AssertionError(f"A runs {running(namespace)}, B runs {running(quiet_namespace)}") from None

        said = wait_for(held, timeout=30, what="tenant A's next task saying it is held at its namespace's limit")
        assert said["status"] == "False" and f"namespace {namespace}'s agents request cpu 500m" in said["message"]
        assert running(namespace) == 2 and len(kubelet.live()) == SLOTS
    assert kubelet.unschedulable == set()
    refused = [r.getMessage() for r in caplog.records if "exceeded quota" in r.getMessage()]
    assert refused == []  # admission kept to the quota: the API server never had to refuse a Pod
