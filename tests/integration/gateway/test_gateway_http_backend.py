"""The gateway (and the test forge) start ``git-http-backend`` itself, not through a ``git`` that starts it and waits:
one process fewer for each git request an agent makes."""

from __future__ import annotations

import os
import subprocess

import pytest

from longshot.vcs import gitexec

pytestmark = pytest.mark.integration


def test_http_backend_is_started_without_a_git_in_front_of_it() -> None:
    """One process a git request, not two: the ``git-http-backend`` program from git's exec path."""
    gitexec.http_backend.cache_clear()
    (program,) = gitexec.http_backend()
    assert program.endswith("/git-http-backend") and os.access(program, os.X_OK)
    answer = subprocess.run([program], capture_output=True, check=False, timeout=30,
                            env={"REQUEST_METHOD": "GET", "PATH_INFO": "/none.git/info/refs",
                                 "QUERY_STRING": "service=git-upload-pack", "GIT_PROJECT_ROOT": "/nonexistent",
                                 "PATH": os.environ["PATH"]})
    assert answer.stdout.startswith(b"Status: 404")  # it is http-backend: a CGI answer for a repository not there
