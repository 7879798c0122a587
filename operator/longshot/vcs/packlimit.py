"""Bound what a git fetch writes to disk, whatever the server supports.

A fetch asks the server for what it needs (``--depth``, ``--filter``), but the server decides what it sends: one
that ignores filters (``uploadpack.allowFilter=false``, the default of many git servers) sends every blob of the
commit, and git writes all of it before anything can look. git has a size limit for received packs only on the
receiving side of a push (``receive.maxInputSize``); ``git fetch`` has none.

This module adds one. ``git fetch`` stores the pack it receives by running ``git index-pack`` (or, for a few
objects, ``git unpack-objects``) with the pack on its standard input; it runs them as ``git <command>`` from its
exec path (``GIT_EXEC_PATH``). :func:`environment` points ``GIT_EXEC_PATH`` at a directory holding every program
of the real exec path (symbolic links) and a ``git`` of its own that runs those two commands with
``--max-input-size=<limit>`` (the commands' own bound: they stop reading and fail as soon as the pack is larger)
and under ``ulimit -f`` (the kernel's bound on any file they write), and refuses a pack announcing more objects
than allowed (``--pack_header=<version>,<objects>``, which ``git fetch`` passes them) before a byte of it is
written. Everything else runs the real git unchanged.

So a fetch through it writes at most ``max_input_bytes`` of pack, however large the server's answer, and the
fetch fails with git's ``fatal: pack exceeds maximum allowed size``, which :func:`is_over_limit` recognises.
"""

from __future__ import annotations

import atexit
import functools
import os
import shlex
import shutil
import stat
import tempfile
from pathlib import Path

from longshot.vcs import gitexec

MAX_INPUT_ENV = "LONGSHOT_GIT_MAX_INPUT_BYTES"
MAX_OBJECTS_ENV = "LONGSHOT_GIT_MAX_OBJECTS"
PREFIX = "longshot-git-exec-"
OVER_LIMIT_MARKERS = ("pack exceeds maximum allowed size", "longshot: the pack has", "File size limit exceeded")

WRAPPER = """#!/bin/sh
# Longshot: git runs its sub-commands through here (GIT_EXEC_PATH). A received pack is stored with at most
# $LONGSHOT_GIT_MAX_INPUT_BYTES bytes and $LONGSHOT_GIT_MAX_OBJECTS objects; everything else is the real git.
cmd=""
skip=""
for a in "$@"; do
  if [ -n "$skip" ]; then skip=""; continue; fi
  case "$a" in
  --shallow-file|-c|-C|--git-dir|--work-tree|--namespace|--config-env|--super-prefix) skip=1 ;;
  -*) ;;
  *) cmd=$a; break ;;
  esac
done
case "$cmd" in
index-pack|unpack-objects)
  if [ -n "$LONGSHOT_GIT_MAX_OBJECTS" ]; then
    for a in "$@"; do
      case "$a" in
      --pack_header=*)
        n=${a##*,}
        if [ "$n" -gt "$LONGSHOT_GIT_MAX_OBJECTS" ]; then
          echo "fatal: longshot: the pack has $n objects, more than the $LONGSHOT_GIT_MAX_OBJECTS accepted" >&2
          exit 128
        fi ;;
      esac
    done
  fi
  if [ -n "$LONGSHOT_GIT_MAX_INPUT_BYTES" ]; then
    ulimit -f $(( LONGSHOT_GIT_MAX_INPUT_BYTES / 512 + 64 ))
    exec {git} "$@" --max-input-size="$LONGSHOT_GIT_MAX_INPUT_BYTES"
  fi ;;
esac
exec {git} "$@"
"""


@functools.lru_cache(maxsize=1)
def exec_dir() -> Path:
    """The wrapping exec path (made once per process, in a private temporary directory removed at exit)."""
    real = gitexec.exec_path()
    git = real / "git"
    if not git.exists():
        found = shutil.which("git")
        if found is None:
            raise RuntimeError("git is not on PATH")
        git = Path(found).resolve()
    sweep_stale(Path(tempfile.gettempdir()))
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)  # (one a process: not left behind in /tmp)
    for entry in real.iterdir():
        if entry.name != "git":
            (root / entry.name).symlink_to(entry)
    wrapper = root / "git"
    wrapper.write_text(WRAPPER.replace("{git}", shlex.quote(str(git))))
    wrapper.chmod(stat.S_IRWXU)
    return root


def sweep_stale(tmp: Path) -> list[Path]:
    """Remove the exec directories of processes that are gone (the ones a signal killed: their exit handler did not
    run); the directories removed. A directory names its process (``longshot-git-exec-<pid>-…``); one whose process
    still exists (or whose number another process now has, or that belongs to another user) is left, as are
    directories of the older, unnamed form."""
    removed: list[Path] = []
    try:
        entries = list(tmp.glob(f"{PREFIX}*-*"))
    except OSError:
        return removed
    for entry in entries:
        pid = entry.name[len(PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink() and entry.lstat().st_uid == os.getuid():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process (or not a pid at all): not ours to judge
    return True


def environment(max_input_bytes: int, max_objects: int | None = None) -> dict[str, str]:
    """Environment variables that bound the pack a ``git fetch`` stores to ``max_input_bytes`` bytes (and, when
    given, ``max_objects`` objects)."""
    if max_input_bytes < 1:
        raise ValueError(f"max_input_bytes must be positive, not {max_input_bytes}")
    env = {"GIT_EXEC_PATH": str(exec_dir()), MAX_INPUT_ENV: str(max_input_bytes)}
    if max_objects is not None:
        env[MAX_OBJECTS_ENV] = str(max_objects)
    return env


def is_over_limit(stderr: str) -> bool:
    """Whether a failed fetch's output says it stopped at the bound."""
    return any(m in stderr for m in OVER_LIMIT_MARKERS)


def tree_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (``du`` of regular files, symbolic links not followed)."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
