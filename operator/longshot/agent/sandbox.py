"""The tools' view of the checkout: paths confined to the workspace, bounded commands and outputs.

Every path a model gives is resolved against the checkout's root (symlinks included) and refused when it
ends up outside it or inside ``.git``; commands run in their own process group, are killed (the whole
group) when their time is up or a person interrupts them (``interrupt``, ``agent.messages``), and their
output is capped to a head and a tail around a truncation marker.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from longshot.agent import errors

DEFAULT_OUTPUT_CAP = 16_000
READ_CAP = 200_000
LIST_CAP = 2_000
SEARCH_CAP = 200
KILL_GRACE_SECONDS = 2.0


def truncate(data: bytes | str, cap: int) -> str:
    """Keep the head and the tail of ``data`` around a marker naming how much was cut."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", errors="replace")
    if len(data) <= cap:
        return data
    half = max(cap // 2, 1)
    cut = len(data) - 2 * half
    return f"{data[:half]}\n[... truncated {cut} characters ...]\n{data[-half:]}"


class Sandbox:
    """File and command tools confined to ``root``."""

    def __init__(self, root: Path, *, env: Mapping[str, str] | None = None,
                 output_cap: int = DEFAULT_OUTPUT_CAP, default_timeout: float = 600.0,
                 interrupt: threading.Event | None = None,
                 watching: Callable[[], AbstractContextManager[None]] | None = None) -> None:
        self.interrupt = interrupt
        """Set by a person's interrupt (``agent.messages.Inbox.interrupted``): the running command is killed."""
        self.watching = watching
        """Entered while a command runs (``agent.messages.Inbox.watching``): the inbox long-polls for an interrupt
        only then."""
        self.root = Path(os.path.realpath(root))
        self.env = dict(env if env is not None else os.environ)
        self.output_cap = output_cap
        self.default_timeout = default_timeout

    # --- paths ---------------------------------------------------------------------------------------

    def resolve(self, path: str) -> Path:
        """The real path of ``path`` inside the root, or a :class:`ToolError` saying why not."""
        if not isinstance(path, str) or not path.strip():
            raise errors.ToolError("path must be a non-empty string relative to the repository root")
        if "\x00" in path:
            raise errors.ToolError("path contains a NUL byte")
        candidate = Path(path)
        candidate = Path(os.path.realpath(candidate)) if candidate.is_absolute() else self.root / candidate
        real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            raise errors.ToolError(
                f"path {path!r} is outside the workspace (it resolves to {real}); "
                "use paths relative to the repository root"
            )
        relative = real.relative_to(self.root)
        if relative.parts and relative.parts[0] == ".git":
            raise errors.ToolError(f"path {path!r} is inside .git; the runner manages git itself")
        return real

    def relative(self, real: Path) -> str:
        return real.relative_to(self.root).as_posix() or "."

    def _walk(self, base: Path) -> list[Path]:
        """Regular files under ``base`` (not following symlinks, skipping .git), in a stable order."""
        files: list[Path] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d != ".git")
            for name in sorted(filenames):
                file = Path(dirpath) / name
                if not file.is_symlink():
                    files.append(file)
        return files

    # --- file tools ----------------------------------------------------------------------------------

    def list_files(self, path: str = ".", pattern: str | None = None) -> str:
        base = self.resolve(path)
        if not base.exists():
            raise errors.ToolError(f"{path!r} does not exist")
        if base.is_file():
            return self.relative(base)
        found: list[str] = []
        for file in self._walk(base):
            rel = self.relative(file)
            if pattern and not fnmatch.fnmatch(rel, pattern) and not fnmatch.fnmatch(file.name, pattern):
                continue
            found.append(rel)
            if len(found) >= LIST_CAP:
                found.append(f"[... more than {LIST_CAP} files; narrow the path or pattern ...]")
                break
        return "\n".join(found) if found else "(no files)"

    def read_file(self, path: str) -> str:
        real = self.resolve(path)
        if not real.is_file():
            raise errors.ToolError(f"{path!r} is not a file (list_files shows what exists)")
        data = real.read_bytes()
        if b"\x00" in data[:8192]:
            raise errors.ToolError(f"{path!r} is a binary file ({len(data)} bytes)")
        return truncate(data, READ_CAP)

    def write_file(self, path: str, content: str) -> str:
        if not isinstance(content, str):
            raise errors.ToolError("content must be a string")
        real = self.resolve(path)
        if real.is_dir():
            raise errors.ToolError(f"{path!r} is a directory")
        real.parent.mkdir(parents=True, exist_ok=True)
        real.write_text(content, encoding="utf-8")
        return f"wrote {self.relative(real)} ({len(content.encode())} bytes)"

    def edit_file(self, path: str, old: str, new: str, replace_all: bool = False) -> str:
        if not isinstance(old, str) or not isinstance(new, str) or not old:
            raise errors.ToolError("old and new must be strings and old must not be empty")
        real = self.resolve(path)
        if not real.is_file():
            raise errors.ToolError(f"{path!r} is not a file")
        text = real.read_text(encoding="utf-8", errors="surrogateescape")
        count = text.count(old)
        if count == 0:
            raise errors.ToolError(f"the text to replace was not found in {path!r}; read the file first")
        if count > 1 and not replace_all:
            raise errors.ToolError(
                f"the text to replace occurs {count} times in {path!r}; include more context or set replace_all"
            )
        real.write_text(text.replace(old, new), encoding="utf-8", errors="surrogateescape")
        return f"edited {self.relative(real)} ({count} replacement{'s' if count > 1 else ''})"

    def search(self, pattern: str, path: str = ".", glob: str | None = None) -> str:
        try:
            regex = re.compile(pattern)
        except (re.error, TypeError) as e:
            raise errors.ToolError(f"invalid regular expression {pattern!r}: {e}") from None
        base = self.resolve(path)
        files = [base] if base.is_file() else self._walk(base)
        hits: list[str] = []
        for file in files:
            rel = self.relative(file)
            if glob and not fnmatch.fnmatch(rel, glob) and not fnmatch.fnmatch(file.name, glob):
                continue
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if regex.search(line):
                    hits.append(f"{rel}:{number}: {line[:300]}")
                    if len(hits) >= SEARCH_CAP:
                        hits.append(f"[... more than {SEARCH_CAP} matches; narrow the pattern ...]")
                        return "\n".join(hits)
        return "\n".join(hits) if hits else "(no matches)"

    # --- commands ------------------------------------------------------------------------------------

    def run_command(self, command: str, timeout: float | None = None) -> CommandResult:
        if not isinstance(command, str) or not command.strip():
            raise errors.ToolError("command must be a non-empty string")
        limit = float(timeout) if timeout else self.default_timeout
        limit = min(limit, self.default_timeout)
        with self.watching() if self.watching is not None else contextlib.nullcontext():
            return run(["/bin/sh", "-c", command], cwd=self.root, env=self.env, timeout=limit,
                       output_cap=self.output_cap, interrupt=self.interrupt)


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None
    """None when the command was killed for running out of time."""
    output: str
    """stdout and stderr interleaved, capped."""
    timed_out: bool
    duration: float
    interrupted: bool = False
    """Killed because a person interrupted it (``exit_code`` is None)."""

    def render(self) -> str:
        status = (f"interrupted by a person after {self.duration:.1f}s and killed" if self.interrupted
                  else f"timed out after {self.duration:.1f}s and was killed" if self.timed_out
                  else f"exit code {self.exit_code}")
        return f"[{status}]\n{self.output}"


