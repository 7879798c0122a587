"""A gateway mirror is repacked in the background once it holds many packs: one pack with a bitmap, nothing lost,
not even objects no ref reaches yet (a push's, between its objects' arrival and its refs' move)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from longshot.gateway import gitserve, metrics
from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration

ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t",
       "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
       "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}


def git(*args: str, cwd: Path, data: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, input=data, capture_output=True, text=True,
                          check=True, timeout=60).stdout.strip()


def packs(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "objects" / "pack").iterdir() if p.suffix in (".pack", ".bitmap"))


def test_a_mirror_of_many_packs_is_repacked_into_one_with_a_bitmap_keeping_what_no_ref_reaches(tmp_path):
    service = gitserve.GitService(GatewaySettings(mirror_dir=str(tmp_path / "m")))
    up = gitserve.Upstream(url="https://git.example.com/o/r.git", key="k")
    mirror = service.mirror(up)
    git("init", "--quiet", "--bare", "-b", "main", str(mirror), cwd=tmp_path)
    work = tmp_path / "work"
    git("init", "--quiet", "-b", "main", str(work), cwd=tmp_path)
    for i in range(gitserve.REPACK_PACKS + 1):  # each push's objects in a pack of their own, as fetches leave them
        (work / f"f{i}.txt").write_text(f"{i}\n")
        git("add", "-A", cwd=work)
        git("commit", "--quiet", "-m", f"c{i}", cwd=work)
        git("push", "--quiet", str(mirror), "main", cwd=work)
        git("repack", "-q", "-d", cwd=mirror)
    # a commit no ref reaches: a push's objects are in the mirror before its pre-receive hook lets its refs move
    tree = git("write-tree", cwd=work)
    unreached = git("commit-tree", tree, "-m", "pushed, its ref not moved yet", cwd=work)
    git("push", "--quiet", str(mirror), f"{unreached}:refs/heads/moment", cwd=work)
    git("update-ref", "-d", "refs/heads/moment", cwd=mirror)
    git("repack", "-q", "-d", cwd=mirror)
    tip = git("rev-parse", "main", cwd=mirror)
    assert len([p for p in packs(mirror) if p.endswith(".pack")]) > gitserve.REPACK_PACKS
    assert gitserve.repack_due(mirror)
    before = metrics.REGISTRY.get_sample_value("longshot_gateway_mirror_repack_seconds_count",
                                               {"result": "ok"}) or 0.0

    async def run() -> tuple[bool, bool]:
        task = service.maintain(up)
        assert task is not None
        again = service.maintain(up)  # one repack per mirror at a time
        await task
        return again is None, service.maintain(up) is None  # done, and no longer due

    assert asyncio.run(run()) == (True, True)
    assert [p.rsplit(".", 1)[1] for p in packs(mirror)] == ["bitmap", "pack"]
    assert git("rev-parse", "main", cwd=mirror) == tip
    git("fsck", "--connectivity-only", "--no-progress", cwd=mirror)
    assert git("cat-file", "-t", unreached, cwd=mirror) == "commit"
    assert git("count-objects", cwd=mirror).startswith("0 objects")  # no loose copy of a packed object left
    assert (metrics.REGISTRY.get_sample_value("longshot_gateway_mirror_repack_seconds_count", {"result": "ok"})
            - before) == 1


def test_a_mirror_with_few_packs_and_loose_objects_is_not_repacked(tmp_path):
    mirror = tmp_path / "m.git"
    git("init", "--quiet", "--bare", str(mirror), cwd=tmp_path)
    assert not gitserve.repack_due(mirror)
    assert not gitserve.repack_due(tmp_path / "gone.git")  # removed over its cap meanwhile: nothing to do
    fan = mirror / "objects" / "17"
    fan.mkdir()
    for i in range(gitserve.REPACK_LOOSE // 256 + 1):  # a fan-out directory's share of REPACK_LOOSE, and one more
        assert not gitserve.repack_due(mirror)
        (fan / f"{i:038x}").write_bytes(b"")
    assert gitserve.repack_due(mirror)
