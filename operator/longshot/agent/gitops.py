"""Git inside the agent Pod: credentials from the mounted Secret, clone, branch, commit, push.

Credentials never appear in a URL, an argument or a log line: http(s) passwords and tokens reach git
through a ``GIT_ASKPASS`` helper that reads them from the environment of the git process only; an ssh
key is copied to a private file and used through ``GIT_SSH_COMMAND``. Every git call disables hooks
(``core.hooksPath=/dev/null``: the model can write into the checkout, never into what the runner runs)
and credential helpers (nothing is stored).
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from longshot.agent import errors, redact
from longshot.api import handoff

GIT_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "credential.helper=",
    "-c", "commit.gpgsign=false",
    "-c", "tag.gpgsign=false",
    "-c", "core.quotePath=false",
    "-c", "advice.detachedHead=false",
    "-c", "init.defaultBranch=main",
    "-c", "protocol.version=2",
)
DEFAULT_USERNAME = "x-access-token"
ASKPASS_SCRIPT = """#!/bin/sh
# Longshot's git credential prompt: answers from this process's environment, holds no secret itself.
case "$1" in
  Username*|username*) printf '%s\\n' "$LONGSHOT_GIT_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$LONGSHOT_GIT_ASKPASS_PASSWORD" ;;
esac
"""
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


class Git:
    """Runs git commands in one directory with the credentials' environment; errors are classified."""

    def __init__(self, cwd: Path, *, credentials: Credentials, redactor: redact.Redactor,
                 timeout: float = 600.0, base_env: Mapping[str, str] | None = None) -> None:
        self.cwd = cwd
        self.redactor = redactor
        self.timeout = timeout
        env = dict(base_env if base_env is not None else os.environ)
        for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
            env.pop(name, None)
        env.update(credentials.env)
        self.env = env

    def run(self, *args: str, input: str | bytes | None = None, check: bool = True,
            env: Mapping[str, str] | None = None, what: str | None = None) -> subprocess.CompletedProcess[str]:
        """``git <args>``; a failure raises Auth or Infrastructure errors naming ``what`` failed."""
        data = input.encode() if isinstance(input, str) else input
        try:
            proc = subprocess.run(
                ["git", *GIT_OPTIONS, *args], cwd=self.cwd, input=data, capture_output=True,
                env={**self.env, **(env or {})}, timeout=self.timeout, check=False,
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
        if _AUTH_FAILURES.search(text):
            return errors.AuthError(f"{what} failed: the git server refused the credentials ({detail}); "
                                    "check the repository credentials Secret")
        return errors.InfrastructureError(f"{what} failed: {detail}")

    # --- operations ----------------------------------------------------------------------------------

    def clone(self, url: str, dest: Path) -> None:
        self.run("clone", "--quiet", "--no-tags", "--", url, str(dest), what="clone of the repository")

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
        return self.run("diff", "--no-color", "--no-ext-diff", "--no-renames", *revs, "--").stdout

    def changed_files(self, *revs: str) -> list[str]:
        out = self.run("diff", "--name-only", "--no-renames", *revs, "--").stdout
        return [line for line in out.splitlines() if line]

    def push(self, refspec: str, *, remote: str = "origin", force: bool = False, what: str = "push") -> None:
        args = ["push", "--porcelain", "--no-verify"]
        if force:
            args.append("--force")
        self.run(*args, "--", remote, refspec, what=what)


def author_env(name: str, email: str) -> dict[str, str]:
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def push_handoff(git: Git, url: str, ref: str, data: bytes, *, name: str, email: str, message: str) -> str:
    """Store ``data`` as ``handoff.json`` in a one-file commit and force-push it to ``ref``; its sha."""
    if not ref.startswith(handoff.HANDOFF_REF_PREFIX + "/"):
        raise ValueError(f"not a handoff ref: {ref}")
    git.cwd.mkdir(parents=True, exist_ok=True)
    if not (git.cwd / "HEAD").exists():
        git.run("init", "--quiet", "--bare", ".", what="init of the handoff repository")
    blob = git.run("hash-object", "-w", "--stdin", input=data).stdout.strip()
    tree = git.run("mktree", input=f"100644 blob {blob}\t{handoff.HANDOFF_FILE}\n").stdout.strip()
    commit = git.run("commit-tree", tree, "-m", message, env=author_env(name, email)).stdout.strip()
    git.push(f"+{commit}:{ref}", remote=url, what=f"push of the handoff to {ref}")
    return commit


def sanitize_url(url: str) -> str:
    """The URL as it may be logged (user info removed)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", r"\1", url, flags=re.IGNORECASE)
