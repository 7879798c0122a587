"""The process's C allocator, tuned for an operator whose I/O runs in a pool of threads.

glibc gives threads their own malloc arenas (up to 8 per core) so that they do not contend on one lock. Each arena
keeps what its thread freed for reuse, and memory freed in one arena cannot serve another: with 64 I/O threads each
parsing API answers (bytes, large dicts and lists go to malloc, not Python's small-object allocator), the operator's
resident memory grew to several times its live Python objects while a 10,000-task plan was taken in. Two arenas is
what ``MALLOC_ARENA_MAX=2`` gives (a common setting for threaded Python services): the threads mostly wait on the
network, so the lock is not contended, and freed memory is reused across threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("longshot.memory")

M_ARENA_MAX = -8
"""``mallopt`` parameter (glibc ``malloc.h``)."""


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` for threads created from now on; False where there is no glibc
    (musl, macOS: nothing to do). Call it before the thread pool starts."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_ARENA_MAX, arenas))
    if not ok:
        log.info("malloc arenas not limited (mallopt refused)")
    return ok
