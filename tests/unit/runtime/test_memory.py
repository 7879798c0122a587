"""The malloc arena cap the operator sets before its I/O thread pool starts (``runtime/memory.py``)."""

from __future__ import annotations

import platform

import pytest

from longshot.runtime import memory

pytestmark = pytest.mark.unit


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_the_arena_cap_is_accepted_by_glibc():
    assert memory.limit_malloc_arenas(2) is True


def test_without_a_c_library_nothing_is_done(monkeypatch):
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: None)
    assert memory.limit_malloc_arenas(2) is False
