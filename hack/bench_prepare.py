#!/usr/bin/env python3
"""Benchmark: the merge queue's speculative batch preparation (``vcs.speculate.prepare``) on a long target history.

    python hack/bench_prepare.py [--history 3000] [--members 32] [--stacked 2] [--repeat 5] [--fork-spread 200]

What is real: the REAL ``speculate.prepare`` builds the batch (the rebase strategy) in the operator's bare
``Workspace``, fetching from a bare "server" repository over ``file://``, with the real git binary. What stands in:
the repository, written with ``git fast-import``: a base commit and ``--history`` first-parent queue commits on
``main``, each adding its own file and carrying the queue's trailers (``Longshot-Merge`` and ``Longshot-Merge-Id``,
as ``speculate._trailers`` writes them), then the batch's ``--members`` branches:

* most fork from a random point among the last ``--fork-spread`` target commits and add their own file;
* ``--stacked`` are stacked (``stackedOn``): built on a dependency's commit, which landed on the target later as a
  rebased copy carrying the dependency's own trailers (the dependency is not in the batch);
* one conflicts: it edits ``shared.txt``, which the target changed after the member forked;
* one was merged long ago: a queue commit in the first tenth of the history carries its UID.

Each repetition prepares the same batch on the same target head (its fetch finds nothing new); the first, which
fetches the branches into the fresh workspace, is not timed. Prints the outcomes, the tree of the batch's longest
speculative commit (the same before and after a change that must not change results) and the git commands run per
batch; the last line reads ``prepare_s_per_batch=<median seconds> members=<n> history=<n> git_calls=<per batch>``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from longshot.core import mergequeue as q  # noqa: E402
from longshot.vcs import speculate  # noqa: E402
from longshot.vcs import workspace as vws  # noqa: E402

NAMESPACE = "bench"
BUILD = "bench"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
    "GIT_AUTHOR_NAME": "Agent", "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "Agent", "GIT_COMMITTER_EMAIL": "agent@example.com",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C",
}
T0 = 1_700_000_000


def log(msg: str) -> None:
    print(f"[bench-prepare] {msg}", flush=True)


def git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> str:
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=ENV, input=input,
                          check=True, capture_output=True).stdout.decode().strip()


def member(name: str, commit: str = "", stacked_on: tuple[str, ...] = ()) -> speculate.Member:
    """A MergeJob; its UID is derived from its name (the same repository on every run)."""
    uid = str(uuid.UUID(bytes=hashlib.sha256(name.encode()).digest()[:16], version=4))
    return speculate.Member(name=name, namespace=NAMESPACE, uid=uid, branch=branch_of(name), commit=commit,
                            task=name, build=BUILD, stacked_on=stacked_on)


def branch_of(name: str) -> str:
    return f"longshot/{NAMESPACE}/{BUILD}/{name}"


class FastImport:
    """A ``git fast-import`` stream: commits with marks, inline files."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.marks = 0
        self.clock = T0

    def commit(self, ref: str, message: str, files: Mapping[str, str], parent: int | None) -> int:
        self.marks += 1
        self.clock += 1
        raw = message.encode()
        self.out.append(f"commit {ref}\nmark :{self.marks}\n"
                        f"committer Agent <agent@example.com> {self.clock} +0000\n".encode())
        self.out.append(b"data %d\n%s\n" % (len(raw), raw))
        if parent is not None:
            self.out.append(f"from :{parent}\n".encode())
        for path, text in files.items():
            data = text.encode()
            self.out.append(f"M 644 inline {path}\n".encode() + b"data %d\n%s\n" % (len(data), data))
        return self.marks

    def run(self, bare: Path) -> None:
        git("fast-import", "--quiet", cwd=bare, input=b"".join(self.out))


def queue_message(subject: str, m: speculate.Member) -> str:
    return speculate._trailers(f"{subject}\n\nThe task's work, landed by the merge queue.\n", m)


