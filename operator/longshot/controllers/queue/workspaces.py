"""The operator's git workspaces, one per tenant and repository, and the checks step's secret scans in them."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from longshot.api import objects
from longshot.controllers import context as ctxmod
from longshot.vcs import secretscan, speculate
from longshot.vcs import workspace as vws

SECRET_TTL_SECONDS: Final = 5.0
"""A tenant's credentials Secret is read again for its workspace when the last read is this old: a new or rotated
credential is used within seconds, and a busy queue does not read the Secret at every reconcile."""

CHECKS_WORKSPACE: Final = "checks"
"""The checks step's scans run in a workspace of their own (``Workspaces.get(build, CHECKS_WORKSPACE)``: a second
clone of the tenant's repository, with the same credential), so that they never wait for the batch step's git work
nor hold it up."""

GIT_COMMAND_SECONDS: Final = 120.0
"""The longest one git command in a queue workspace may run: the same bound as a whole git action
(``git.GIT_DEADLINE_SECONDS``), so that the worker thread of an action that ran out of time ends too."""


class Workspaces:
    """The operator's git workspaces, one per tenant and repository (``workspace.tenant_key``: the build's
    namespace, its credentials Secret and the URL), each with that build's credentials: a job is fetched, scanned
    and pushed only with the credential of its own build's Secret, and ssh key files are never shared. A tenant's
    queue has two: the batch step's, and the checks step's (``CHECKS_WORKSPACE``). The Secret is read again when
    its last read is ``SECRET_TTL_SECONDS`` old; a changed credential makes the workspace anew."""

    def __init__(self, ctx: ctxmod.Context, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        self._ws: dict[str, vws.Workspace] = {}
        self.monotonic = monotonic
        self._secrets: dict[tuple[str, str], tuple[float, dict[str, str] | None]] = {}
        """(namespace, Secret) -> (when it was read, monotonic; its data): ``SECRET_TTL_SECONDS``."""
        root = Path(ctx.settings.workspace_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
            writable = os.access(root, os.W_OK)
        except OSError:
            writable = False
        self.root = root if writable else Path.home() / ".cache" / "longshot" / "workspaces"

    async def get(self, build: objects.BuildRequest, purpose: str = "") -> vws.Workspace:
        """The tenant's workspace of the repository; ``purpose`` names a second one of the same tenant and
        repository (``CHECKS_WORKSPACE``)."""
        secret = build.spec.repository.credentials_secret
        credentials = None
        if secret:
            data = await self._secret(build.namespace, secret)
            if data:
                credentials = vws.GitCredentials.from_secret_data(data)
        url = build.spec.repository.url
        s = self.ctx.settings
        key = vws.tenant_key(build.namespace, secret, url) + (f"-{purpose}" if purpose else "")
        w = self._ws.get(key)
        if w is None or w.credentials != credentials or w.url != url:
            w = vws.Workspace(url, self.root, credentials=credentials, key=key, max_bytes=s.workspace_max_bytes,
                              egress=self.ctx.egress, committer=(s.git_author_name, s.git_author_email),
                              timeout=GIT_COMMAND_SECONDS)
            self._ws[key] = w
        return w

    async def _secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """The credentials Secret's data, read again once it is ``SECRET_TTL_SECONDS`` old."""
        now = self.monotonic()
        known = self._secrets.get((namespace, name))
        if known is not None and now - known[0] < SECRET_TTL_SECONDS:
            return known[1]
        data = await asyncio.to_thread(self.ctx.kube.get_secret, namespace, name)
        if len(self._secrets) >= 1024:  # bounded: the entries past their time go
            self._secrets = {k: v for k, v in self._secrets.items() if now - v[0] < SECRET_TTL_SECONDS}
        self._secrets[(namespace, name)] = (now, data)
        return data


@dataclass(frozen=True)
class ScanItem:
    """A branch the checks step scans: its job, target, branch and commit."""

    name: str
    target: str
    branch: str
    commit: str


ScanResult = list[secretscan.Finding] | Exception
"""What a scan found, or why it could not tell (``secretscan.ScanTimedOut``, ``vws.GitError``,
``secretscan.ScanError``)."""


def _scan_locked(w: vws.Workspace, base: str, head: str, *, timeout: float | None) -> list[secretscan.Finding]:
    """Every commit of ``base..head`` scanned with bounded memory (``secretscan.scan_range``), including binary
    files and the commits a later one undoes; the workspace's own credentials are looked for too. ``timeout``
    (seconds, counted from the scan's start: the caller holds the workspace's lock, so a wait for another job's git
    work is not this branch's fault) bounds it: past it the scan raises ``secretscan.ScanTimedOut``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    return secretscan.scan_range(w, base, head, known=w.credentials.secrets, deadline=deadline)[:100]


def _merge_base_locked(w: vws.Workspace, target: str, branch: str, commit: str) -> str:
    """Where the branch left the target (fetched by the queue); the branch is fetched unless it already was, with
    the others (``speculate.fetch_commits``). The caller holds the workspace's lock."""
    if not w.has_commit(commit):
        speculate.fetch(w, target, [speculate.Member(name="scan", namespace="", uid="", branch=branch, commit=commit)])
    return w.out("merge-base", f"refs/remotes/origin/{target}", commit) or f"refs/remotes/origin/{target}"


def scan_slice(w: vws.Workspace, items: Sequence[ScanItem], *, budget: float, timeout: float | None,
               clock: Callable[[], float] = time.monotonic) -> dict[str, ScanResult]:
    """The merge-base and secret scan of each item in turn, each under its own hold of the workspace's lock (the
    batch step's git work goes between two scans, not after the slice), until the time spent holding it reaches
    ``budget`` seconds (the first item is always scanned); the items not reached are missing from the answer.
    ``timeout`` bounds each scan (:func:`_scan_locked`)."""
    out: dict[str, ScanResult] = {}
    spent = 0.0
    for item in items:
        if out and spent >= budget:
            break
        with w.locked():
            began = clock()
            try:
                base = _merge_base_locked(w, item.target, item.branch, item.commit)
                out[item.name] = _scan_locked(w, base, item.commit, timeout=timeout)
            except (secretscan.ScanTimedOut, vws.GitError, secretscan.ScanError) as e:
                out[item.name] = e
            spent += clock() - began
    return out
