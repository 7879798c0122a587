"""The merge queue's operator-side git workspace: one bare clone per repository and tenant, fetched before each merge.

A :class:`Workspace` is a bare repository under ``<cache_dir>/<tenant_key(namespace, secret, url)>`` (or
``<repository_key(url)>`` when no tenant is given: tests and benchmarks) with one remote,
``origin``. It holds no working tree: every merge strategy in :mod:`longshot.vcs.merge` is done with git's
plumbing (``merge-tree --write-tree``, ``commit-tree``), so there is never a checkout to leave dirty and a
crash in the middle of a merge leaves nothing to clean up but unreferenced objects.

Fetches are narrow: only the target branch (into ``refs/remotes/origin/<target>``) and the job's branch
(into the scratch ref ``refs/longshot/incoming``), never ``refs/heads/*``.

Credentials never appear in a URL, an argument or a log line:

* a username and password/token reach git through a ``GIT_ASKPASS`` script that holds no secret and answers
  from the environment of the git process (``LONGSHOT_GIT_ASKPASS_USERNAME``/``..._PASSWORD``);
* an HTTP header (``Authorization: Bearer ...``) is given as ``http.extraHeader`` through
  ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` in the environment, so it is in no
  config file and no ``ps`` listing;
* an ssh private key is written to a 0600 file inside the workspace directory and used through
  ``GIT_SSH_COMMAND``.

Every message of a :class:`GitError` has those secrets replaced by ``***``.

GitPython sets the repository up (``Repo.init``, remote, config) and reads a commit where its objects read better
than a format string split on NUL bytes, off the hot path (:meth:`Workspace.repo`: the intake hook's commit
metadata); the hot path (fetch, plumbing, the trailer search, the branch's commits, push) and every command that
reaches the remote (held to the egress policy, see :meth:`Workspace.git`) call the ``git`` binary directly with
:mod:`subprocess`, which costs one process per call and nothing more. Which and why: docs/git.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import git as gitpython

from longshot.net import guard as gd
from longshot.vcs import packlimit

INCOMING_REF = "refs/longshot/incoming"
"""Scratch ref the job's branch is fetched into (overwritten by every fetch)."""

GIT_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "credential.helper=",
    "-c", "commit.gpgsign=false",
    "-c", "core.quotePath=false",
    "-c", "protocol.version=2",
    "-c", "maintenance.auto=false",
    "-c", "gc.auto=0",
)
"""Options of every git call: no hooks, no stored credentials, no signing, no automatic gc (see gc())."""

ASKPASS_SCRIPT = """#!/bin/sh
# Longshot's git credential prompt: answers from this process's environment, holds no secret itself.
case "$1" in
  Username*|username*) printf '%s\\n' "$LONGSHOT_GIT_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$LONGSHOT_GIT_ASKPASS_PASSWORD" ;;
esac
"""
DEFAULT_USERNAME = "x-access-token"
REMOTE_COMMANDS = frozenset({"fetch", "push", "ls-remote", "pull"})
"""git commands that connect to the remote: held to the egress policy when the workspace has a guard."""
GC_EVERY = 200
"""Run ``git gc --auto`` after this many fetches (automatic maintenance is off on the hot path)."""


