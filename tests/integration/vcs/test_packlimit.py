"""The bounded-fetch wrapper's private exec path is the process's own and goes with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_the_wrapping_exec_path_is_removed_when_its_process_exits() -> None:
    """Every operator, gateway and test process made one in /tmp and left it there (160 after a day of tests)."""
    out = subprocess.run([sys.executable, "-c", "from longshot.vcs import packlimit; d = packlimit.exec_dir(); "
                          "print(d, (d / 'git').exists())"], capture_output=True, text=True, check=True, timeout=60)
    path, existed = out.stdout.split()
    assert existed == "True"  # it was made, with its wrapper
    assert not Path(path).exists()


def test_a_process_killed_by_a_signal_leaves_its_exec_path_and_the_next_one_removes_it(tmp_path: Path) -> None:
    """SIGKILL runs no exit handler: the directory stays until a later process makes its own and sweeps the ones
    whose process is gone. A living process's directory and one of the older, unnamed form are left."""
    env = {"TMPDIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    killed = subprocess.Popen([sys.executable, "-c", "import os, signal; from longshot.vcs import packlimit; "
                               "print(packlimit.exec_dir(), flush=True); os.kill(os.getpid(), signal.SIGKILL)"],
                              stdout=subprocess.PIPE, text=True, env=env)
    out, _ = killed.communicate(timeout=60)
    assert killed.returncode == -9
    left = Path(out.strip())
    assert left.parent == tmp_path and left.is_dir()  # left behind
    living = tmp_path / f"longshot-git-exec-{os.getppid()}-x"  # a process that exists (pytest's parent)
    living.mkdir()
    unnamed = tmp_path / "longshot-git-exec-abcdef"
    unnamed.mkdir()
    out = subprocess.run([sys.executable, "-c", "from longshot.vcs import packlimit; print(packlimit.exec_dir())"],
                         capture_output=True, text=True, check=True, timeout=60, env=env).stdout
    assert not left.exists()
    assert living.is_dir() and unnamed.is_dir()
    assert not Path(out.strip()).exists()  # and the sweeping process's own went at its exit
