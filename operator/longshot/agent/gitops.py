"""Git inside the agent Pod: clone, branch, commit and push, with a git the checkout cannot take over.

Two ways to reach the repository:

* **Through the gateway** (in a Pod): the runner clones and pushes ``$LONGSHOT_GATEWAY_URL/git/<ns>/<build>.git``
  and sends the Pod's token as ``http.extraHeader`` through ``GIT_CONFIG_*`` environment variables of each
  git process (re-read per call: the kubelet rotates it). The gateway holds the real credential and lets
  the attempt update only its own branch and handoff ref.
* **Directly** (outside a cluster): credentials come from a credentials directory; http(s) passwords and
  tokens reach git through a ``GIT_ASKPASS`` helper that reads them from the git process's environment, an
  ssh key is copied to a private file and used through ``GIT_SSH_COMMAND``.

Either way no credential appears in a URL, an argument or a log line, and **the runner's own git ignores
the checkout's configuration**, which the model can write with ``run_command``:

* no system or global config (``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL=/dev/null``); trusted settings
  on the command line (``-c``), which wins over any file: hooks off (``core.hooksPath=/dev/null``), no
  fsmonitor, no credential helpers, no signing, only the repository URL's protocol allowed;
* the repository's own ``.git/config`` is snapshotted right after the clone (before the model runs) and
  put back before every git command, and ``.git/commondir`` and ``.git/config.worktree`` are removed, so
  ``remote.*.pushurl``, ``url.*.insteadOf``, ``filter.*``, ``diff.*.textconv``, ``include.path``,
  ``http.proxy`` and friends written by the model never reach the runner's git;
* git runs with an explicit ``--git-dir`` and ``--work-tree`` (no discovery) and refuses to run when
  ``.git`` is no longer the directory the clone made; fetches and pushes name the URL, never ``origin``;
* aliases are never invoked (built-in commands win over aliases); diffs run with ``--no-ext-diff
  --no-textconv``; replace refs are ignored (``GIT_NO_REPLACE_OBJECTS``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from longshot.agent import errors, redact
from longshot.api import handoff

GIT_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "core.sshCommand=ssh",
    "-c", "credential.helper=",
    "-c", "commit.gpgsign=false",
    "-c", "tag.gpgsign=false",
    "-c", "core.quotePath=false",
    "-c", "core.pager=cat",
    "-c", "core.editor=:",
    "-c", "advice.detachedHead=false",
    "-c", "init.defaultBranch=main",
    "-c", "protocol.version=2",
    "-c", "protocol.allow=never",
)
SAFE_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",
    "GCM_INTERACTIVE": "never",
    "GIT_NO_REPLACE_OBJECTS": "1",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_EDITOR": ":",
    "GIT_PAGER": "cat",
    "GIT_ASKPASS": "/bin/false",
    "SSH_ASKPASS": "/bin/false",
}
"""Environment of every runner git: no machine-wide config, no prompts, nothing interactive."""
_KEPT_GIT_ENV = re.compile(r"^GIT_(AUTHOR|COMMITTER)_(NAME|EMAIL|DATE)$")
_URLISH = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[^/\s@]+@[^/\s:]+:)", re.IGNORECASE)
UNTRUSTED_GIT_FILES = ("commondir", "config.worktree")
"""Files in ``.git`` that would make git read configuration from elsewhere; removed before each command."""
DEFAULT_USERNAME = "x-access-token"
ASKPASS_SCRIPT = """#!/bin/sh
# Longshot's git credential prompt: answers from this process's environment, holds no secret itself.
case "$1" in
  Username*|username*) printf '%s\\n' "$LONGSHOT_GIT_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$LONGSHOT_GIT_ASKPASS_PASSWORD" ;;
esac
"""
# git's words for "no connection could be made" (curl's, and the gateway answering while it starts)
_UNREACHABLE = re.compile(
    r"Failed to connect|Connection refused|Could not resolve host|Couldn't connect|Connection timed out|"
    r"Network is unreachable|No route to host|Temporary failure in name resolution|"
    r"The requested URL returned error: (429|50[234])", re.IGNORECASE)
CLONE_ATTEMPTS = 30
CLONE_BACKOFF_SECONDS = 0.25
CLONE_FAST_RETRIES = 20
"""A connection that cannot be made yet is tried again every ``CLONE_BACKOFF_SECONDS`` for the first
``CLONE_FAST_RETRIES`` retries (5 s: a Pod's network on a CNI that isolates first is usually ready within a few
seconds, and a lone Pod waited up to 2 s longer than needed with a doubling backoff from the start), then with a
doubling wait up to 8 s: about 52 s in all before the attempt fails."""


def reconnect_delay(retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (from 1) of a connection that could not be made."""
    if retry <= CLONE_FAST_RETRIES:
        return CLONE_BACKOFF_SECONDS
    return min(CLONE_BACKOFF_SECONDS * float(2 ** (retry - CLONE_FAST_RETRIES)), 8.0)
