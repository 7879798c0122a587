"""A kubelet stand-in for the integration tier that really runs each agent Pod's program, as a process.

It watches the namespace's agent Pods through the API; for each new one it materialises what the kubelet
would mount (the downward-API task input, the script, prompt, skill and instructions ConfigMaps (a volume's
``items`` only), Secrets, and the projected
ServiceAccount token: a real Pod-bound token from the TokenRequest API with the volume's audience and
expiry, as the kubelet asks for it) into a directory, marks the Pod Running, runs the Pod's command
(``python -m longshot agent``) with the container's environment and the runner's path overrides, and
writes back what a kubelet writes: the Pod's phase and the container's terminated state with the
termination message. No container isolation (that is the e2e tier's job); everything else is real: the
agent runner, git, the operator reading the handoff from the Pod's status.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import kubernetes
from kubelet_double import finish_pod, run_pod

from longshot.api import handoff as ho
from longshot.runtime import pods

LABEL = "app.kubernetes.io/managed-by=longshot-operator"


class ProcessKubelet:
    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, workdir: Path, *, parallel: int = 4,
                 env: dict[str, str] | None = None) -> None:
        self.core = kubernetes.client.CoreV1Api(api)
        self.namespace = namespace
        self.workdir = workdir
        self.env = env or {}
        self.pool = concurrent.futures.ThreadPoolExecutor(parallel)
        self.started: set[str] = set()
        """UIDs of the Pods started: a Pod deleted and made again under its name (a gate task made again) is run
        again, as a kubelet runs it."""
        self.runs: list[tuple[str, int]] = []
        self.uids: dict[str, set[str]] = {}
        """Pod name -> the UIDs seen with it: more than one means the Pod was created twice."""
        self._stop = threading.Event()
        self._watch: kubernetes.watch.Watch | None = None
        self._thread = threading.Thread(target=self._loop, name="process-kubelet", daemon=True)

    def __enter__(self) -> ProcessKubelet:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        self._thread.join(10)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._watch = kubernetes.watch.Watch()
            try:
                for event in self._watch.stream(self.core.list_namespaced_pod, self.namespace, label_selector=LABEL,
                                                timeout_seconds=30):
                    pod = event["object"]
                    self.uids.setdefault(pod.metadata.name, set()).add(pod.metadata.uid)
                    fresh = (event["type"] in ("ADDED", "MODIFIED") and pod.metadata.uid not in self.started
                             and pod.status.phase in (None, "Pending") and not pod.metadata.deletion_timestamp)
                    if fresh:
                        self.started.add(pod.metadata.uid)
                        self.pool.submit(self._run, pod)
                    if self._stop.is_set():
                        break
            except Exception:  # the watch expired or the API server went away: start again
                if self._stop.is_set():
                    return

    def token_for(self, pod: Any, audience: str | None, seconds: int | None) -> str:
        """A token bound to ``pod``, as the kubelet requests it for a projected serviceAccountToken source."""
        body = {"spec": {"audiences": [audience] if audience else [], "expirationSeconds": seconds or 3600,
                         "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.metadata.name,
                                            "uid": pod.metadata.uid}}}
        account = pod.spec.service_account_name or "default"
        return str(self.core.create_namespaced_service_account_token(account, self.namespace, body).status.token)

    def _materialise(self, pod: Any, root: Path) -> dict[str, str]:
        env: dict[str, str] = {}
        mounts = {m.name: m.mount_path for m in pod.spec.containers[0].volume_mounts}
        for vol in pod.spec.volumes:
            path = mounts.get(vol.name)
            if path is None:
                continue
            target = root / vol.name
            if path.startswith(ho.SKILLS_DIR + "/"):  # one folder per skill, as the Pod mounts them
                target = root / "skills" / Path(path).name
                env["LONGSHOT_SKILLS_DIR"] = str(root / "skills")
            target.mkdir(parents=True, exist_ok=True)
            if vol.downward_api is not None:
                # a warm sandbox has no task input yet: the kubelet writes the missing annotation as an empty file
                (target / Path(ho.TASK_INPUT_PATH).name).write_text(
                    (pod.metadata.annotations or {}).get(ho.TASK_INPUT_ANNOTATION, ""))
                env["LONGSHOT_TASK_INPUT"] = str(target / Path(ho.TASK_INPUT_PATH).name)
            elif vol.config_map is not None:
                data = self.core.read_namespaced_config_map(vol.config_map.name, self.namespace).data or {}
                items = {i.key: i.path for i in vol.config_map.items or []} or {k: k for k in data}
                for k, v in data.items():
                    if k in items:
                        (target / items[k]).write_text(v)
            elif vol.secret is not None:
                data = self.core.read_namespaced_secret(vol.secret.secret_name, self.namespace).data or {}
                for k, v in data.items():
                    (target / k).write_bytes(base64.b64decode(v))
            elif vol.projected is not None:
                for source in vol.projected.sources or []:
                    sat = source.service_account_token
                    if sat is None:
                        continue
                    (target / sat.path).write_text(self.token_for(pod, sat.audience, sat.expiration_seconds))
                    if path == pods.GATEWAY_TOKEN_DIR:
                        env["LONGSHOT_GATEWAY_TOKEN_FILE"] = str(target / sat.path)
            else:
                continue
            for var, default in (("LONGSHOT_SCRIPT_DIR", ho.SCRIPT_DIR), ("LONGSHOT_GIT_CREDENTIALS_DIR",
                                 ho.GIT_CREDENTIALS_DIR), ("LONGSHOT_PROMPTS_DIR", ho.PROMPTS_DIR),
                                 ("LONGSHOT_LLM_CREDENTIALS_DIR", ho.LLM_CREDENTIALS_DIR),
                                 ("LONGSHOT_INSTRUCTIONS_DIR", ho.INSTRUCTIONS_DIR)):
                if path == default:
                    env[var] = str(target)
        return env

    def _run(self, pod: Any) -> None:
        name = pod.metadata.name
        root = self.workdir / name
        if root.exists():  # an earlier Pod of this name (deleted, made again): its files stay beside
            root = self.workdir / f"{name}-{pod.metadata.uid[:8]}"
        root.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LONGSHOT_", "GIT_"))}
        env.update({e.name: e.value or "" for e in pod.spec.containers[0].env or []})
        env.update(self._materialise(pod, root))
        (root / "workspace").mkdir(exist_ok=True)
        env.update(LONGSHOT_WORKSPACE_DIR=str(root / "workspace"), HOME=str(root), LONGSHOT_HEARTBEAT_SECONDS="0",
                   LONGSHOT_TERMINATION_LOG=str(root / "termination-log"))
        env.update(self.env)  # the test's own settings win (a heartbeat interval, say)
        try:
            run_pod(self.core, self.namespace, name)
        except kubernetes.client.ApiException as e:
            if e.status == 404:  # deleted meanwhile
                return
            raise
        try:
            with open(root / "agent.log", "wb") as log:
                proc = subprocess.run([sys.executable, "-m", "longshot", "agent"], env=env, stdout=log,
                                      stderr=subprocess.STDOUT, timeout=pod.spec.active_deadline_seconds or 600)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = 137
        message = (root / "termination-log").read_text() if (root / "termination-log").exists() else ""
        self.runs.append((name, code))
        try:
            finish_pod(self.core, self.namespace, name, exit_code=code, reason="Completed" if code == 0 else "Error",
                       message=message)
        except kubernetes.client.ApiException as e:
            if e.status != 404:  # deleted meanwhile (cancel, killswitch): nothing to report
                raise
