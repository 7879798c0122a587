"""The large-handoff fetch (``runtime.handoffs.fetch_from``) against a real authenticated git server: the
credentials work, junk the agent puts next to ``handoff.json`` is never downloaded, a blob over the limit is
never read, and every failure is a HandoffError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from git_servers import GitHTTPServer
from vcs_servers import git

from longshot.api import handoff as ho
from longshot.runtime import handoffs
from longshot.vcs import workspace

CREDENTIALS = workspace.GitCredentials.from_secret_data({"username": "bot", "password": "s3cret-password"})


def publish(server: GitHTTPServer, files: dict[str, bytes],
            ref: str = ho.handoff_ref("ns", "b", "t1", 1)) -> tuple[str, str]:
    """A repository served over HTTP (filters allowed, as real forges do) with ``files`` committed on ``ref``."""
    bare = server.root / "app.git"
    git("init", "--quiet", "--bare", str(bare))
    git("config", "uploadpack.allowFilter", "true", cwd=bare)
    work = bare.parent / "work"
    git("init", "--quiet", str(work))
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "handoff", cwd=work)
    git("push", "--quiet", str(bare), f"HEAD:{ref}", cwd=work)
    return server.url("app"), git("rev-parse", "HEAD", cwd=work)


def pointer_for(data: bytes, commit: str, size: int | None = None) -> ho.HandoffPointer:
    return ho.HandoffPointer(ref=ho.handoff_ref("ns", "b", "t1", 1), commit=commit, sha256=ho.digest(data),
                             size=len(data) if size is None else size)


def pack_bytes(workdir: Path) -> int:
    return sum(p.stat().st_size for p in (workdir / "repo" / "objects").rglob("*") if p.is_file())


def test_the_handoff_arrives_and_junk_next_to_it_is_not_downloaded(http_server: GitHTTPServer,
                                                                    tmp_path: Path) -> None:
    h = ho.Handoff(task="t1", role="planner", outcome="succeeded",
                   tasks=[ho.PlannedTask(name=f"t{i}", description="x" * 100) for i in range(100)])
    data = ho.encode(h)
    url, commit = publish(http_server, {ho.HANDOFF_FILE: data, "junk.bin": os.urandom(12 * 1024 * 1024),
                                        "deep/dir/more.bin": os.urandom(1024 * 1024)})
    result = handoffs.fetch_from(url, CREDENTIALS, pointer_for(data, commit), workdir=tmp_path / "w")
    assert isinstance(result, ho.Handoff) and len(result.tasks) == 100
    assert pack_bytes(tmp_path / "w") < 512 * 1024  # neither the 12 MiB nor the 1 MiB blob came over
    assert "bot" in {u for _, _, u in http_server.requests}  # the credentials were used


def test_a_handoff_over_the_limit_is_neither_downloaded_nor_read(http_server: GitHTTPServer, tmp_path: Path) -> None:
    data = b'{"kind": "Handoff", "summary": "' + b"y" * 200_000 + b'"}'
    url, commit = publish(http_server, {ho.HANDOFF_FILE: data})
    # the pointer lies (it says 900 bytes, within the limit): git reports the blob missing, it is refused
    result = handoffs.fetch_from(url, CREDENTIALS, pointer_for(data, commit, size=900), limit=1000,
                                 workdir=tmp_path / "w")
    assert isinstance(result, ho.HandoffError)
    assert f"has no {ho.HANDOFF_FILE} of at most 1000 bytes" in str(result)
    assert pack_bytes(tmp_path / "w") < 64 * 1024


@pytest.mark.parametrize(("credentials", "why"), [
    (workspace.GitCredentials.from_secret_data({"username": "bot", "password": "wrong-password"}),
     "could not fetch the handoff at refs/longshot/handoffs/ns/b/t1/1"),
    (None, "could not fetch the handoff at refs/longshot/handoffs/ns/b/t1/1"),
])
def test_failures_are_handoff_errors_without_secrets(http_server: GitHTTPServer,
                                                     credentials: workspace.GitCredentials | None, why: str) -> None:
    data = b"{}"
    url, commit = publish(http_server, {ho.HANDOFF_FILE: data})
    result = handoffs.fetch_from(url, credentials, pointer_for(data, commit))
    assert isinstance(result, ho.HandoffError) and why in str(result)
    assert "wrong-password" not in str(result)
    missing = handoffs.fetch_from(url, CREDENTIALS, ho.HandoffPointer(
        ref=ho.handoff_ref("ns", "b", "t1", 9), commit=commit, sha256=ho.digest(data), size=2))
    assert isinstance(missing, ho.HandoffError) and "refs/longshot/handoffs/ns/b/t1/9" in str(missing)
