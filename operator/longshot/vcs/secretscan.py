"""Find credentials in a change before it is pushed (the agent runner) or merged (the merge queue).

* :func:`scan_range` is the authority: it scans **every commit** of ``base..head`` (not only the net diff, so a
  secret added by one commit and removed by a later one is still found, since it stays in the history), with
  bounded memory whatever the file sizes. It streams ``git log -p`` line by line from a pipe (long lines in
  pieces with an overlap), treats files over :data:`BIG_FILE_THRESHOLD` and binary files as blobs whose bytes
  are streamed through ``git cat-file --batch`` in chunks with an overlap, and scans merge commits' own
  changes (``--cc``). It reports what the range *introduces*: a line already present verbatim in the trusted
  tree (the target branch) is not a finding, and the ``longshot:allow-secret`` marker is **not** honoured on
  the lines the range adds, so an agent cannot wave its own secret through.
* ``scan_diff(diff)`` reads a unified diff (``git diff`` output) and checks only the lines it adds;
  ``scan_text(path, text)`` checks a whole file. They honour the marker, for people's own tooling.

The rules are gitleaks' maintained ruleset plus a few of our own (:mod:`longshot.vcs.secretrules`), all RE2.
A :class:`Finding` names the file, the line, the rule and the commit, never the secret itself, so it is safe
to log, to put in a handoff and to show in a condition.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final, Protocol

import re2

from longshot.vcs.secretrules import Match, ruleset, shannon_entropy

__all__ = ["ALLOW_MARKER", "Finding", "ScanError", "ScanTimedOut", "added_lines", "line_rules", "scan_diff",
           "scan_line", "scan_range", "scan_text", "shannon_entropy"]

ALLOW_MARKER = "longshot:allow-secret"

# String literals next to each other, alone or joined by an operator (``"sk_live_" + "abc"``, ``"AKIA" "..."``,
# ``'a' . 'b'``, ``"a" .. "b"``, ``'a' || 'b'``): the line is scanned once more with them joined, so a credential
# split in two is found. RE2: linear in the line.
_ADJACENT_LITERALS = re2.compile(rb"""["'][ \t]*(?:\+|\.\.?|&|\|\|)?[ \t]*["']""")


@dataclass(frozen=True)
class Finding:
    """A suspected credential: where and which rule matched (never the value)."""

    file: str
    line: int
    rule: str
    commit: str = field(default="", compare=True)
    """The commit that adds it (``scan_range`` only)."""

    def __str__(self) -> str:
        where = f" (commit {self.commit[:12]})" if self.commit else ""
        return f"{self.file}:{self.line}: {self.rule}{where}"


def _most_specific(matches: Iterable[Match]) -> list[str]:
    """The rules to report for one line: every specific rule that matched, else the first generic one."""
    matches = list(matches)
    specific = list(dict.fromkeys(m.rule for m in matches if not m.generic))
    if specific or not matches:
        return specific
    return [min(matches, key=lambda m: m.rank).rule]


def line_rules(path: str, line: str) -> list[str]:
    """The rules that find a credential in one line of ``path`` (with its adjacent string literals joined too)."""
    rules, data = ruleset(), line.encode(errors="replace")
    found = list(rules.find(path, data))
    # two literals have four quotes: most lines have fewer, and skip the RE2 pass
    joined = _ADJACENT_LITERALS.sub(b"", data) if line.count("'") + line.count('"') >= 4 else data
    if joined != data:
        found += rules.find(path, joined)
    return _most_specific(found)


def scan_line(path: str, number: int, line: str, known: Iterable[str] = (), *,
              honour_marker: bool = True) -> list[Finding]:
    """Findings of one line of ``path``; ``known`` are exact credential values to look for as well
    (the caller's own tokens), reported as rule ``known-credential``. With ``honour_marker`` a line carrying
    :data:`ALLOW_MARKER` has no findings (``known`` credentials are found regardless)."""
    if any(secret and secret in line for secret in known):
        return [Finding(path, number, "known-credential")]
    if honour_marker and ALLOW_MARKER in line:
        return []
    return [Finding(path, number, rule) for rule in line_rules(path, line)]


def scan_text(path: str, text: str, known: Iterable[str] = ()) -> list[Finding]:
    """Findings of a whole file."""
    known = [k for k in known if k]
    return [f for number, line in enumerate(text.splitlines(), 1) for f in scan_line(path, number, line, known)]


def scan_diff(diff: str, known: Iterable[str] = ()) -> list[Finding]:
    """Findings in the lines a unified diff adds (file paths and line numbers of the new side)."""
    known = [k for k in known if k]
    return [f for path, number, line in added_lines(diff) for f in scan_line(path, number, line, known)]


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def added_lines(diff: str | Iterable[str]) -> Iterator[tuple[str, int, str]]:
    """``(path, line number, text)`` of every added line of a unified diff."""
    lines = diff.splitlines() if isinstance(diff, str) else diff
    path: str | None = None
    number = 0
    in_hunk = False
    for raw in lines:
        if raw.startswith("diff --git "):
            path, in_hunk = None, False
            continue
        if not in_hunk and raw.startswith("+++ "):
            target = raw[4:].rstrip("\t\n")
            path = None if target == "/dev/null" else _strip_prefix(_unquote(target))
            continue
        match = _HUNK.match(raw)
        if match:
            number, in_hunk = int(match.group(1)), True
            continue
        if not in_hunk or path is None:
            continue
        if raw.startswith("+"):
            yield path, number, raw[1:]
            number += 1
        elif raw.startswith(" "):
            number += 1
        elif raw.startswith("\\"):
            continue
        elif not raw.startswith("-"):
            in_hunk = False


def _unquote(target: str) -> str:
    if target.startswith('"') and target.endswith('"'):
        return target[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape").encode(
            "latin-1").decode("utf-8", "replace")
    return target


def _strip_prefix(target: str) -> str:
    return target[2:] if target.startswith(("b/", "w/", "i/")) else target


# --- the range scan: every commit of base..head, streamed ---------------------------------------------

BIG_FILE_THRESHOLD: Final = 1024 * 1024
"""Files larger than this (1 MiB) are never diffed (git would hold both versions in memory): like binary files
their new blob is scanned as a byte stream."""
LINE_PIECE: Final = 64 * 1024
"""Longest piece of a diff line read at once; a longer line is scanned piece by piece."""
OVERLAP: Final = 4096
"""Characters carried from one piece (or chunk) to the next, so a credential across the cut is still found."""
BLOB_CHUNK: Final = 64 * 1024
"""Bytes of a blob read and scanned at once (with the overlap before them), the size of a line piece: every rule
whose keyword occurs in a chunk runs over it, so a chunk crafted to hold every keyword costs up to ~0.2-0.5 s of
CPU; the chunk bounds that cost between two deadline checks, the scan's deadline bounds the total
(docs/security.md)."""
MAX_FINDINGS: Final = 1000
"""The scan stops once it has this many findings (the branch is refused either way)."""
MAX_CANDIDATE_BYTES: Final = 4 * 1024 * 1024
"""Most bytes of found lines kept to check against the trusted tree; beyond, findings are reported as they are."""

_NULL_OID = re.compile(rb"^0+$")
_HUNK_HEADER = re.compile(rb"^@@ -\d+(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_COMBINED_HUNK_HEADER = re.compile(rb"^(@{3,}) (?:-\d+(?:,\d+)? )+\+(\d+)(?:,(\d+))? @{3,}")

# git options that no repository config can change for the scan (the agent-side scan runs in a checkout
# whose .git/config the model may have written): no external diff, textconv, pager, hooks, fsmonitor,
# signatures, replacement objects, lazy fetches or network; fixed prefixes and quoting; bounded pack windows.
_GIT = (
    "git", "--no-pager", "--no-replace-objects",
    "-c", "core.fsmonitor=", "-c", "core.hooksPath=/dev/null", "-c", "core.quotePath=false",
    "-c", f"core.bigFileThreshold={BIG_FILE_THRESHOLD}", "-c", "core.useReplaceRefs=false",
    "-c", "core.packedGitWindowSize=32m", "-c", "core.packedGitLimit=128m", "-c", "core.deltaBaseCacheLimit=16m",
    "-c", "diff.external=", "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
    "-c", "diff.suppressBlankEmpty=false", "-c", "diff.relative=false", "-c", "color.ui=never",
    "-c", "log.showSignature=false", "-c", "protocol.allow=never", "-c", "credential.helper=",
)
# `git diff-tree --stdin` rather than `git log -p`: log reads every big blob whole even when it prints
# "Binary files differ" (120 MiB for a 50 MB file), diff-tree does not (4 MiB)
_DIFF_TREE = ("diff-tree", "--stdin", "-r", "-p", "--cc", "--root", "--no-color", "--no-ext-diff", "--no-textconv",
              "--no-renames", "--full-index", "--src-prefix=a/", "--dst-prefix=b/", "--no-relative",
              "--format=commit %H")


class ScanError(RuntimeError):
    """git could not read the range (unknown commit, broken repository); the message says which command."""


class ScanTimedOut(ScanError):
    """The scan did not finish before its deadline (``scan_range(deadline=...)``); its git processes were killed."""


class _HasPath(Protocol):
    @property
    def path(self) -> Path: ...


def scan_range(repo: str | os.PathLike[str] | _HasPath, base: str, head: str, *, known: Iterable[str] = (),
               trusted: str | None = None, deadline: float | None = None) -> list[Finding]:
    """Credentials introduced by the commits of ``base..head`` in the repository ``repo`` (a bare repository,
    a checkout, or a :class:`~longshot.vcs.workspace.Workspace`, whose lock the caller holds).

    Every commit is scanned (merge commits by their own changes), text files line by line and binary or big
    files as byte streams, with memory bounded whatever the sizes. A line that exists verbatim in ``trusted``
    (default ``base``: the target branch) is already there and not reported; the allow marker is not honoured.
    ``known`` are exact values to look for (the caller's own credentials; never exempted). Synchronous (run it
    with ``asyncio.to_thread``); raises :class:`ScanError` when git cannot read the range.

    ``deadline`` (a :func:`time.monotonic` value) bounds the wall-clock time: the scan checks it between lines,
    pieces and chunks, and a timer kills its git processes at that moment (a ``git grep`` that prints nothing
    for a long time cannot hold it past the deadline); it then raises :class:`ScanTimedOut`. The first scan of a
    process compiles the rules (about 0.7 s, whatever the branch holds): that time moves the deadline on.
    """
    for rev in (base, head, trusted or "x"):
        if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
            raise ValueError(f"not a revision: {rev!r}")
    directory = os.fspath(repo.path if hasattr(repo, "path") else repo)
    began = time.monotonic()
    ruleset()
    if deadline is not None:
        deadline += time.monotonic() - began
    scan = _RangeScan([k for k in known if k], directory, deadline)
    timer = None
    if deadline is not None:
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), scan.expire)
        timer.daemon = True
        timer.start()
    try:
        scan.log(base, head)
        scan.blobs()
        scan.exempt_existing(base if trusted is None else trusted)
    except ScanError:
        if scan.timed_out or scan.past_deadline():
            raise scan.timeout() from None
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if scan.timed_out:
        raise scan.timeout()
    return sorted(scan.findings, key=lambda f: (f.file, f.line, f.rule, f.commit))


