"""The operator process caps glibc's malloc arenas before any thread starts (peak RSS with many threads)."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from longshot import operator_main

pytestmark = pytest.mark.unit


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt(M_ARENA_MAX) is glibc's")
def test_the_arena_cap_is_set_on_glibc():
    assert ctypes.util.find_library("c") is not None
    assert operator_main.limit_malloc_arenas({}) is True


def test_an_explicit_malloc_arena_max_in_the_environment_wins():
    """glibc read MALLOC_ARENA_MAX when the process started: the operator leaves it alone."""
    assert operator_main.limit_malloc_arenas({"MALLOC_ARENA_MAX": "8"}) is False
