"""The bounded-fetch wrapper's private exec path is the process's own and goes with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_the_wrapping_exec_path_is_removed_when_its_process_exits() -> None:
    """Every operator, gateway and test process made one in /tmp and left it there (160 after a day of tests)."""
    out = subprocess.run([sys.executable, "-c", "from longshot.vcs import packlimit; d = packlimit.exec_dir(); "
                          "print(d, (d / 'git').exists())"], capture_output=True, text=True, check=True, timeout=60)
    path, existed = out.stdout.split()
    assert existed == "True"  # it was made, with its wrapper
    assert not Path(path).exists()
