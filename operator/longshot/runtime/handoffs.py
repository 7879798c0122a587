"""Fetch a handoff stored in git (the large-handoff path of the protocol, see ``api/handoff.py``)."""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from longshot.api import handoff as ho
from longshot.runtime import kube

FETCH_TIMEOUT_SECONDS = 120


def git_env(credentials: Mapping[str, str] | None, workdir: Path) -> dict[str, str]:
    """Environment for a git command with the repository's credentials, never in the URL or argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", HOME=str(workdir))
    if not credentials:
        return env
    if credentials.get("ssh-privatekey"):
        key = workdir / "id"
        key.write_text(credentials["ssh-privatekey"])
        key.chmod(0o600)
        env["GIT_SSH_COMMAND"] = f"ssh -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new"
    secret = credentials.get("password") or credentials.get("token")
    if secret:
        user = credentials.get("username") or "x-access-token"
        basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
        env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                   GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    return env


def fetch(k: kube.Kube, build: Mapping[str, Any], pointer: ho.HandoffPointer) -> ho.Handoff | ho.HandoffError:
    """Fetch ``handoff.json`` from the pointer's ref in the build's repository and validate it."""
    repo = (build.get("spec") or {}).get("repository") or {}
    secret_name = repo.get("credentialsSecret")
    credentials = k.get_secret(build["metadata"]["namespace"], secret_name) if secret_name else None
    with tempfile.TemporaryDirectory(prefix="longshot-handoff-") as tmp:
        work = Path(tmp)
        env = git_env(credentials, work)
        try:
            subprocess.run(["git", "init", "-q", "--bare", str(work / "repo")], check=True, env=env,
                           capture_output=True, timeout=30)
            subprocess.run(["git", "-C", str(work / "repo"), "fetch", "-q", "--depth=1", repo["url"], pointer.ref],
                           check=True, env=env, capture_output=True, timeout=FETCH_TIMEOUT_SECONDS)
            data = subprocess.run(["git", "-C", str(work / "repo"), "cat-file", "blob",
                                   f"FETCH_HEAD:{ho.HANDOFF_FILE}"],
                                  check=True, env=env, capture_output=True, timeout=30).stdout
        except subprocess.CalledProcessError as e:
            err = e.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
            return ho.HandoffError(f"could not fetch the handoff at {pointer.ref}: {err[0]}")
        except subprocess.TimeoutExpired:
            return ho.HandoffError(f"fetching the handoff at {pointer.ref} timed out")
    try:
        return ho.parse_handoff_bytes(data, pointer)
    except ho.HandoffError as e:
        return e
