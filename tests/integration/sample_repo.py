"""A real git repository for delivery tests: a bare 'server' repo with a small Python project."""

from __future__ import annotations

import subprocess
from pathlib import Path

TEST_COMMAND = "python3 -m unittest discover -s tests -q"

FILES = {
    "README.md": "# calc\n\nA tiny calculator, built by Longshot.\n",
    "SPEC.md": "Implement add and mul in the calc package, each with tests.\n",
    "calc/__init__.py": "",
    "tests/__init__.py": "",
    "tests/test_base.py": "import unittest\n\n\nclass Base(unittest.TestCase):\n    def test_truth(self):\n"
                          "        self.assertTrue(True)\n",
}


def git(cwd: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(cwd), "PATH": "/usr/bin:/bin"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make(root: Path, files: dict[str, str] | None = None) -> str:
    """Create ``root/server/calc.git`` with one commit on main; return its file:// URL."""
    server = root / "server" / "calc.git"
    server.mkdir(parents=True)
    git(server, "init", "-q", "--bare", "-b", "main")
    work = root / "seed"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    for path, text in {**FILES, **(files or {})}.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "Initial project")
    git(work, "push", "-q", str(server), "main")
    return f"file://{server}"


def log(url: str, ref: str = "main") -> list[str]:
    """Full commit messages on ``ref``, newest first, separated."""
    out = subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "log", "--format=%B%x00", ref],
                         check=True, capture_output=True, text=True).stdout
    return [m.strip() for m in out.split("\x00") if m.strip()]


def show(url: str, path: str, ref: str = "main") -> str | None:
    r = subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "show", f"{ref}:{path}"],
                       capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def run_tests(url: str, root: Path, ref: str = "main") -> int:
    """Clone ``ref`` and run the test command; the exit code."""
    dest = root / f"check-{ref.replace('/', '-')}"
    subprocess.run(["git", "clone", "-q", "-b", ref, url, str(dest)], check=True, capture_output=True)
    return subprocess.run(TEST_COMMAND.split(), cwd=dest, capture_output=True).returncode


def push_branch(url: str, branch: str, files: dict[str, str], root: Path, *, start: str = "main",
                message: str = "change") -> str:
    """Commit ``files`` on ``branch`` (from ``start``) in the repository at ``url`` and push it; the commit."""
    work = root / f"work-{branch.replace('/', '-')}"
    if not work.exists():
        subprocess.run(["git", "clone", "-q", url, str(work)], check=True, capture_output=True)
    git(work, "fetch", "-q", "origin")
    git(work, "checkout", "-q", "-B", branch, f"origin/{start}")
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", message)
    git(work, "push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}")
    return git(work, "rev-parse", "HEAD").strip()


def is_ancestor(url: str, ancestor: str, descendant: str) -> bool:
    return subprocess.run(["git", "--git-dir", url.removeprefix("file://"), "merge-base", "--is-ancestor", ancestor,
                           descendant], capture_output=True).returncode == 0
