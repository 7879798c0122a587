"""A cluster whose state file is gone leaves processes that hold its ports (the git forge on :3000 answered
the next cluster's clones with 500s from a removed directory); ``down`` and a fresh ``up`` kill them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from longshot_testing import cluster


def test_processes_naming_the_cluster_directory_are_killed_and_others_are_not(tmp_path: Path) -> None:
    workdir = tmp_path / "longshot-cluster"
    code = "import sys, time; time.sleep(600)"
    stray = subprocess.Popen([sys.executable, "-c", code, f"--root={workdir}/git"])
    bystander = subprocess.Popen([sys.executable, "-c", code, f"--root={tmp_path}/elsewhere"])
    try:
        cluster.LocalCluster(bin_dir=tmp_path, workdir=workdir)._kill_strays()
        assert stray.wait(timeout=30) == -9
        assert bystander.poll() is None
    finally:
        for p in (stray, bystander):
            p.kill()
            p.wait()


def test_the_caller_and_its_ancestors_are_never_killed(tmp_path: Path) -> None:
    assert {os.getpid(), os.getppid()} <= cluster._ancestors()