class _CappedReader:
    """Reads a pipe to its end, keeping at most ``cap`` characters as head + tail."""

    def __init__(self, stream, cap: int) -> None:  # type: ignore[no-untyped-def]
        self._stream = stream
        self._half = max(cap // 2, 1)
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            chunk = self._stream.read1(65536) if hasattr(self._stream, "read1") else self._stream.read(65536)
            if not chunk:
                return
            self.total += len(chunk)
            room = self._half - len(self._head)
            if room > 0:
                self._head += chunk[:room]
                chunk = chunk[room:]
            if chunk:
                self._tail += chunk
                if len(self._tail) > self._half:
                    del self._tail[: len(self._tail) - self._half]

    def text(self) -> str:
        cut = self.total - len(self._head) - len(self._tail)
        head = self._head.decode("utf-8", errors="replace")
        if cut <= 0:
            return head + self._tail.decode("utf-8", errors="replace")
        tail = self._tail.decode("utf-8", errors="replace")
        return f"{head}\n[... truncated {cut} bytes ...]\n{tail}"


INTERRUPT_CHECK_SECONDS = 0.2
"""How often a running command looks at its ``interrupt`` event."""


def run(argv: list[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
        output_cap: int = DEFAULT_OUTPUT_CAP, interrupt: threading.Event | None = None) -> CommandResult:
    """Run ``argv`` in a new process group; kill the group on timeout or when ``interrupt`` is set (and any
    leftovers after exit)."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as e:
        raise errors.ToolError(f"cannot start {argv[0]!r}: {e.strerror}") from None
    reader = _CappedReader(proc.stdout, output_cap)
    interrupted = False
    if interrupt is None:
        timed_out = not _wait_unreaped(proc, timeout)
    else:
        end = start + timeout
        timed_out = False
        while True:
            if interrupt.is_set():
                interrupted = True
                break
            left = end - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if _wait_unreaped(proc, min(left, INTERRUPT_CHECK_SECONDS)):
                break
    if timed_out or interrupted:
        _kill_group(proc.pid, signal.SIGTERM)
        _wait_unreaped(proc, KILL_GRACE_SECONDS)
    # Background children may still hold the pipe open; the group goes with the command. The command is not
    # reaped yet, so its pid (the group's id) cannot have been reused by an unrelated process.
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()
    reader.thread.join(timeout=5)
    assert proc.stdout is not None
    proc.stdout.close()
    return CommandResult(exit_code=None if timed_out or interrupted else proc.returncode, output=reader.text(),
                         timed_out=timed_out, duration=time.monotonic() - start, interrupted=interrupted)


def _wait_unreaped(proc: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """Wait until ``proc`` exits, without reaping it (a pidfd becomes readable at exit); False on timeout.
    Where pidfds are missing (Linux < 5.3) it falls back to a reaping wait."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))
    finally:
        os.close(fd)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