_OUT_OF_SCOPE = re.compile(r"(?<![0-9])[0-9]{1,9} changed file\(s\) outside the task's scope[^\n]*")
"""The gateway's refusal of a push that changed files outside an enforced scope (``gateway.hook``)."""
_AUTH_FAILURES = re.compile(
    r"Authentication failed|could not read (Username|Password)|terminal prompts disabled|"
    r"returned error: (401|403)|HTTP (Basic: )?Access denied|Permission denied \(publickey|"
    r"Invalid username or password",
    re.IGNORECASE,
)


@dataclass
class Credentials:
    """Environment for git processes, and the secrets to redact."""

    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    kind: str = "none"


@dataclass
class Access:
    """How the runner reaches the repository: its URL, credentials, and fresh per-command variables."""

    url: str
    credentials: Credentials = field(default_factory=Credentials)
    auth_env: Callable[[], Mapping[str, str]] | None = None

    def git(self, cwd: Path, *, redactor: redact.Redactor, timeout: float,
            base_env: Mapping[str, str] | None = None) -> Git:
        return Git(cwd, credentials=self.credentials, redactor=redactor, timeout=timeout, base_env=base_env,
                   url=self.url, auth_env=self.auth_env)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def load_credentials(secret_dir: Path, scratch: Path) -> Credentials:
    """Credentials from the mounted git Secret (``username`` + ``password`` or ``token``; ``ssh-privatekey``)."""
    creds = Credentials(env={"GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"})
    scratch.mkdir(parents=True, exist_ok=True)
    key = secret_dir / "ssh-privatekey"
    if key.is_file():
        private = scratch / "ssh-privatekey"
        private.write_bytes(key.read_bytes())
        private.chmod(stat.S_IRUSR | stat.S_IWUSR)
        known = secret_dir / "known_hosts"
        if known.is_file():
            hosts = f"-o UserKnownHostsFile={shlex.quote(str(known))} -o StrictHostKeyChecking=yes"
        else:
            hosts = (f"-o UserKnownHostsFile={shlex.quote(str(scratch / 'known_hosts'))} "
                     "-o StrictHostKeyChecking=accept-new")
        creds.env["GIT_SSH_COMMAND"] = (f"ssh -i {shlex.quote(str(private))} -o IdentitiesOnly=yes "
                                        f"-o BatchMode=yes {hosts}")
        creds.kind = "ssh"
    password = _read(secret_dir / "password") or _read(secret_dir / "token")
    if password:
        askpass = scratch / "askpass.sh"
        askpass.write_text(ASKPASS_SCRIPT)
        askpass.chmod(stat.S_IRWXU)
        creds.env.update({
            "GIT_ASKPASS": str(askpass),
            "LONGSHOT_GIT_ASKPASS_USERNAME": _read(secret_dir / "username") or DEFAULT_USERNAME,
            "LONGSHOT_GIT_ASKPASS_PASSWORD": password,
        })
        creds.secrets.append(password)
        creds.kind = "http" if creds.kind == "none" else "http+ssh"
    return creds


def url_protocol(url: str) -> str:
    """The transport ``url`` uses, as ``protocol.<name>.allow`` knows it."""
    if "://" in url:
        return url.split("://", 1)[0].lower()
    return "file" if url.startswith(("/", ".")) else "ssh"


def git_environment(base: Mapping[str, str], credentials: Credentials) -> dict[str, str]:
    """``base`` without any ``GIT_*`` variable (but the author and committer identity), plus the runner's
    safe settings and the credentials' variables."""
    env = {k: v for k, v in base.items() if not k.startswith("GIT_") or _KEPT_GIT_ENV.match(k)}
    env.pop("SSH_ASKPASS", None)
    env.update(SAFE_ENV)
    env.update(credentials.env)
    return env


