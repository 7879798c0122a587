#!/usr/bin/env python3
"""Benchmark: the merge queue's per-merge cost against the same merges done with plain ``git`` commands.

    python hack/bench_merge.py [--branches 200] [--strategy rebase|merge-commit|fast-forward] [--files 50]

Builds a bare "server" repository with a base commit and N non-conflicting branches (each adds its own
file), copies it, then merges every branch serially into ``main`` twice, interleaved one merge at a time so
both sides see the same machine load:

* **longshot**: ``longshot.vcs.merge.merge`` on a workspace cache (narrow fetch, idempotence check, merge
  with plumbing, compare-and-swap push), as the merge queue leader does;
* **git**: a clone of the copy, and per branch ``git fetch origin main <branch>``, ``git rebase`` (or
  ``git merge --no-ff`` / ``--ff-only``) in the clone's worktree, ``git push origin HEAD:main``.

Prints per-phase totals and, as its last line,
``merge_overhead_vs_git=<longshot time / git time> merges_per_minute=<longshot merges per minute>``.
The target (the benchmark table in README.md; figures of past runs in docs/benchmarks.md) is a ratio of
at most 1.5.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from longshot.vcs import merge, workspace  # noqa: E402

ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
    "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> None:
    subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=ENV, input=input,
                   check=True, capture_output=True)


def seed(bare: Path, branches: int, files: int) -> None:
    """A base commit with ``files`` files and ``branches`` branches each adding task/NNN.txt (fast-import)."""
    git("init", "--quiet", "--bare", str(bare))
    out: list[bytes] = []

    def data(text: str) -> None:
        raw = text.encode()
        out.append(b"data %d\n%s\n" % (len(raw), raw))

    out.append(b"commit refs/heads/main\nmark :1\ncommitter Bench <bench@example.com> 1700000000 +0000\n")
    data("Base")
    for i in range(files):
        out.append(f"M 644 inline src/module{i:03d}.py\n".encode())
        data("".join(f"def f{j}():\n    return {j}\n" for j in range(40)))
    for i in range(branches):
        out.append(f"commit refs/heads/task/{i:03d}\nmark :{i + 2}\n"
                   f"committer Agent <agent@example.com> {1700000100 + i} +0000\n".encode())
        data(f"Task {i}: add task/{i:03d}.txt")
        out.append(b"from :1\n")
        out.append(f"M 644 inline task/{i:03d}.txt\n".encode())
        data(f"result of task {i}\n")
    git("fast-import", "--quiet", cwd=bare, input=b"".join(out))


class PlainGit:
    """The same merges, done the way a person or a simple script would with git commands."""

    def __init__(self, url: str, clone: Path, strategy: str) -> None:
        self.strategy = strategy
        self.clone = clone
        # only main, like the workspace: each branch's objects then come with its own fetch, as in real life
        # where agents push their branches while the queue runs
        git("clone", "--quiet", "--single-branch", "--branch", "main", url, str(clone))
        git("config", "core.hooksPath", "/dev/null", cwd=clone)

    def run(self, *args: str) -> None:
        git(*args, cwd=self.clone)

    def merge(self, branch: str, phases: dict[str, float]) -> None:
        t0 = time.perf_counter()
        self.run("fetch", "--quiet", "origin", "+refs/heads/main:refs/remotes/origin/main",
                 f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
        t1 = time.perf_counter()
        if self.strategy == "rebase":
            self.run("rebase", "--quiet", "origin/main", f"origin/{branch}")
        elif self.strategy == "merge-commit":
            self.run("checkout", "--quiet", "--detach", "origin/main")
            self.run("merge", "--quiet", "--no-ff", "-m", f"Merge {branch}", f"origin/{branch}")
        else:
            self.run("checkout", "--quiet", "--detach", "origin/main")
            self.run("merge", "--quiet", "--ff-only", f"origin/{branch}")
        t2 = time.perf_counter()
        self.run("push", "--quiet", "origin", "HEAD:refs/heads/main")
        t3 = time.perf_counter()
        phases["fetch"] += t1 - t0
        phases["merge"] += t2 - t1
        phases["push"] += t3 - t2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--branches", type=int, default=200)
    parser.add_argument("--files", type=int, default=50, help="files in the base commit")
    parser.add_argument("--strategy", default="rebase", choices=["rebase", "merge-commit", "fast-forward"])
    args = parser.parse_args()
    if args.strategy == "fast-forward":
        parser.error("fast-forward cannot merge N branches forked from one base; use rebase or merge-commit")

    tmp = Path(tempfile.mkdtemp(prefix="bench-merge-"))
    try:
        t = time.perf_counter()
        ours_server, git_server = tmp / "ours.git", tmp / "plain.git"
        seed(ours_server, args.branches, args.files)
        shutil.copytree(ours_server, git_server)
        print(f"setup: repository with {args.files} files and {args.branches} branches "
              f"in {time.perf_counter() - t:.2f}s")

        t = time.perf_counter()
        ws = workspace.Workspace(f"file://{ours_server}", tmp / "cache").ensure()
        ours_setup = time.perf_counter() - t
        t = time.perf_counter()
        plain = PlainGit(f"file://{git_server}", tmp / "clone", args.strategy)
        git_setup = time.perf_counter() - t

        ours_phases: dict[str, float] = defaultdict(float)
        git_phases: dict[str, float] = defaultdict(float)
        ours_total = git_total = 0.0
        outcomes: dict[str, int] = defaultdict(int)
        for i in range(args.branches):
            branch = f"task/{i:03d}"
            t = time.perf_counter()
            result = merge.merge(ws, merge.MergeRequest(namespace="bench", name=f"mj-{i:03d}", branch=branch,
                                                        target="main", strategy=args.strategy,
                                                        task=f"t{i}", build="bench"))
            ours_total += time.perf_counter() - t
            outcomes[result.outcome] += 1
            if result.outcome != "Merged":
                print(f"merge {i}: {result.outcome}: {result.message}", file=sys.stderr)
                return 1
            for phase, seconds in result.timings:
                ours_phases[phase] += seconds

            t = time.perf_counter()
            plain.merge(branch, git_phases)
            git_total += time.perf_counter() - t

        n = args.branches
        print(f"strategy: {args.strategy}; outcomes: {dict(outcomes)}")
        print(f"first-time setup: longshot workspace init {ours_setup * 1000:.0f} ms, "
              f"git clone {git_setup * 1000:.0f} ms (not counted)")
        print(f"{'phase':<10}{'longshot ms/merge':>20}{'git ms/merge':>16}")
        for phase in ("fetch", "check", "merge", "push"):
            ours_ms, git_ms = ours_phases.get(phase, 0) * 1000 / n, git_phases.get(phase, 0) * 1000 / n
            print(f"{phase:<10}{ours_ms:>20.1f}{git_ms:>16.1f}")
        other = ours_total - sum(ours_phases.values())
        print(f"{'other':<10}{other * 1000 / n:>20.1f}{'':>16}")
        print(f"{'total':<10}{ours_total * 1000 / n:>20.1f}{git_total * 1000 / n:>16.1f}")
        ratio = ours_total / git_total
        print(f"merge_overhead_vs_git={ratio:.2f} merges_per_minute={60 * n / ours_total:.0f}")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
