"""Hostile agents against the operator (issue 11): handoff bombs and big files must not take it down.

The operator runs as a real process (``python -m longshot operator``) so that its memory is its own: the peak
RSS of its process (``VmHWM``) and of its process tree (git children included, sampled) is measured and bounded.
Everything is judged by public behaviour: the tasks' status, ``/healthz``, another build still progressing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import k8s_builders
import kubernetes
import pytest
import sample_repo
import yaml
from k8s_builders import build, dump
from kubelet_double import finish_pod, plan_handoff

from longshot.api import handoff as ho
from longshot_testing import controlplane, wait_for

MIB = 1024 * 1024


# typed views of the shared builders
def create(custom: Any, namespace: str, obj: dict[str, Any]) -> None:
    k8s_builders.create(custom, namespace, obj)  # type: ignore[no-untyped-call]


def get(custom: Any, namespace: str, plural: str, name: str) -> dict[str, Any]:
    return cast(dict[str, Any], k8s_builders.get(custom, namespace, plural, name))  # type: ignore[no-untyped-call]


def list_of(custom: Any, namespace: str, plural: str) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], k8s_builders.list_of(custom, namespace, plural))  # type: ignore[no-untyped-call]


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return cast(dict[str, Any] | None, k8s_builders.condition(obj, type_))  # type: ignore[no-untyped-call]
BOMB_SIZE = 36 * MIB


def _rss_kib(pid: int, key: str = "VmRSS") -> int:
    with contextlib.suppress(OSError, IndexError, ValueError):
        status = Path(f"/proc/{pid}/status").read_text()
        return int(status.split(f"{key}:")[1].split()[0])
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    tree_peak_kib: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        """Record the RSS of the operator and all its descendants (git) every 20 ms."""
        while not self._stop.wait(0.02):
            pids, todo = [], [self.proc.pid]
            while todo:
                pid = todo.pop()
                pids.append(pid)
                todo += _children(pid)
            self.tree_peak_kib = max(self.tree_peak_kib, sum(_rss_kib(p) for p in pids))

    @property
    def peak_mib(self) -> float:
        """The operator process's own peak RSS (exact: the kernel's high-water mark)."""
        return _rss_kib(self.proc.pid, "VmHWM") / 1024

    @property
    def tree_peak_mib(self) -> float:
        return self.tree_peak_kib / 1024

    def healthy(self) -> bool:
        return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=5).status_code == 200


@pytest.fixture
def operator_proc(control_plane: Any, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    port = controlplane.free_port()
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig), "LONGSHOT_NAMESPACE": namespace,
           "POD_NAME": "hostile-0", "LONGSHOT_METRICS_PORT": str(port), "LONGSHOT_WEBHOOK_PORT": "0",
           "LONGSHOT_LEASE_DURATION_SECONDS": "4",
           "LONGSHOT_LEASE_RENEW_SECONDS": "1", "LONGSHOT_WORKSPACE_DIR": str(tmp_path / "operator-workspaces")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "longshot", "operator", "--namespace", namespace],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    op = OperatorProcess(proc, port, log)
    sampler = threading.Thread(target=op.sample, daemon=True)
    sampler.start()
    try:
        wait_for(lambda: _ok(op), timeout=60, what="the operator's /healthz")
        yield op
    finally:
        op._stop.set()
        sampler.join(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"--- operator log (tail)\n{log.read_text(errors='replace')[-3000:]}")


def _ok(op: OperatorProcess) -> bool:
    assert op.proc.poll() is None, f"the operator exited: {op.log.read_text(errors='replace')[-3000:]}"
    with contextlib.suppress(httpx.HTTPError):
        return op.healthy()
    return False


def planner_pod(core: kubernetes.client.CoreV1Api, namespace: str, build_name: str) -> str:
    name = f"{build_name}-planner-a1"
    wait_for(lambda: _pod_exists(core, namespace, name), timeout=30, what=f"Pod {name}")
    return name


def _pod_exists(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, namespace)
        return True
    except kubernetes.client.ApiException as e:
        if e.status == 404:
            return False
        raise


def failed_task(custom: Any, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        with contextlib.suppress(kubernetes.client.ApiException):
            t = get(custom, namespace, "agenttasks", name)
            if (t.get("status") or {}).get("phase") == "Failed":
                return t
        return None

    try:
        return wait_for(check, timeout=60, what=f"AgentTask {name} Failed")  # type: ignore[no-any-return]
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None


def write_plan_bomb(path: Path, task: str, size: int) -> bytes:
    """A valid planner handoff of ``size`` bytes: many small tasks (what makes parsing it expensive)."""
    head = json.dumps({"kind": "Handoff", "protocol": ho.PROTOCOL_VERSION, "task": task, "attempt": 1,
                       "role": "planner", "outcome": "succeeded"})[:-1] + ', "tasks": ['
    parts, n, total = [head.encode()], 0, len(head)
    while total < size - 200:
        item = json.dumps({"name": f"t{n}", "description": "split the work into a small piece " * 2}).encode()
        parts.append(item if n == 0 else b"," + item)
        total += len(parts[-1])
        n += 1
    parts.append(b"]}")
    data = b"".join(parts)
    path.write_bytes(data)
    return data


def push_handoff(url: str, seed: Path, ref: str) -> str:
    sample_repo.git(seed, "checkout", "-q", "--orphan", f"h{abs(hash(ref))}")
    sample_repo.git(seed, "rm", "-rq", "--cached", "--ignore-unmatch", ".")
    sample_repo.git(seed, "add", ho.HANDOFF_FILE)
    sample_repo.git(seed, "commit", "-q", "-m", "handoff")
    sample_repo.git(seed, "push", "-q", url.removeprefix("file://"), f"HEAD:{ref}")
    return sample_repo.git(seed, "rev-parse", "HEAD").strip()


def test_handoff_bombs_fail_their_task_and_the_operator_stays_healthy(
        operator_proc: OperatorProcess, core_v1: Any, custom: Any, namespace: str, tmp_path: Path) -> None:
    url = sample_repo.make(tmp_path)
    seed = tmp_path / "seed"
    bombs = ["brackets", "nested", "huge-pointer", "lying-pointer"]
    for name in bombs:
        create(custom, namespace, build(name, repository__url=url, retry={"maxAttempts": 1}))

    # a 36 MiB plan in git, announced honestly (too big) and with a lying size (the blob is what is big)
    data = write_plan_bomb(seed / ho.HANDOFF_FILE, "huge-pointer-planner", BOMB_SIZE)
    huge_ref = ho.handoff_ref(namespace, "huge-pointer", "huge-pointer-planner", 1)
    lying_ref = ho.handoff_ref(namespace, "lying-pointer", "lying-pointer-planner", 1)
    commit = push_handoff(url, seed, huge_ref)
    sample_repo.git(seed, "push", "-q", url.removeprefix("file://"), f"HEAD:{lying_ref}")
    messages = {
        "brackets": "[" * 4000,
        "nested": json.dumps({"kind": "Handoff", "task": "nested-planner", "role": "planner",
                              "outcome": "succeeded", "tasks": []})[:-1] + ', "x": ' + "[" * 3000 + "]" * 3000 + "}",
        "huge-pointer": ho.HandoffPointer(ref=huge_ref, commit=commit, sha256=ho.digest(data),
                                          size=len(data)).model_dump_json(by_alias=True),
        "lying-pointer": ho.HandoffPointer(ref=lying_ref, commit=commit, sha256=ho.digest(data[:2000]),
                                           size=2000).model_dump_json(by_alias=True),
    }
    for name in bombs:
        finish_pod(core_v1, namespace, planner_pod(core_v1, namespace, name), message=messages[name])

    why = {"brackets": "more than 32 levels deep", "nested": "more than 32 levels deep",
           "huge-pointer": f"has {len(data)} bytes, more than the {ho.MAX_HANDOFF_BYTES} accepted",
           "lying-pointer": f"has {len(data)} bytes but its pointer says 2000"}
    for name in bombs:
        t = failed_task(custom, namespace, f"{name}-planner")
        attempt = t["status"]["attempts"][0]
        assert attempt["failureClass"] == "InvalidHandoff", attempt
        assert why[name] in attempt["exitReason"], attempt
        assert (condition(t, "Succeeded") or {}).get("reason") == "InvalidHandoff"

    # the operator is healthy and still reconciles: another build's plan is accepted
    assert operator_proc.healthy()
    create(custom, namespace, build("calm", repository__url=url))
    finish_pod(core_v1, namespace, planner_pod(core_v1, namespace, "calm"),
               message=plan_handoff("calm-planner", [{"name": "one", "description": "do one thing"}]))
    wait_for(lambda: (condition(get(custom, namespace, "buildrequests", "calm"), "Planned") or {}).get("status")
             == "True", timeout=30, what="the calm build Planned=True")
    assert any(t["metadata"]["name"] == "calm-one" for t in list_of(custom, namespace, "agenttasks"))
    assert operator_proc.healthy() and operator_proc.proc.poll() is None
    print(f"operator peak RSS {operator_proc.peak_mib:.0f} MiB, with git children {operator_proc.tree_peak_mib:.0f}"
          f" MiB (the 36 MiB plan read and parsed took it over 550 MiB)")
    assert operator_proc.peak_mib < 256, "the operator read a handoff it should have refused unread"
    assert operator_proc.tree_peak_mib < 384


def big_file_script(mb: int) -> dict[str, Any]:
    """A worker that commits a generated file of ``mb`` MB in short lines (8 million of them for 50 MB: reading
    such a diff whole costs an object per line)."""
    write = (f"python3 -c \"f = open('generated/big.py', 'w'); block = 'x = 1\\n' * 100000; "
             f"[f.write(block) for _ in range({mb} * 1000 * 1000 // len(block) + 1)]\"")
    return {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [
            {"name": "big", "description": "Add a big generated file", "scope": ["generated/"]}]}}]},
        "tasks": {"big": [{"run": {"command": f"mkdir -p generated && {write}"}}, {"finish": "a big file"}]},
    }


def test_a_50_mb_file_on_a_branch_is_merged_within_the_operators_memory(
        operator_proc: OperatorProcess, kubelet: Any, core_v1: Any, custom: Any, namespace: str,
        tmp_path: Path) -> None:
    url = sample_repo.make(tmp_path)
    core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "script"},
                                                     "data": {"script.yaml": yaml.safe_dump(big_file_script(50))}})
    b = build("demo", repository__url=url)
    b["spec"].update({"agent": {"backend": "scripted", "script": {"name": "script"}},
                      "qualityGate": {"profile": "minimal", "testCommand": sample_repo.TEST_COMMAND},
                      "reconciler": {"command": sample_repo.TEST_COMMAND, "intervalSeconds": 300},
                      "finalization": {"enabled": False}})
    create(custom, namespace, b)

    def merged() -> dict[str, Any] | None:
        jobs = list_of(custom, namespace, "mergejobs")
        done = [j for j in jobs if (j.get("status") or {}).get("phase") in ("Merged", "Failed", "Conflicted")]
        return done[0] if done else None

    try:
        job = wait_for(merged, timeout=240, what="the MergeJob of the 50 MB branch to finish")
    except TimeoutError as e:
        raise TimeoutError(f"{e}\n{dump(custom, namespace)}") from None
    assert job["status"]["phase"] == "Merged", job["status"]
    assert sample_repo.show(url, "generated/big.py") is not None
    assert operator_proc.healthy()
    print(f"operator peak RSS {operator_proc.peak_mib:.0f} MiB, with git children {operator_proc.tree_peak_mib:.0f}"
          " MiB (its limit in the chart is 512 MiB)")
    assert operator_proc.peak_mib < 192
    assert operator_proc.tree_peak_mib < 320
