"""Run the operator: kopf with every handler of ``longshot.controllers`` registered."""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Mapping
from typing import Final

import kopf

from longshot import logs

M_ARENA_MAX: Final = -8
"""glibc's ``mallopt`` parameter for the most malloc arenas (``malloc.h``)."""
MALLOC_ARENAS: Final = 2
"""The operator's malloc arenas. glibc gives each thread that allocates its own arena, up to 8 per core; the
operator's thread pool (``controllers/manager.THREADS``) parses API answers in 64 threads, and the memory freed
in one arena is not reused by another: with 10,000 AgentTasks, the peak RSS grew by tens of MiB of fragmented
arenas. Two arenas cost nothing measurable (the threads wait on the network, the GIL serialises the parsing)."""


def limit_malloc_arenas(environ: Mapping[str, str] = os.environ, arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas before any thread starts, unless ``MALLOC_ARENA_MAX`` says otherwise (glibc read
    it at start). True when the cap was set; False elsewhere (musl, macOS) or when the environment decides."""
    if "MALLOC_ARENA_MAX" in environ:
        return False
    try:  # the C library the process runs on (no ldconfig lookup)
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # no mallopt: not glibc
        return False


def run(*, namespaces: list[str] | None = None) -> int:
    """Run the operator until it is stopped. A bad ``LONGSHOT_LOG_FORMAT`` or ``LONGSHOT_LOG_LEVEL`` stops it
    first (a :class:`~longshot.envsettings.SettingsError` naming the variable)."""
    logs.configure_from_env()
    limit_malloc_arenas()
    import longshot.controllers  # noqa: F401  (registers the handlers)

    asyncio.run(kopf.operator(
        standalone=True,  # leadership is ours (controllers/leadership.py), never kopf's peering
        namespaces=namespaces or [],
        clusterwide=not namespaces,
    ))
    return 0