class GitError(RuntimeError):
    """A git command failed; the message names the command (secrets redacted) and git's output."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


def normalise_url(url: str) -> str:
    """The repository URL without credentials, trailing slashes or ``.git``, scheme and host lower-cased.

    ``https://user:pw@Git.Example.com/org/app.git/`` and ``https://git.example.com/org/app`` are the same
    repository and get the same workspace and the same Lease.
    """
    u = url.strip()
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://(?:[^/@]*@)?([^/]*)(.*)$", u)
    if m:
        u = f"{m.group(1).lower()}://{m.group(2).lower()}{m.group(3)}"
    u = u.rstrip("/")
    if u.endswith(".git"):
        u = u[: -len(".git")]
    return u.rstrip("/")


@functools.lru_cache(maxsize=4096)
def repository_key(url: str) -> str:
    """A short stable key of a repository (hex, 16 characters), used for workspace and Lease names. Remembered:
    the operator asks it of every build at every dispatch (``Cache.shard_of``)."""
    return hashlib.sha256(normalise_url(url).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=4096)
def tenant_key(namespace: str, credentials_secret: str | None, url: str) -> str:
    """The key of one tenant's use of a repository (hex, 16 characters): the namespace, the credentials Secret
    and the repository. Merge queues, workspaces (with their ssh key files), shards and shard Leases are keyed by
    it, so no tenant's jobs are ever fetched, scanned or pushed with another tenant's credential, even on the same
    repository and target (the pushes of two queues to one target are compare-and-swaps: neither loses work).
    Remembered: asked of every build at every dispatch (``Cache.shard_of``)."""
    text = f"{namespace}\0{credentials_secret or ''}\0{normalise_url(url)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GitCredentials:
    """How the operator authenticates to the git server. All fields optional; none is ever logged."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    """Password or token for http(s), answered through ``GIT_ASKPASS``."""
    extra_header: str | None = field(default=None, repr=False)
    """A whole HTTP header line, e.g. ``Authorization: Bearer <token>``, sent as ``http.extraHeader``."""
    ssh_private_key: str | None = field(default=None, repr=False)
    """An ssh private key (PEM/OpenSSH text)."""
    known_hosts: str | None = None
    """``known_hosts`` content; without it ssh accepts a new host key once (``accept-new``)."""

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str | bytes]) -> GitCredentials:
        """From a Secret's decoded data: ``username``, ``password`` or ``token``, ``extraHeader``,
        ``ssh-privatekey``, ``known_hosts`` (the keys the agent Pods use too)."""

        def get(key: str) -> str | None:
            v = data.get(key)
            if isinstance(v, bytes):
                v = v.decode()
            return v.strip() or None if v else None

        key = data.get("ssh-privatekey")
        return cls(
            username=get("username"),
            password=get("password") or get("token"),
            extra_header=get("extraHeader"),
            ssh_private_key=(key.decode() if isinstance(key, bytes) else key) or None,
            known_hosts=get("known_hosts"),
        )

    @property
    def secrets(self) -> list[str]:
        out = [s for s in (self.password, self.ssh_private_key) if s]
        if self.extra_header:
            out.append(self.extra_header)
            _, _, value = self.extra_header.partition(":")
            value = value.strip()
            if value:
                out.append(value)
                out.extend(p for p in value.split() if len(p) >= 8)
        return out

    def environment(self, private_dir: Path) -> dict[str, str]:
        """Environment of git processes; writes the askpass script and the ssh key into ``private_dir``."""
        env = {"GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"}
        private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.password:
            askpass = private_dir / "askpass.sh"
            if not askpass.exists() or askpass.read_text() != ASKPASS_SCRIPT:
                askpass.write_text(ASKPASS_SCRIPT)
                askpass.chmod(stat.S_IRWXU)
            env.update(GIT_ASKPASS=str(askpass),
                       LONGSHOT_GIT_ASKPASS_USERNAME=self.username or DEFAULT_USERNAME,
                       LONGSHOT_GIT_ASKPASS_PASSWORD=self.password)
        if self.extra_header:
            env.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                       GIT_CONFIG_VALUE_0=self.extra_header)
        if self.ssh_private_key:
            key = private_dir / "ssh-privatekey"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.ssh_private_key.rstrip("\n") + "\n")
            known = private_dir / "known_hosts"
            if self.known_hosts:
                known.write_text(self.known_hosts.rstrip("\n") + "\n")
                check = "yes"
            else:
                check = "accept-new"
            env["GIT_SSH_COMMAND"] = (f"ssh -i {shlex.quote(str(key))} -o IdentitiesOnly=yes -o BatchMode=yes "
                                      f"-o UserKnownHostsFile={shlex.quote(str(known))} "
                                      f"-o StrictHostKeyChecking={check}")
        return env


def redact(text: str, secrets: Sequence[str]) -> str:
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, "***")
    # userinfo in any URL git prints (we never put one there, but a server redirect could)
    return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


_T = TypeVar("_T")
_DEADLINE = threading.local()
"""This thread's deadline (``at``: a monotonic time) for git commands and workspace locks, set by :func:`within`."""


def within(seconds: float, fn: Callable[..., _T], *args: object) -> _T:
    """``fn(*args)`` in this thread with every git command it runs and every wait for a workspace's lock bounded so
    that all of them end within ``seconds``: past it a command is killed and a wait given up, each a
    :class:`GitError`. For a caller whose own time limit is shorter than a workspace's ``timeout`` (a reconcile that
    must end before its controller's stall limit)."""
    _DEADLINE.at = time.monotonic() + seconds
    try:
        return fn(*args)
    finally:
        _DEADLINE.at = None


