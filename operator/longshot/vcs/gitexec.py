"""Where git's own programs are, so that Longshot starts them without a ``git`` in front.

``git http-backend`` is a ``git`` process that starts ``git-http-backend`` and waits for it: a process more for every
git request over HTTP. The gateway (``gateway.gitserve``) and the test forge (``longshot_testing.forge``) start the
program itself.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from pathlib import Path


@functools.cache
def exec_path() -> Path:
    """git's own exec path (``git --exec-path``), whatever ``GIT_EXEC_PATH`` this process has: where its programs
    (``git-http-backend``, ``git-upload-pack``...) are. Raises when git cannot say."""
    out = subprocess.run(["git", "--exec-path"], capture_output=True, check=True, timeout=30,
                         env={k: v for k, v in os.environ.items() if k != "GIT_EXEC_PATH"})
    return Path(out.stdout.decode().strip())


@functools.cache
def http_backend() -> tuple[str, ...]:
    """How to start ``git http-backend``: the program itself from git's exec path, when it is there, so
    that each git request costs one process fewer (``git http-backend`` is a ``git`` that starts it and waits: a
    thousand agents made 10,000 of them in 600 s); else through ``git``."""
    with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
        program = exec_path() / "git-http-backend"
        if program.is_absolute() and os.access(program, os.X_OK):
            return (str(program),)
    return ("git", "http-backend")
