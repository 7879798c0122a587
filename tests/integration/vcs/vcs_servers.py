"""Real git servers for the merge-queue tests: bare repositories in a temporary directory (``file://``);
``git daemon`` and smart HTTP on loopback come from the shared ``git_servers``. No mock of git anywhere."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from git_servers import Git

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Agent", "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "Agent", "GIT_COMMITTER_EMAIL": "agent@example.com",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


git = Git(GIT_ENV, isolated=True, options=("-c", "init.defaultBranch=main"), strip=True)


@dataclass
class Server:
    """One bare repository (the git server's copy) and a scratch clone to make commits with."""

    bare: Path
    work: Path
    url: str

    def commit(self, branch: str, files: dict[str, str | None], *, start: str = "main",
               message: str = "change", author: str = "Agent <agent@example.com>") -> str:
        """Commit ``files`` (None deletes) on ``branch`` (created from ``start`` if new) and push it."""
        git("fetch", "--quiet", "origin", cwd=self.work)
        exists = bool(git("ls-remote", "--heads", "origin", branch, cwd=self.work))
        git("checkout", "--quiet", "-B", branch, f"origin/{branch if exists else start}", cwd=self.work)
        for rel, content in files.items():
            path = self.work / rel
            if content is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", f"--author={author}", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return self.head(branch)

    def head(self, branch: str = "main") -> str:
        return git("rev-parse", f"refs/heads/{branch}", cwd=self.bare)

    def parents(self, rev: str) -> list[str]:
        return git("rev-list", "--parents", "-n1", rev, cwd=self.bare).split()[1:]

    def message(self, rev: str) -> str:
        return git("log", "-1", "--format=%B", rev, cwd=self.bare)

    def author(self, rev: str) -> str:
        return git("log", "-1", "--format=%an <%ae>", rev, cwd=self.bare)

    def first_parent_log(self, rev: str = "main") -> list[str]:
        return git("rev-list", "--first-parent", rev, cwd=self.bare).split()

    def show(self, rev: str, path: str) -> str:
        return git("show", f"{rev}:{path}", cwd=self.bare)

    def is_ancestor(self, a: str, b: str) -> bool:
        return subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=self.bare, env=git.env,
                              check=False).returncode == 0


def make_server(root: Path, name: str, url: str | None = None) -> Server:
    bare = root / f"{name}.git"
    git("init", "--quiet", "--bare", str(bare))
    work = root / f"{name}.work"
    git("clone", "--quiet", str(bare), str(work))
    server = Server(bare, work, url or f"file://{bare}")
    (work / "README.md").write_text("# app\n")
    (work / "app.py").write_text("def greet():\n    return 'hi'\n")
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "Initial commit", cwd=work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)
    return server
