"""The attempt ledger on the real cluster (issue 31, "Done means"): an attempt's transcript, written by the agent Pod
through longshot-gateway into its ledger entry, is readable with ``kubectl longshot logs`` (the installed plugin, found
by kubectl on PATH) after its Pod was deleted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import apply, build_request, kget, script_configmap, wait_for
from .test_build import SCRIPT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_a_transcript_is_readable_with_kubectl_longshot_logs_after_its_pod_was_deleted(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, git_repo) -> None:
    apply(kubectl, namespace, script_configmap("script", SCRIPT), build_request("hello", git_repo, script="script"))

    def recorded() -> dict[str, Any] | None:
        task = kget(kubectl, "-n", namespace, "at", "hello-hello")
        attempts = ((task or {}).get("status") or {}).get("attempts") or []
        return attempts[0] if attempts and attempts[0].get("endTime") and attempts[0].get("ledger") else None

    record = wait_for(recorded, 420, "attempt 1 of hello-hello recorded with its ledger entry", interval=2)
    assert record["ledger"] == "hello-hello-a1-ledger"
    kubectl("-n", namespace, "delete", "pod", record["pod"], "--ignore-not-found", "--wait=true", timeout=120)
    assert kget(kubectl, "-n", namespace, "pod", record["pod"]) is None

    # kubectl finds the plugin on PATH (installed with the package, next to this interpreter)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    run = subprocess.run([str(cluster.bin_dir / "kubectl"), "longshot", f"--kubeconfig={cluster.kubeconfig}",
                          "-n", namespace, "logs", "hello-hello"],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert "tool_call" in kinds and "handoff" in kinds, kinds
    handoff = next(e for e in events if e["type"] == "handoff")
    assert "Add hello" in json.dumps(handoff) and handoff["source"] == "agent"
    assert events[-1]["type"] == "result" and events[-1]["exitCode"] == 0 and events[-1]["task"] == "hello-hello"

    whole = subprocess.run([str(cluster.bin_dir / "kubectl"), "longshot", f"--kubeconfig={cluster.kubeconfig}",
                            "-n", namespace, "logs", "hello-hello", "-o", "json"],
                           env=env, capture_output=True, text=True, timeout=120, check=False)
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["result"]["endTime"] == record["endTime"]
