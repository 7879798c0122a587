"""Shared test set-up: tiers by directory, Hypothesis' profiles, and the unit tier's guard against processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import HealthCheck, settings

TIERS = ("unit", "integration", "e2e")
ROOT = Path(__file__).resolve().parent.parent

# Hypothesis' profiles. "dev", the default, is light so that the unit tier stays within its budget on a laptop;
# "ci" (HYPOTHESIS_PROFILE=ci, which .ci/run sets) searches deeper, derandomized as Hypothesis' own CI profile so a
# failure reproduces. A test's own @settings(max_examples=...) still wins over either.
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile("ci", parent=settings.get_profile("ci"), max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test's tier is the top directory it lives in; an explicit marker agrees with it.
    for item in items:
        parts = Path(str(item.fspath)).resolve().relative_to(ROOT / "tests").parts
        if parts and parts[0] in TIERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


def _refuse(what: str) -> NoReturn:
    raise AssertionError(f"a unit test started a process ({what}): the unit tier is pure; move the test to "
                         "tests/integration, or test the pure function that decides what the process would do")


def _from_ctypes_util() -> bool:
    """The standard library's own look-up of a shared library (``ctypes.util.find_library`` asks ldconfig)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.endswith(os.path.join("ctypes", "util.py")):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """In tests/unit, starting a process fails the test: subprocess (and so asyncio's subprocesses and every git
    command), os.system, fork and spawn. tests/unit/test_unit_tier_pure.py checks the modules' imports as well."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return

    real = subprocess.Popen._execute_child  # type: ignore[attr-defined]

    def execute_child(self: subprocess.Popen[bytes], args: object, *rest: object, **kw: object) -> None:
        if not _from_ctypes_util():
            _refuse(f"subprocess {args!r}")
        real(self, args, *rest, **kw)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_child)
    for name in ("system", "fork", "forkpty", "posix_spawn", "posix_spawnp", "spawnv", "spawnve", "spawnvp",
                 "spawnvpe", "execv", "execve"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, lambda *a, _name=name, **k: _refuse(f"os.{_name}"))
    yield
