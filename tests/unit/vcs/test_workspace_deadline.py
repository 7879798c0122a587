"""``vcs.workspace.within``: a caller's deadline bounds the git commands of its thread (pure: no git runs here)."""

from __future__ import annotations

import threading

import pytest

from longshot.vcs import workspace

pytestmark = pytest.mark.unit


def test_without_a_deadline_a_command_has_the_workspaces_timeout():
    assert workspace._budget(300.0) == 300.0


def test_within_a_deadline_a_command_has_what_is_left_of_it_and_never_more_than_its_timeout():
    assert workspace.within(20.0, workspace._budget, 300.0) <= 20.0
    assert workspace.within(20.0, workspace._budget, 300.0) > 19.0
    assert workspace.within(20.0, workspace._budget, 5.0) == 5.0
    assert workspace._budget(300.0) == 300.0  # the deadline ends with the call


def test_a_deadline_is_its_threads_own():
    seen: list[float] = []

    def other() -> None:
        seen.append(workspace._budget(300.0))

    def call() -> None:
        t = threading.Thread(target=other)
        t.start()
        t.join()

    workspace.within(1.0, call)
    assert seen == [300.0]  # the merge queue's thread beside a bounded call keeps its own timeout


def test_the_deadline_ends_even_when_the_call_raises():
    def fails() -> None:
        raise workspace.GitError("refused")

    with pytest.raises(workspace.GitError):
        workspace.within(1.0, fails)
    assert workspace._budget(300.0) == 300.0