def seed(bare: Path, history: int, members: int, stacked: int, spread: int, rng: random.Random
         ) -> list[speculate.Member]:
    """The server repository (see the module's docstring); the batch's members, in queue order, without commits
    (filled in from the branches once written)."""
    git("init", "--quiet", "--bare", str(bare))
    fi = FastImport()
    main = fi.commit("refs/heads/main", "Base\n", {"README.md": "bench\n", "shared.txt": "shared v0\n"}, None)
    points = [main]  # the target's first-parent history, oldest first
    old_landed = member("landed-long-ago")
    deps = [member(f"dep{k}") for k in range(stacked)]
    landed_at = max(1, history // 10)
    dep_at = {history - 1 - (k + 1) * max(1, spread // (stacked + 1)): k for k in range(stacked)}
    conflict_fork = max(1, history - spread)
    dep_commits: dict[int, int] = {}
    for i in range(1, history + 1):
        if i == landed_at:
            m, files = old_landed, {"tasks/landed-long-ago.txt": "landed long ago\n"}
        elif i - 1 in dep_at:  # the dependency's branch forks one commit earlier, then lands here rebased
            k = dep_at[i - 1]
            m, files = deps[k], {f"deps/dep{k}.txt": f"dependency {k}\n"}
            dep_commits[k] = fi.commit(f"refs/heads/{branch_of(deps[k].name)}", f"dep{k}: its work\n", files,
                                       points[-1])
        else:
            m = member(f"q{i:05d}")
            files = {f"history/{i // 100:03d}/{i % 100:02d}.txt": f"queue commit {i}\n"}
        if i == conflict_fork + spread // 2:
            files = {**files, "shared.txt": f"shared changed by queue commit {i}\n"}
        points.append(fi.commit("refs/heads/main", queue_message(f"Task {m.name}: its change", m), files, points[-1]))
    batch: list[speculate.Member] = []
    for j in range(members):
        if j == members // 3:
            m = member("conflicting")
            fi.commit(f"refs/heads/{m.branch}", "conflicting: edit shared.txt\n",
                      {"shared.txt": "shared changed by an agent\n"}, points[conflict_fork])
        elif j == members // 2:
            m = old_landed
            fi.commit(f"refs/heads/{m.branch}", "landed-long-ago: its work\n",
                      {"tasks/landed-long-ago.txt": "landed long ago\n"}, points[max(0, landed_at - 3)])
        elif j >= members - stacked:
            k = j - (members - stacked)
            m = member(f"stacked{k}")
            fi.commit(f"refs/heads/{m.branch}", f"stacked{k}: built on dep{k}\n",
                      {f"tasks/stacked{k}.txt": f"needs dependency {k}\n"}, dep_commits[k])
            m = speculate.Member(**{**m.__dict__, "stacked_on": (f"dep{k}",)})
        else:
            m = member(f"m{j:03d}")
            fork = points[-1 - rng.randrange(min(spread, history))]
            fi.commit(f"refs/heads/{m.branch}", f"{m.name}: add tasks/{m.name}.txt\n",
                      {f"tasks/{m.name}.txt": f"result of {m.name}\n"}, fork)
        batch.append(m)
    fi.run(bare)
    heads = dict(line.split(" ", 1)[::-1] for line in git("for-each-ref", "--format=%(objectname) %(refname)",
                                                         "refs/heads/", cwd=bare).splitlines())
    out = []
    for m in batch:
        stacked_on = tuple(heads[f"refs/heads/{branch_of(d)}"] for d in m.stacked_on)
        out.append(speculate.Member(**{**m.__dict__, "commit": heads[f"refs/heads/{m.branch}"],
                                       "stacked_on": stacked_on}))
    return out


class CountingWorkspace(vws.Workspace):
    """The real workspace, counting the git commands it runs."""

    calls: Counter[str]

    def git(self, *args: str, input: bytes | str | None = None, check: bool = True, ok: Sequence[int] = (0,),
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
        self.calls[vws._subcommand(args)] += 1
        return super().git(*args, input=input, check=check, ok=ok, env=env)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        self.calls[vws._subcommand(args)] += 1
        return super().popen(*args)


def outcome(m: q.Applied | q.DidNotApply | q.AlreadyOnTarget) -> str:
    return type(m).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[1])
    parser.add_argument("--history", type=int, default=3000, help="first-parent queue commits on the target")
    parser.add_argument("--members", type=int, default=32, help="members of the batch")
    parser.add_argument("--stacked", type=int, default=2, help="stacked members among them")
    parser.add_argument("--fork-spread", type=int, default=200, help="members fork among the last N target commits")
    parser.add_argument("--repeat", type=int, default=5, help="timed preparations")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.members < args.stacked + 3 or args.history < 20 or args.fork_spread < 4:
        parser.error("need --members >= --stacked + 3, --history >= 20 and --fork-spread >= 4")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        bare = Path(tmp) / "server.git"
        started = time.monotonic()
        members = seed(bare, args.history, args.members, args.stacked, min(args.fork_spread, args.history), rng)
        log(f"repository: {args.history} queue commits on main, {len(members)} member branches "
            f"({args.stacked} stacked, 1 conflicting, 1 merged long ago) in {time.monotonic() - started:.1f}s")
        w = CountingWorkspace(f"file://{bare}", Path(tmp) / "cache", committer=("Longshot", "longshot@example.com"))
        w.calls = Counter()
        started = time.monotonic()
        first = speculate.prepare(w, "main", members)
        log(f"first preparation (fetches the branches into a fresh workspace): {time.monotonic() - started:.2f}s")
        times: list[float] = []
        calls: Counter[str] = Counter()
        for _ in range(args.repeat):
            w.calls = Counter()
            started = time.monotonic()
            prepared = speculate.prepare(w, "main", members)
            times.append(time.monotonic() - started)
            calls = Counter(w.calls)
            assert [outcome(m) for m in prepared.members] == [outcome(m) for m in first.members]
        counts = Counter(outcome(m) for m in prepared.members)
        applied = [m for m in prepared.members if isinstance(m, q.Applied)]
        tree = w.out("rev-parse", f"{applied[-1].commit}^{{tree}}") if applied else "-"
        landed = [m.commit[:12] for m in prepared.members if isinstance(m, q.AlreadyOnTarget)]
        log(f"outcomes: {dict(sorted(counts.items()))}; already on the target as {landed}; "
            f"not applied: {[m.name for m in prepared.members if isinstance(m, q.DidNotApply)]}")
        log(f"longest speculative commit's tree: {tree}")
        log(f"git commands per batch: {sum(calls.values())} ({', '.join(f'{k} {v}' for k, v in calls.most_common())})")
        log("seconds per batch: " + ", ".join(f"{t:.3f}" for t in times)
            + f" (min {min(times):.3f}, median {statistics.median(times):.3f})")
    print(f"prepare_s_per_batch={statistics.median(times):.3f} members={len(members)} history={args.history} "
          f"git_calls={sum(calls.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