def _env() -> dict[str, str]:
    """A clean environment for the scan's git: nothing inherited that could carry a credential or a config."""
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_ATTR_NOSYSTEM="1", GIT_NO_LAZY_FETCH="1",
               GIT_TERMINAL_PROMPT="0", GIT_NO_REPLACE_OBJECTS="1", HOME=os.devnull, GIT_OPTIONAL_LOCKS="0")
    return env


@dataclass
class _Blob:
    path: str
    commit: str
    new: str
    old: tuple[str, ...]


class _RangeScan:
    def __init__(self, known: list[str], directory: str, deadline: float | None = None) -> None:
        self.known = known
        self.directory = directory
        self.deadline = deadline
        self.timed_out = False
        self.procs: set[subprocess.Popen[bytes]] = set()
        self.lock = threading.Lock()
        self.findings: set[Finding] = set()
        self.blob_queue: dict[str, _Blob] = {}
        self.candidates: dict[str, list[Finding]] = {}
        """Found lines (text -> findings) to check against the trusted tree."""
        self.candidate_bytes = 0
        self.overlap = max([OVERLAP, *(len(k.encode()) for k in known)])

    def past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def timeout(self) -> ScanTimedOut:
        return ScanTimedOut(f"the secret scan did not finish within its deadline in {self.directory}")

    def check(self) -> None:
        """Raise :class:`ScanTimedOut` once the deadline has passed."""
        if self.timed_out or self.past_deadline():
            self.timed_out = True
            raise self.timeout()

    def expire(self) -> None:
        """The deadline's timer: kill every git process of the scan (their pipes end; the reader stops)."""
        with self.lock:
            self.timed_out = True
            for proc in self.procs:
                proc.kill()

    def _track(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        with self.lock:
            if self.timed_out:
                proc.kill()
            self.procs.add(proc)
        return proc

    @property
    def full(self) -> bool:
        return len(self.findings) + sum(len(v) for v in self.candidates.values()) >= MAX_FINDINGS

    def _popen(self, *args: str, stdin: int | IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        return self._track(subprocess.Popen([*_GIT, "-C", self.directory, *args], stdin=stdin,
                                            stdout=subprocess.PIPE, stderr=self.stderr, env=_env()))

    def _run(self, what: str, args: tuple[str, ...], consume: Callable[[IO[bytes], subprocess.Popen[bytes]], None],
             *, ok: tuple[int, ...] = (0,), stdin: int | IO[bytes] | None = None) -> None:
        with tempfile.TemporaryFile() as self.stderr, self._popen(*args, stdin=stdin) as proc:
            assert proc.stdout is not None
            failed = True
            try:
                consume(proc.stdout, proc)
                failed = False
            finally:
                if failed or self.full:
                    proc.kill()  # an error or the deadline: git must not block on a full pipe
                if proc.stdin is not None and not proc.stdin.closed:
                    with contextlib.suppress(OSError):  # git was killed: the pipe is broken
                        proc.stdin.close()
                rc = proc.wait()
                self.procs.discard(proc)
            self.check()
            if rc not in ok and not self.full:
                self.stderr.seek(0)
                err = self.stderr.read(4000).decode(errors="replace").strip().splitlines()
                raise ScanError(f"{what} failed in {self.directory}: {err[0] if err else f'exit {rc}'}")

    # --- git log -p ------------------------------------------------------------------------------------

    def log(self, base: str, head: str) -> None:
        """Scan the patch of every commit of ``base..head`` (``git rev-list | git diff-tree --stdin``)."""
        with tempfile.TemporaryFile() as err, self._track(subprocess.Popen(
                [*_GIT, "-C", self.directory, "rev-list", f"{base}..{head}", "--"], stdout=subprocess.PIPE,
                stderr=err, env=_env())) as commits:
            failed = True
            try:
                self._run("git diff-tree", _DIFF_TREE, lambda out, _: self._parse(out), stdin=commits.stdout)
                failed = False
            finally:
                if failed or self.full:
                    commits.kill()
                rc = commits.wait()
                self.procs.discard(commits)
            if rc != 0 and not self.full:
                err.seek(0)
                lines = err.read(4000).decode(errors="replace").strip().splitlines()
                raise ScanError(f"git rev-list {base}..{head} failed in {self.directory}: "
                                f"{lines[0] if lines else f'exit {rc}'}")

    def _parse(self, out: IO[bytes]) -> None:
        """Read ``git log -p --cc`` output: headers, hunks (their counts say where they end), added lines."""
        commit = path = ""
        parents = 1  # 1: a normal diff; n > 1: a combined diff of a merge with n parents
        new_left = old_left = number = 0
        blob: tuple[str, tuple[str, ...]] | None = None
        line_findings: set[str] = set()
        continued = adding = False
        carry = ""
        check = self.check if self.deadline is not None else None
        for piece in iter(lambda: out.readline(LINE_PIECE), b""):
            if check is not None:
                check()
            whole = piece.endswith(b"\n")
            raw = piece[:-1] if whole else piece
            if continued:  # the rest of a long line
                if adding:
                    text = raw.decode("utf-8", "replace")
                    self._line(path, number - 1, carry + text, commit, line_findings, whole=False)
                    carry = (carry + text)[-self.overlap:]
                continued = not whole
                continue
            continued = not whole
            adding = False
            if new_left > 0 or old_left > 0:  # inside a hunk: the counts say where it ends
                prefix = raw[:parents]
                if parents == 1:
                    kind = prefix or b" "  # an empty line is an empty context line
                    if kind == b"+":
                        new_left, adding = new_left - 1, True
                    elif kind == b"-":
                        old_left -= 1
                    elif kind == b" ":
                        new_left, old_left, number = new_left - 1, old_left - 1, number + 1
                    elif kind != b"\\":
                        new_left = old_left = 0  # not a diff line: the hunk is over; read it as a header
                elif len(prefix) == parents and not prefix.strip(b" +-"):
                    if b"-" not in prefix:  # in the result; new against every parent: the merge's own change
                        new_left, adding = new_left - 1, prefix == b"+" * parents
                        number += 0 if adding else 1
                else:
                    new_left = 0
                if adding:
                    text = raw[parents:].decode("utf-8", "replace")
                    line_findings = set()
                    self._line(path, number, text, commit, line_findings, whole=whole)
                    carry = text[-self.overlap:]
                    number += 1
                    if self.full:
                        return
                if new_left > 0 or old_left > 0 or adding:
                    continue
            if raw.startswith(b"commit "):
                commit = raw[7:].decode("ascii", "replace").strip()
            elif raw.startswith(b"diff --git "):
                path, parents, blob = _header_path(raw[11:]), 1, None
            elif raw.startswith((b"diff --cc ", b"diff --combined ")):
                path, blob = _unquote(raw.split(b" ", 2)[2].decode("utf-8", "replace")), None
            elif raw.startswith(b"index "):
                blob = _index_oids(raw[6:])
            elif raw.startswith(b"+++ "):
                target = _unquote(raw[4:].decode("utf-8", "replace").rstrip("\t"))
                path = "" if target == "/dev/null" else _strip_prefix(target)
            elif raw.startswith(b"Binary files ") and blob is not None and path:
                new, old = blob
                if not _NULL_OID.match(new.encode()) and new not in self.blob_queue:
                    self.blob_queue[new] = _Blob(path, commit, new, old)
            elif raw.startswith(b"@@"):
                normal = _HUNK_HEADER.match(raw)
                combined = None if normal else _COMBINED_HUNK_HEADER.match(raw)
                if normal:
                    parents = 1
                    old_left = 1 if normal.group(1) is None else int(normal.group(1))
                    number = int(normal.group(2))
                    new_left = 1 if normal.group(3) is None else int(normal.group(3))
                elif combined:
                    parents = len(combined.group(1)) - 1
                    number, old_left = int(combined.group(2)), 0
                    new_left = 1 if combined.group(3) is None else int(combined.group(3))

    def _line(self, path: str, number: int, text: str, commit: str, seen: set[str], *, whole: bool) -> None:
        """Scan an added line (or a piece of a long one: ``whole`` is False for every piece but a short line)."""
        if not path:
            return
        for f in scan_line(path, number, text, self.known, honour_marker=False):
            if f.rule in seen:
                continue
            seen.add(f.rule)
            found = Finding(f.file, f.line, f.rule, commit)
            fits = whole and self.candidate_bytes + len(text) <= MAX_CANDIDATE_BYTES
            if f.rule != "known-credential" and fits and "\n" not in text and "\r" not in text:
                if text not in self.candidates:
                    self.candidate_bytes += len(text)
                self.candidates.setdefault(text, []).append(found)
            else:
                self.findings.add(found)

    # --- binary and big files ---------------------------------------------------------------------------

    def blobs(self) -> None:
        """Scan the queued blobs' bytes; matches already in the blob they replace are not new."""
        if not self.blob_queue or self.full:
            return

        def consume(out: IO[bytes], proc: subprocess.Popen[bytes]) -> None:
            assert proc.stdin is not None
            for blob in self.blob_queue.values():
                before: set[bytes] = set()
                for oid in blob.old:
                    if not _NULL_OID.match(oid.encode()):
                        for _, _, digest in self._read_blob(proc.stdin, out, oid, blob.path):
                            before.add(digest)
                seen: set[tuple[int, str]] = set()
                for number, rule, digest in self._read_blob(proc.stdin, out, blob.new, blob.path):
                    if digest not in before and (number, rule) not in seen:
                        seen.add((number, rule))
                        self.findings.add(Finding(blob.path, number, rule, blob.commit))
                if self.full:
                    return

        self._run("git cat-file --batch", ("cat-file", "--batch"), consume, stdin=subprocess.PIPE)

    def _read_blob(self, stdin: IO[bytes], out: IO[bytes], oid: str, path: str
                   ) -> Iterator[tuple[int, str, bytes]]:
        """``(line, rule, digest of the match)`` of every credential pattern in the blob ``oid``."""
        stdin.write(oid.encode() + b"\n")
        stdin.flush()
        header = out.readline(512).split()
        if len(header) != 3 or header[1] != b"blob":
            return  # missing (a shallow or partial repository) or not a blob: nothing to read
        left = int(header[2])
        carry, first_line = b"", 1
        while left > 0:
            self.check()
            chunk = out.read(min(BLOB_CHUNK, left))
            if not chunk:
                raise ScanError(f"git cat-file ended inside blob {oid} of {path}")
            left -= len(chunk)
            window = carry + chunk
            number, counted = first_line, 0
            for rule, start, end in self._matches(window, path):
                number += window.count(b"\n", counted, start)  # matches come in order: one pass over the window
                counted = start
                if end > len(carry):  # a match wholly inside the carry was found in the previous window
                    yield number, rule, hashlib.sha256(window[start:end]).digest()
            cut = max(0, len(window) - self.overlap)
            first_line += window.count(b"\n", 0, cut)
            carry = window[cut:]
        out.read(1)  # the newline after the content

    def _matches(self, window: bytes | str, path: str = "") -> list[tuple[str, int, int]]:
        """``(rule, start, end)`` of the credentials in ``window`` (bytes of the file ``path``; a str is taken as
        UTF-8), in order: every rule whose keywords occur in the window runs over it once (RE2: linear, and invalid
        UTF-8 is no character of a token), and each line keeps its most specific rules as in :func:`scan_line`."""
        window = window.encode(errors="replace") if isinstance(window, str) else window
        found = [("known-credential", start, start + len(secret)) for secret in map(str.encode, self.known)
                 for start in _occurrences(window, secret)]
        line_end, line = -1, list[Match]()
        for m in sorted(ruleset().find(path, window, first=False), key=lambda m: m.start):
            if m.start > line_end:
                found += _reported(line)
                line_end, line = _end_of_line(window, m.start), []
            line.append(m)
        found += _reported(line)
        return sorted(found, key=lambda f: f[1])

    # --- lines that were already there ------------------------------------------------------------------

    def exempt_existing(self, trusted: str) -> None:
        """Drop the found lines that exist verbatim in ``trusted``'s tree (``git grep -F``); report the rest."""
        if not self.candidates:
            return
        existing: set[str] = set()
        patterns = "\n".join(self.candidates).encode() + b"\n"

        def consume(out: IO[bytes], proc: subprocess.Popen[bytes]) -> None:
            assert proc.stdin is not None
            proc.stdin.write(patterns)  # git grep reads every pattern before it prints anything
            proc.stdin.close()
            for piece in iter(lambda: out.readline(LINE_PIECE + 2), b""):
                self.check()
                line = piece.rstrip(b"\n").decode("utf-8", "replace")
                if line in self.candidates:
                    existing.add(line)

        if _has_tree(self.directory, trusted):
            self._run(f"git grep {trusted}", ("grep", "-h", "-I", "--no-color", "-F", "-f", "-", trusted, "--"),
                      consume, ok=(0, 1), stdin=subprocess.PIPE)
        for text, found in self.candidates.items():
            if text not in existing:
                self.findings.update(found)
        self.candidates = {}


def _reported(line: list[Match]) -> list[tuple[str, int, int]]:
    """The matches of one line of the rules :func:`scan_line` would name: the specific ones, else the first generic
    rule (all its matches: one may be new where another was in the blob before)."""
    rules = _most_specific(line)
    return [(m.rule, m.start, m.end) for m in line if m.rule in rules]


def _occurrences(text: bytes, part: bytes) -> Iterator[int]:
    start = text.find(part)
    while start >= 0:
        yield start
        start = text.find(part, start + 1)


def _end_of_line(text: bytes, at: int) -> int:
    end = text.find(b"\n", at)
    return len(text) if end < 0 else end


def _has_tree(directory: str, rev: str) -> bool:
    return subprocess.run([*_GIT, "-C", directory, "rev-parse", "--verify", "--quiet", f"{rev}^{{tree}}"],
                          capture_output=True, env=_env(), check=False).returncode == 0


def _index_oids(rest: bytes) -> tuple[str, tuple[str, ...]]:
    """``(new, (old, ...))`` from an ``index old..new [mode]`` line (``old1,old2..new`` for a merge)."""
    oids = rest.split(b" ", 1)[0].decode("ascii", "replace")
    old, _, new = oids.partition("..")
    return new, tuple(old.split(","))


def _header_path(rest: bytes) -> str:
    """The path of a ``diff --git a/<path> b/<path>`` header (renames are off, so both sides are the same)."""
    text = rest.decode("utf-8", "replace")
    if text.startswith('"'):
        end = text.find('" ', 1)
        while end > 0 and text[end - 1] == "\\":
            end = text.find('" ', end + 1)
        return _strip_prefix(_unquote(text[:end + 1])) if end > 0 else ""
    half = (len(text) - 1) // 2
    same = len(text) > 5 and text[half] == " " and text[2:half] == text[half + 3:]
    return text[2:half] if same else text.split(" b/", 1)[-1]
