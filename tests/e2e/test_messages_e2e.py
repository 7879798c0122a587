"""People's messages on the real cluster (issue 53, "Done means"): ``kubectl longshot say`` (the installed plugin, found
by kubectl on PATH) reaches a running scripted worker through longshot-gateway and changes what it does next (its
``await_message`` step writes the text into the checkout, and the merged main holds it); ``say --interrupt`` kills the
worker's ``sleep 600`` and the attempt resumes on the next message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from longshot.core import messages as core_messages

from .conftest import apply, build_request, kget, script_configmap, wait_for
from .test_build import condition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

PLAN = """
roles:
  planner:
    - finish:
        summary: one task
        tasks:
          - {{name: talk, description: "Do as the person says", scope: [MESSAGE.txt, DONE.txt]}}
  reviewer:
    - finish: {{summary: fine, verdict: approved}}
tasks:
  talk:
{steps}
    - run: {{command: "cp MESSAGE.txt DONE.txt", check: true}}
    - finish: {{summary: "Do as the person said"}}
steps:
  - finish: {{summary: nothing to do}}
"""
AWAIT = "    - {await_message: {timeoutSeconds: 240, write: MESSAGE.txt}, check: true}"
SAY_THEN_WRITE = PLAN.format(steps=AWAIT)
INTERRUPT_THEN_SAY = PLAN.format(steps="\n".join([
    '    - run: {command: "touch /workspace/started && sleep 600"}', AWAIT]))


def say(cluster: Any, namespace: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """``kubectl longshot say`` with the plugin kubectl finds on PATH (installed with the package)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(cluster.bin_dir / "kubectl"), "longshot", f"--kubeconfig={cluster.kubeconfig}",
                           "-n", namespace, "say", *argv], env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def running(kubectl: Any, namespace: str, task: str) -> dict[str, Any] | None:
    """The task once it has a running attempt (what ``say`` needs), else None."""
    at = kget(kubectl, "-n", namespace, "at", task)
    return at if at is not None and core_messages.running_attempt(at) is not None else None


def merged_file(cluster: Any, namespace: str, kubectl: Any, build: str, path: str) -> str:
    """``path`` on main in the git server the Pods pushed to, once the build is finalized and merged."""
    def finalized() -> dict[str, Any] | None:
        c = condition(kget(kubectl, "-n", namespace, "br", build), "Finalized")
        return c if c.get("status") in ("True", "False") else None

    final = wait_for(finalized, 600, f"BuildRequest {build} to be finalized", interval=2)
    assert final["status"] == "True", (final, (kget(kubectl, "-n", namespace, "br", build) or {}).get("status"))
    bare = cluster.git_root / f"{namespace}.git"
    return subprocess.run(["git", "-C", str(bare), "show", f"main:{path}"], capture_output=True, text=True,
                          check=True).stdout


def delivered(kubectl: Any, namespace: str, task: str) -> list[int]:
    status = (kget(kubectl, "-n", namespace, "at", task) or {}).get("status") or {}
    return [d["id"] for d in (status.get("messages") or {}).get("delivered") or []]


def test_a_message_reaches_a_running_scripted_agent_and_lands_on_main(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, git_repo) -> None:
    apply(kubectl, namespace, script_configmap("script", SAY_THEN_WRITE),
          build_request("talk", git_repo, script="script", max_attempts=1))
    wait_for(lambda: running(kubectl, namespace, "talk-talk"), 420, "talk-talk to run an attempt", interval=2)
    text = "Use port 8080, not 80: the tests expect it."
    sent = say(cluster, namespace, "talk-talk", text)
    assert sent.returncode == 0, sent.stderr
    assert "message #1 sent to attempt 1" in sent.stdout

    assert merged_file(cluster, namespace, kubectl, "talk", "DONE.txt") == text  # what the agent did next
    assert merged_file(cluster, namespace, kubectl, "talk", "MESSAGE.txt") == text
    assert delivered(kubectl, namespace, "talk-talk") == [1]


def test_an_interrupt_kills_the_running_command_and_the_attempt_resumes_on_the_next_message(  # type: ignore[no-untyped-def]
        operator, cluster, kubectl, namespace, git_repo) -> None:
    apply(kubectl, namespace, script_configmap("script", INTERRUPT_THEN_SAY),
          build_request("stop", git_repo, script="script", max_attempts=1))
    task = wait_for(lambda: running(kubectl, namespace, "stop-talk"), 420, "stop-talk to run an attempt", interval=2)
    pod = task["status"]["attempts"][-1]["pod"]

    def sleeping() -> bool:  # the command runs (the file it makes first is there)
        r = kubectl("-n", namespace, "exec", pod, "--", "test", "-f", "/workspace/started", check=False)
        return r.returncode == 0

    wait_for(sleeping, 300, "the worker's sleep 600 to run", interval=2)
    stop = say(cluster, namespace, "stop-talk", "--interrupt", "Stop, that takes too long.")
    assert stop.returncode == 0, stop.stderr
    assert "interrupt #1 sent to attempt 1" in stop.stdout
    # the command is killed; the attempt goes on (waiting for the next message), it does not end
    wait_for(lambda: delivered(kubectl, namespace, "stop-talk") == [1], 60, "the interrupt to be delivered")
    wait_for(lambda: kubectl("-n", namespace, "logs", pod, check=False).stdout.count("interrupted by a person") > 0,
             60, "the sleep 600 to be killed", interval=2)
    assert running(kubectl, namespace, "stop-talk") is not None
    text = "Run only the quick tests."
    sent = say(cluster, namespace, "stop-talk", text)
    assert sent.returncode == 0, sent.stderr

    assert merged_file(cluster, namespace, kubectl, "stop", "DONE.txt") == text
    assert delivered(kubectl, namespace, "stop-talk") == [1, 2]
    attempts = (kget(kubectl, "-n", namespace, "at", "stop-talk") or {})["status"]["attempts"]
    assert len(attempts) == 1  # the same attempt resumed: no retry
