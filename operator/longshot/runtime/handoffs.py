"""Fetch a handoff stored in git (the large-handoff path of the protocol, see ``api/handoff.py``)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from longshot.api import handoff as ho
from longshot.runtime import kube
from longshot.vcs import workspace as vws

FETCH_TIMEOUT_SECONDS = 120


def git_env(credentials: vws.GitCredentials | None, workdir: Path) -> dict[str, str]:
    """Environment for a git command with the repository's credentials (the merge queue's own mechanism:
    askpass, ``http.extraHeader`` or an ssh key file), never in the URL or argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LONGSHOT_GIT_"))}
    env.update(GIT_CONFIG_NOSYSTEM="1", HOME=str(workdir))
    env.update((credentials or vws.GitCredentials()).environment(workdir / "private"))
    return env


def fetch(k: kube.KubeAPI, build: Mapping[str, Any], pointer: ho.HandoffPointer) -> ho.Handoff | ho.HandoffError:
    """Fetch ``handoff.json`` from the pointer's ref in the build's repository and validate it."""
    repo = (build.get("spec") or {}).get("repository") or {}
    secret_name = repo.get("credentialsSecret")
    data = k.get_secret(build["metadata"]["namespace"], secret_name) if secret_name else None
    credentials = vws.GitCredentials.from_secret_data(data) if data else None
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