def _budget(default: float) -> float:
    """Seconds a git command may take now: ``default``, or less before this thread's :func:`within` deadline."""
    at: float | None = getattr(_DEADLINE, "at", None)
    if at is None:
        return default
    return max(0.001, min(default, at - time.monotonic()))


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class Workspace:
    """A bare clone of one repository in the operator's cache directory.

    ``Workspace(url, cache_dir, credentials=..., committer=(name, email))``; call :meth:`ensure` once (cheap
    when it exists) and use it under :meth:`locked` — :func:`longshot.vcs.merge.merge` does both.
    Safe to share between threads (one lock per directory) and between processes (``flock``).
    """

    def __init__(self, url: str, cache_dir: str | os.PathLike[str], *, credentials: GitCredentials | None = None,
                 committer: tuple[str, str] = ("Longshot", "longshot@localhost"), timeout: float = 300.0,
                 egress: gd.Guard | None = None, key: str | None = None, max_bytes: int = 0) -> None:
        self.url = url
        self.egress = egress
        """With a guard, every command that reaches the remote first resolves and checks its host and then
        connects to the checked addresses only (``longshot.net.guard``); a refusal is a GitError naming
        ``spec.repository.url``."""
        self.key = key or repository_key(url)
        """The directory's name: ``tenant_key(...)`` in the operator (one workspace per tenant and repository)."""
        self.path = Path(cache_dir) / self.key
        self.max_bytes = max_bytes
        """Largest size of the workspace's objects after a fetch (0: no cap); see :meth:`check_size`."""
        self.credentials = credentials or GitCredentials()
        self.committer = committer
        self.timeout = timeout
        self._env: dict[str, str] | None = None
        self._fetches = 0
        self._ensured = False

    def __repr__(self) -> str:
        return f"Workspace({normalise_url(self.url)!r}, path={str(self.path)!r})"

    # --- set-up ------------------------------------------------------------------------------------------

    @property
    def private_dir(self) -> Path:
        return self.path / "longshot-private"

    def ensure(self) -> Workspace:
        """Create the bare repository and its ``origin`` remote if missing; point ``origin`` at the URL."""
        if self._ensured and (self.path / "HEAD").exists():
            return self
        if not (self.path / "HEAD").exists():
            self.path.mkdir(parents=True, exist_ok=True)
            repo = gitpython.Repo.init(self.path, bare=True)
            with repo.config_writer() as cw:
                cw.set_value("core", "logAllRefUpdates", "false")
                cw.set_value("fetch", "writeCommitGraph", "false")
            repo.create_remote("origin", self.url)
            repo.close()
        else:
            repo = gitpython.Repo(self.path)
            try:
                if repo.remotes.origin.url != self.url:
                    with repo.remotes.origin.config_writer as cw:
                        cw.set("url", self.url)
            finally:
                repo.close()
        self._ensured = True
        return self

    @contextlib.contextmanager
    def repo(self) -> Iterator[gitpython.Repo]:
        """The workspace as a GitPython ``Repo``, for reading objects and history (never for the remote: GitPython
        would connect without the egress policy's pinned addresses); its ``git cat-file`` processes end on exit."""
        repo = gitpython.Repo(self.path)
        try:
            yield repo
        finally:
            repo.close()

    @property
    def env(self) -> dict[str, str]:
        if self._env is None:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LONGSHOT_GIT_"))}
            env.update(self.credentials.environment(self.private_dir))
            env.update(GIT_COMMITTER_NAME=self.committer[0], GIT_COMMITTER_EMAIL=self.committer[1],
                       GIT_AUTHOR_NAME=self.committer[0], GIT_AUTHOR_EMAIL=self.committer[1],
                       LC_ALL="C")
            self._env = env
        return self._env

    @contextlib.contextmanager
    def locked(self) -> Iterator[Workspace]:
        """Exclusive use of the workspace (threads of this process and other processes)."""
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(self.path, threading.Lock())
        if not lock.acquire(timeout=_budget(threading.TIMEOUT_MAX)):
            raise GitError(f"the workspace of {normalise_url(self.url)} stayed busy past this call's deadline")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield self
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        finally:
            lock.release()

    # --- running git ---------------------------------------------------------------------------------------

    def git(self, *args: str, input: bytes | str | None = None, check: bool = True, ok: Sequence[int] = (0,),
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        """``git <args>`` in the workspace; a return code outside ``ok`` raises :class:`GitError` if ``check``."""
        data = input.encode() if isinstance(input, str) else input
        full_env = self.env if not env else {**self.env, **env}
        shown = args  # messages name the command without the pinned addresses
        bounded = bool(self.max_bytes and args and args[0] == "fetch")
        if self.egress is not None and _subcommand(args) in REMOTE_COMMANDS:
            try:
                pins = self.egress.git_pins(self.url, "spec.repository.url")
            except gd.Refused as e:
                raise GitError(str(e)) from None
            args = (*pins.args(), *args)
            full_env = pins.env(full_env)
        if bounded:  # the fetch stores at most what is left under the cap, whatever the server sends
            full_env = {**full_env, **packlimit.environment(max(1, self.max_bytes - self.size()))}
        timeout = _budget(self.timeout)
        try:
            proc = subprocess.run(["git", *GIT_OPTIONS, "--git-dir", str(self.path), *args], input=data,
                                  capture_output=True, env=full_env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise GitError(f"git {self._show(shown)} timed out after {timeout:.0f}s") from None
        if bounded and proc.returncode != 0 and packlimit.is_over_limit(proc.stderr.decode(errors="replace")):
            self._over_cap(self.max_bytes + 1, "a fetch was stopped at")
        if check and proc.returncode not in ok:
            stderr = redact(proc.stderr.decode(errors="replace").strip(), self.credentials.secrets)
            raise GitError(f"git {self._show(shown)} failed with exit code {proc.returncode}: {stderr[-2000:]}",
                           returncode=proc.returncode, stderr=stderr)
        if bounded:
            self.check_size()
        return proc

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """A long-lived local ``git <args>`` in the workspace (``cat-file --batch``), standard input and output piped;
        the caller ends it. Never a command that reaches the remote (it would bypass the egress pins)."""
        if _subcommand(args) in REMOTE_COMMANDS:
            raise ValueError(f"git {_subcommand(args)} reaches the remote: use Workspace.git")
        return subprocess.Popen(["git", *GIT_OPTIONS, "--git-dir", str(self.path), *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env)

    def size(self) -> int:
        """Bytes of the workspace's objects (``git count-objects -v``: loose, packed and garbage)."""
        out = subprocess.run(["git", *GIT_OPTIONS, "--git-dir", str(self.path), "count-objects", "-v"],
                             capture_output=True, env=self.env, timeout=_budget(self.timeout), check=False)
        kib = 0
        for line in out.stdout.decode(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key in ("size", "size-pack", "size-garbage") and value.strip().isdigit():
                kib += int(value)
        return kib * 1024

    def check_size(self) -> None:
        """Raise :class:`GitError` naming the cap when the workspace holds more than :attr:`max_bytes` after a
        fetch; the workspace is removed first (a cache: the next job fetches it again), so one oversized branch
        leaves neither a full disk nor a wedged queue behind."""
        size = self.size()
        if size > self.max_bytes:
            self._over_cap(size, f"it held {size / 2**20:.1f} MiB after a fetch,")

    def _over_cap(self, size: int, what: str) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._ensured = False
        self._env = None  # its askpass script and key files went with it
        raise GitError(f"the workspace of {normalise_url(self.url)} is over its cap: {what} more than "
                       f"{self.max_bytes / 2**20:.1f} MiB (operator setting LONGSHOT_WORKSPACE_MAX_BYTES, chart value "
                       "operator.workspaceMaxBytes); the branch is refused and the workspace removed")

    def out(self, *args: str, input: bytes | str | None = None) -> str:
        """Standard output of ``git <args>``, stripped."""
        return self.git(*args, input=input).stdout.decode(errors="replace").strip()

    def _show(self, args: Sequence[str]) -> str:
        return redact(" ".join(args), self.credentials.secrets)

    # --- operations ----------------------------------------------------------------------------------------

    def fetch(self, target: str, branch: str | None = None, commit: str | None = None) -> None:
        """Fetch ``target`` into ``refs/remotes/origin/<target>`` and ``branch`` into ``refs/longshot/incoming``.

        When ``commit`` is given and is not among the fetched objects (the branch moved on), it is fetched by
        id as well (servers allow this for reachable commits with protocol v2).
        """
        specs = [f"+refs/heads/{target}:refs/remotes/origin/{target}"]
        if branch:
            specs.append(f"+refs/heads/{branch}:{INCOMING_REF}")
        # --refmap= : no opportunistic refs/remotes/origin/<branch> for every task branch fetched
        self.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--refmap=",
                 "origin", *specs)
        if commit and not self.has_commit(commit):
            self.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin", commit)
        self._fetches += 1
        if self._fetches % GC_EVERY == 0:
            self.gc()

    def has_commit(self, rev: str) -> bool:
        return self.git("cat-file", "-e", f"{rev}^{{commit}}", check=False).returncode == 0

    def resolve(self, *revs: str) -> list[str | None]:
        """Object ids of ``revs`` (``main^{commit}``, ``main^{tree}``...) in one git call; None when missing."""
        out = self.git("cat-file", "--batch-check=%(objectname) %(objecttype)",
                       input="".join(f"{r}\n" for r in revs)).stdout.decode().splitlines()
        result: list[str | None] = []
        for line in out:
            parts = line.split()
            result.append(parts[0] if len(parts) == 2 and parts[1] != "missing" else None)
        return result

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        rc = self.git("merge-base", "--is-ancestor", ancestor, descendant, ok=(0, 1)).returncode
        return rc == 0

    def gc(self) -> None:
        """``git gc --auto``: packs objects and drops those of abandoned branches once they are old enough."""
        self.git("-c", "gc.auto=6700", "gc", "--auto", "--quiet", check=False)


def _subcommand(args: Sequence[str]) -> str:
    """The git command of ``args`` (after global options such as ``-c key=value``)."""
    i = 0
    while i < len(args):
        if args[i] in ("-c", "-C", "--git-dir", "--work-tree"):
            i += 2
        elif args[i].startswith("-"):
            i += 1
        else:
            return args[i]
    return ""