class Git:
    """Runs the runner's git commands in one checkout (or bare repository) with a trusted configuration and
    the credentials' environment; errors are classified.

    ``url`` is the repository's address: fetches and pushes go there explicitly. ``auth_env`` is called
    before every command for variables that must be fresh (the gateway token)."""

    def __init__(self, cwd: Path, *, credentials: Credentials, redactor: redact.Redactor,
                 timeout: float = 600.0, base_env: Mapping[str, str] | None = None, url: str | None = None,
                 auth_env: Callable[[], Mapping[str, str]] | None = None) -> None:
        self.cwd = cwd
        self.redactor = redactor
        self.timeout = timeout
        self.url = url
        self.auth_env = auth_env
        self.env = git_environment(base_env if base_env is not None else os.environ, credentials)
        self._trusted: tuple[Path, tuple[int, int], bytes] | None = None

    # --- the repository's own configuration is not trusted ---------------------------------------------

    def trust(self) -> None:
        """Snapshot the repository's git directory and config as they are now (right after the clone or
        init, before the model runs); every later command restores them first."""
        git_dir = self.cwd / ".git" if (self.cwd / ".git").exists() else self.cwd
        st = os.lstat(git_dir)
        if not stat.S_ISDIR(st.st_mode):
            raise errors.InfrastructureError(f"{git_dir} is not a git directory")
        self._trusted = (git_dir, (st.st_dev, st.st_ino), (git_dir / "config").read_bytes())

    def _guard(self) -> list[str]:
        """Put the trusted config back; the explicit ``--git-dir``/``--work-tree`` options."""
        if self._trusted is None:
            return []
        git_dir, identity, config = self._trusted
        try:
            st = os.lstat(git_dir)
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) != identity:
            raise errors.AgentError(f"{git_dir} was replaced or removed during the attempt; the runner does not "
                                    "run git in a repository it did not make")
        for name in UNTRUSTED_GIT_FILES:
            path = git_dir / name
            if path.exists() or path.is_symlink():
                if path.is_dir() and not path.is_symlink():
                    raise errors.AgentError(f"{path} was made a directory during the attempt")
                path.unlink()
        path = git_dir / "config"
        if path.is_symlink() or not path.is_file() or path.read_bytes() != config:
            path.unlink(missing_ok=True)
            path.write_bytes(config)
        if git_dir == self.cwd:
            return [f"--git-dir={git_dir}"]
        return [f"--git-dir={git_dir}", f"--work-tree={self.cwd}"]

    def _protocols(self, args: tuple[str, ...]) -> list[str]:
        """``protocol.<p>.allow=always`` for exactly the transports of the URLs this command names."""
        found = sorted({url_protocol(a) for a in (self.url, *args) if a and _URLISH.match(a)})
        return [x for p in found for x in ("-c", f"protocol.{p}.allow=always")]

    def run(self, *args: str, input: str | bytes | None = None, check: bool = True,
            env: Mapping[str, str] | None = None, what: str | None = None) -> subprocess.CompletedProcess[str]:
        """``git <args>``; a failure raises Auth or Infrastructure errors naming ``what`` failed."""
        data = input.encode() if isinstance(input, str) else input
        where = self._guard()
        fresh = dict(self.auth_env()) if self.auth_env is not None else {}
        argv = ["git", *GIT_OPTIONS, *self._protocols(args), *where, *args]
        try:
            proc = subprocess.run(
                argv, cwd=self.cwd, input=data, capture_output=True,
                env={**self.env, **fresh, **(env or {})}, timeout=self.timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise errors.InfrastructureError(
                f"{what or 'git ' + args[0]} did not finish within {self.timeout:g}s") from None
        result = subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        if check and result.returncode != 0:
            raise self.error(what or f"git {args[0]}", result.stderr or result.stdout)
        return result

    def error(self, what: str, output: str) -> errors.AgentFailure:
        text = self.redactor.text(output.strip())
        lines = [line for line in text.splitlines() if line.strip()]
        detail = "; ".join(lines[-6:])[:1500] or "no output"
        scope = _OUT_OF_SCOPE.search(text)
        if scope:
            # the agent's own change broke its build's rule: its retry is told which files (not a backoff of
            # the infrastructure kind)
            return errors.AgentError(f"{what} was refused: {scope.group(0)[:1500]}")
        if _AUTH_FAILURES.search(text):
            return errors.AuthError(f"{what} failed: the git server refused the credentials ({detail}); "
                                    "check the repository credentials Secret")
        return errors.InfrastructureError(f"{what} failed: {detail}")

    # --- operations ----------------------------------------------------------------------------------

    def clone(self, url: str, dest: Path, *, sleep: Callable[[float], None] | None = None,
              attempts: int = CLONE_ATTEMPTS) -> None:
        """Clone ``url`` into ``dest``. A connection that cannot be made yet (a Pod's network is programmed
        moments after it starts on CNIs that isolate first, as Calico and Cilium do; DNS or the gateway
        restarting) is tried again with backoff, ``attempts`` times in all; other failures raise at once."""
        _reconnecting(lambda: self.run("clone", "--quiet", "--no-tags", "--", url, str(dest),
                                       what="clone of the repository"),
                      sleep, attempts, before_retry=lambda: shutil.rmtree(dest, ignore_errors=True))

    def rev(self, ref: str) -> str | None:
        result = self.run("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return (result.stdout.strip() or None) if result.returncode == 0 else None

    def remote_branch(self, branch: str) -> str | None:
        return self.rev(f"refs/remotes/origin/{branch}")

    def checkout(self, branch: str, start: str) -> None:
        self.run("checkout", "--quiet", "--no-track", "-B", branch, start, what=f"checkout of {branch}")

    def dirty(self) -> bool:
        return bool(self.run("status", "--porcelain", "--untracked-files=all").stdout.strip())

    def commit_all(self, message: str, *, name: str, email: str, allow_empty: bool = False) -> str:
        self.run("add", "--all", what="git add")
        args = ["commit", "--quiet", "--no-verify", "-F", "-"]
        if allow_empty:
            args.append("--allow-empty")
        self.run(*args, input=message, env=author_env(name, email), what="commit")
        return self.head()

    def head(self) -> str:
        return self.run("rev-parse", "HEAD").stdout.strip()

    def diff(self, *revs: str) -> str:
        """``git diff <revs>`` (``a b`` or ``a...b``)."""
        return self.run("diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames", *revs, "--").stdout

    def changed_files(self, *revs: str) -> list[str]:
        out = self.run("diff", "--name-only", "--no-ext-diff", "--no-textconv", "--no-renames", *revs, "--").stdout
        return [line for line in out.splitlines() if line]

    def push(self, refspec: str, *, remote: str | None = None, force: bool = False, what: str = "push",
             sleep: Callable[[float], None] | None = None, attempts: int = CLONE_ATTEMPTS) -> None:
        """Push ``refspec`` to ``remote``, else to the repository's URL (never a remote from its config). A
        connection that cannot be made (a name that does not resolve for a moment, the gateway restarting) is
        tried again like a clone's: pushing the same commit again is harmless (git answers up to date)."""
        target = remote or self.url
        if not target:
            raise errors.InfrastructureError(f"{what}: no repository URL to push to")
        args = ["push", "--porcelain", "--no-verify"]
        if force:
            args.append("--force")
        _reconnecting(lambda: self.run(*args, "--", target, refspec, what=what), sleep, attempts)


def _reconnecting(op: Callable[[], object], sleep: Callable[[float], None] | None, attempts: int, *,
                  before_retry: Callable[[], object] = lambda: None) -> None:
    """Run ``op``; while it fails because no connection could be made (``_UNREACHABLE``) and ``sleep`` is
    given, run it again after :func:`reconnect_delay`, ``attempts`` times in all; ``before_retry`` clears what a
    failed try left (a clone's directory)."""
    for attempt in range(1, attempts + 1):
        try:
            op()
            return
        except errors.InfrastructureError as e:
            if attempt == attempts or sleep is None or not _UNREACHABLE.search(str(e)):
                raise
            before_retry()
            sleep(reconnect_delay(attempt))


def author_env(name: str, email: str) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def push_handoff(git: Git, url: str, ref: str, data: bytes, *, name: str, email: str, message: str,
                 sleep: Callable[[float], None] | None = None) -> str:
    """Store ``data`` as ``handoff.json`` in a one-file commit and force-push it to ``ref``; its sha.

    The commit is made in a fresh bare repository under ``git.cwd`` (created now, so nothing the model left
    in the workspace can configure it)."""
    if not ref.startswith(handoff.HANDOFF_REF_PREFIX + "/"):
        raise ValueError(f"not a handoff ref: {ref}")
    git.cwd.mkdir(parents=True, exist_ok=True)
    repo = Path(tempfile.mkdtemp(prefix="handoff-", dir=git.cwd))
    bare = Git(repo, credentials=Credentials(), redactor=git.redactor, timeout=git.timeout, base_env={},
               url=url, auth_env=git.auth_env)
    bare.env = dict(git.env)
    bare.run("init", "--quiet", "--bare", ".", what="init of the handoff repository")
    bare.trust()
    blob = bare.run("hash-object", "-w", "--stdin", input=data).stdout.strip()
    tree = bare.run("mktree", input=f"100644 blob {blob}\t{handoff.HANDOFF_FILE}\n").stdout.strip()
    commit = bare.run("commit-tree", tree, "-m", message, env=author_env(name, email)).stdout.strip()
    bare.push(f"+{commit}:{ref}", what=f"push of the handoff to {ref}", sleep=sleep)
    return commit


def sanitize_url(url: str) -> str:
    """The URL as it may be logged (user info removed)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url, flags=re.IGNORECASE)
