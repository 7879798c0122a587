"""The merge queue's git work: merge one task branch, at an exact commit, into a target branch, and push.

Entry point: :func:`merge` ``(workspace, request) -> MergeResult``. It never raises for git trouble; the
result's ``outcome`` says what happened:

``Merged``         the target was pushed; ``merged_commit`` is its new head.
``AlreadyMerged``  nothing to do: the job's commit is an ancestor of the target, or a commit on the target
                   carries the job's UID in a ``Longshot-Merge-Id`` trailer (a merge done before a restart or by
                   a deposed leader); ``merged_commit`` is that commit. The UID is random and known only to the
                   operator, so a commit an agent wrote cannot fake a merge; the human-readable
                   ``Longshot-Merge: <namespace>/<name>`` trailer is never trusted.
``Conflicted``     the branch does not apply: ``conflicting_files`` lists repository-relative paths. With
                   ``fast-forward`` a target that is not an ancestor of the commit is ``Conflicted`` with
                   ``reason == "NotFastForward"`` (and the files a 3-way merge would conflict on, maybe none).
``Stale``          the target moved between our fetch and our push (compare-and-swap lost): fetch and try
                   again; nothing was pushed.
``Error``          anything else (no such branch or commit, authentication, server refused); ``message``
                   says what, secrets redacted.

How each strategy builds the new head (all with git plumbing in a bare workspace: no checkout, so a conflict
or a crash never leaves a dirty tree):

* ``fast-forward``: the new head is the commit itself; no new commit, so no trailer (a later run
  recognises it by ancestry).
* ``rebase``: each non-merge commit of ``target..commit`` is cherry-picked onto the target in topological
  order with ``merge-tree --write-tree`` (three-way, base = the commit's parent) and re-committed with
  ``commit-tree``, author and message kept plus the trailer ``Longshot-Merge: <namespace>/<name>``;
  commits that become empty are dropped, like ``git rebase`` does.
* ``merge-commit``: one two-parent commit (target first), message naming the branch, task and build,
  carrying the trailer.

The push is fenced: ``git push --atomic --force-with-lease=refs/heads/<target>:<old> <new>:refs/heads/<target>``
where ``old`` is the head the merge was computed on and ``new`` always descends from it. A leader that lost
its Lease and computed a merge on a stale head therefore cannot push it: the server refuses, we report
``Stale``, and the next attempt finds the merge already there (``AlreadyMerged``) or redoes it on the new head.

Queue order (:func:`order`, :func:`positions`) is a pure helper over MergeJob objects: priority 10 first,
then arrival (``metadata.creationTimestamp``), then name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from longshot.api import timeutil
from longshot.api.buildrequest import MergeStrategy
from longshot.vcs import workspace as ws

TRAILER_KEY = "Longshot-Merge"
"""Trailer on every commit the merge queue writes; its value is ``<namespace>/<mergejob-name>`` (for people)."""
ID_TRAILER = "Longshot-Merge-Id"
"""Trailer with the MergeJob's UID: how the queue recognises its own merges."""

Outcome = Literal["Merged", "AlreadyMerged", "Conflicted", "Stale", "Error"]

SINCE_MARGIN = timedelta(days=1)
"""How far before ``MergeRequest.not_before`` the trailer search still looks (clock skew, slow starts)."""


# --- trailers ----------------------------------------------------------------------------------------------

_TRAILER_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)\s*:\s?(.*)$")


def parse_trailers(message: str) -> list[tuple[str, str]]:
    """The ``(key, value)`` trailers of a commit message: its last paragraph, if every line of it is a
    ``Key: value`` line (continuation lines starting with whitespace are folded into the previous value)."""
    paragraphs = re.split(r"\n[ \t]*\n", message.strip("\n"))
    if len(paragraphs) < 2:
        return []
    trailers: list[tuple[str, str]] = []
    for line in paragraphs[-1].splitlines():
        if line[:1] in (" ", "\t") and trailers:
            key, value = trailers[-1]
            trailers[-1] = (key, f"{value} {line.strip()}")
            continue
        m = _TRAILER_LINE.match(line)
        if not m:
            return []
        trailers.append((m.group(1), m.group(2).strip()))
    return trailers


def trailer_values(message: str, key: str = TRAILER_KEY) -> list[str]:
    """Values of trailer ``key`` (case-insensitive key, like git) in ``message``."""
    return [v for k, v in parse_trailers(message) if k.lower() == key.lower()]


def add_trailer(message: str, key: str, value: str) -> str:
    """``message`` with the trailer ``key: value`` appended (to an existing trailer block, else in a new
    paragraph); unchanged if it already carries exactly that trailer. Ends with one newline."""
    body = message.rstrip()
    if value in trailer_values(body, key):
        return body + "\n"
    separator = "\n" if parse_trailers(body) else "\n\n"
    if not body:
        separator = ""
    return f"{body}{separator}{key}: {value}\n"


def merge_id(namespace: str, name: str) -> str:
    """The ``Longshot-Merge`` trailer value of a MergeJob."""
    return f"{namespace}/{name}"


# --- inputs and outputs ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MergeRequest:
    """One MergeJob, as the merge needs it. Build it with :meth:`from_mergejob` from the object."""

    namespace: str
    name: str
    """The MergeJob's name: with the namespace, the trailer that makes the merge recognisable."""
    branch: str
    target: str
    strategy: MergeStrategy = "rebase"
    commit: str | None = None
    """The exact commit to merge; None means the branch head at fetch time."""
    task: str = ""
    build: str = ""
    not_before: datetime | None = None
    """The MergeJob's creation time: the trailer search skips commits much older than this (speed)."""
    uid: str = ""
    """The MergeJob's UID, written in the ``Longshot-Merge-Id`` trailer; without it only ancestry recognises an
    earlier merge."""

    @property
    def merge_id(self) -> str:
        return merge_id(self.namespace, self.name)

    @classmethod
    def from_mergejob(cls, body: Mapping[str, Any]) -> MergeRequest:
        """From a MergeJob object (a kopf body or a dict from the API): metadata and camelCase spec."""
        meta = body["metadata"]
        spec = body["spec"]
        created = meta.get("creationTimestamp")
        return cls(
            namespace=meta["namespace"], name=meta["name"], branch=spec["branch"], target=spec["target"],
            strategy=spec.get("strategy") or "rebase", commit=spec.get("commit") or None,
            task=(spec.get("taskRef") or {}).get("name", ""), build=(spec.get("buildRef") or {}).get("name", ""),
            not_before=timeutil.parse(created), uid=meta.get("uid") or "",
        )


@dataclass(frozen=True)
class MergeResult:
    """What :func:`merge` did. ``reason`` is a condition reason (``MergeSucceeded``, ``MergeConflict``...)."""

    outcome: Outcome
    merged_commit: str | None = None
    conflicting_files: tuple[str, ...] = ()
    message: str = ""
    duration_seconds: float = 0.0
    reason: str = ""
    """``MergeSucceeded``, ``AlreadyMerged``, ``MergeConflict``, ``NotFastForward``, ``StaleTarget``, ``Error``."""
    old_target: str | None = None
    """The target head the merge was computed on."""
    timings: tuple[tuple[str, float], ...] = field(default=(), compare=False)
    """Seconds per phase (``fetch``, ``check``, ``merge``, ``push``), for metrics and benchmarks."""


class _Timer:
    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = self.start
        self.phases: list[tuple[str, float]] = []

    def lap(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self.last))
        self.last = now

    def result(self, outcome: Outcome, reason: str, message: str, **kw: Any) -> MergeResult:
        return MergeResult(outcome=outcome, reason=reason, message=message,
                           duration_seconds=time.monotonic() - self.start, timings=tuple(self.phases), **kw)


# --- the merge -------------------------------------------------------------------------------------------------

def merge(workspace: ws.Workspace, request: MergeRequest, *, fetch: bool = True) -> MergeResult:
    """Fetch, recognise an earlier merge, merge with ``request.strategy``, push with compare-and-swap.

    Blocking (runs git); call it with ``asyncio.to_thread`` from async code. Holds the workspace lock for
    its whole duration, so merges of one repository are serial even across threads. ``fetch=False`` uses
    what the caller fetched with ``workspace.fetch(target, branch, commit)`` (for batching); the push is
    fenced on the head seen then.
    """
    timer = _Timer()
    try:
        with workspace.locked():
            workspace.ensure()
            return _merge(workspace, request, timer, fetch)
    except ws.GitError as e:
        return timer.result("Error", "Error", str(e))
    except OSError as e:  # the cache directory, the git binary
        return timer.result("Error", "Error", ws.redact(f"{type(e).__name__}: {e}", workspace.credentials.secrets))


def _merge(w: ws.Workspace, req: MergeRequest, timer: _Timer, fetch: bool) -> MergeResult:
    if req.strategy not in ("fast-forward", "rebase", "merge-commit"):
        return timer.result("Error", "Error", f"unknown merge strategy {req.strategy!r}")
    try:
        if fetch:
            w.fetch(req.target, req.branch, req.commit)
    except ws.GitError as e:
        if "couldn't find remote ref" in e.stderr or "not our ref" in e.stderr:
            which = (f"target branch {req.target!r}" if f"refs/heads/{req.target}" in e.stderr
                     else f"branch {req.branch!r}" if f"refs/heads/{req.branch}" in e.stderr
                     else f"commit {req.commit}")
            return timer.result("Error", "Error", f"{which} does not exist on {ws.normalise_url(w.url)}")
        raise
    timer.lap("fetch")
    target_ref = f"refs/remotes/origin/{req.target}"
    old, commit, old_tree = w.resolve(f"{target_ref}^{{commit}}", f"{req.commit or ws.INCOMING_REF}^{{commit}}",
                                      f"{target_ref}^{{tree}}")
    if old is None:
        return timer.result("Error", "Error", f"target branch {req.target!r} does not resolve to a commit")
    if commit is None:
        return timer.result("Error", "Error", f"commit {req.commit} of branch {req.branch!r} was not found")

    found = find_merge(w, old, req.uid, since=req.not_before) if req.uid else None
    if found:
        timer.lap("check")
        return timer.result("AlreadyMerged", "AlreadyMerged", f"{found[:12]} on {req.target} carries "
                            f"{ID_TRAILER}: {req.uid}", merged_commit=found, old_target=old)
    # (rebase learns this from the commits of old..commit, one git call fewer on the hot path)
    if commit == old or (req.strategy != "rebase" and w.is_ancestor(commit, old)):
        return _already_on_target(timer, req, commit, old)
    timer.lap("check")

    if req.strategy == "fast-forward":
        if not w.is_ancestor(old, commit):
            _, files = _merge_tree(w, old, commit)
            timer.lap("merge")
            return timer.result("Conflicted", "NotFastForward",
                                f"{req.target} ({old[:12]}) is not an ancestor of {commit[:12]}: rebase the branch",
                                conflicting_files=tuple(files), old_target=old)
        new = commit
    elif req.strategy == "merge-commit":
        tree, files = _merge_tree(w, old, commit)
        if files:
            timer.lap("merge")
            return _conflicted(timer, req, old, files)
        message = (f"Merge branch '{req.branch}' into {req.target}\n\n"
                   f"Task {req.task or '?'} of build {req.build or '?'} ({req.namespace}).\n")
        new = _commit_tree(w, tree, [old, commit], _trailers(message, req))
    else:
        commits = _branch_commits(w, old, commit)
        if not commits:
            return _already_on_target(timer, req, commit, old)
        if any(len(c.parents) > 1 for c in commits) and w.is_ancestor(old, commit):
            # The branch merged the target in (a fixer resolving a conflict): replaying its commits would drop
            # the resolution with the merge commit. Its final tree is the answer: one commit on the target.
            last = commits[-1]
            subject = last.message.strip().splitlines()[0] if last.message.strip() else "changes"
            message = _trailers(f"{req.branch}: {subject}"
                                f"\n\nSquashed from {len(commits)} commits of {req.branch} (it merged {req.target} "
                                "to resolve conflicts).\n", req)
            new = _commit_tree(w, last.tree, [old], message)
            timer.lap("merge")
            return _push_result(w, req, timer, old, new)
        rebased = _rebase(w, old, old_tree or "", commit, commits, req)
        if isinstance(rebased, list):
            timer.lap("merge")
            return _conflicted(timer, req, old, rebased)
        if rebased == old:
            timer.lap("merge")
            return timer.result("AlreadyMerged", "AlreadyMerged",
                                f"every change of {commit[:12]} is already on {req.target}",
                                merged_commit=old, old_target=old)
        new = rebased
    timer.lap("merge")
    return _push_result(w, req, timer, old, new)


def _push_result(w: ws.Workspace, req: MergeRequest, timer: _Timer, old: str, new: str) -> MergeResult:
    pushed = push(w, req.target, old, new)
    timer.lap("push")
    if pushed is None:
        return timer.result("Merged", "MergeSucceeded", f"{req.branch} merged into {req.target} as {new[:12]} "
                            f"({req.strategy})", merged_commit=new, old_target=old)
    stale, detail = pushed
    if stale:
        return timer.result("Stale", "StaleTarget", f"{req.target} moved on the server since {old[:12]} "
                            f"({detail}); fetch and merge again", old_target=old)
    return timer.result("Error", "Error", f"push to {req.target} refused: {detail}", old_target=old)


def _already_on_target(timer: _Timer, req: MergeRequest, commit: str, old: str) -> MergeResult:
    timer.lap("check")
    return timer.result("AlreadyMerged", "AlreadyMerged", f"{commit[:12]} is already on {req.target}",
                        merged_commit=commit, old_target=old)


def _conflicted(timer: _Timer, req: MergeRequest, old: str, files: Sequence[str]) -> MergeResult:
    shown = ", ".join(files[:10]) + (f" and {len(files) - 10} more" if len(files) > 10 else "")
    return timer.result("Conflicted", "MergeConflict", f"{req.branch} conflicts with {req.target} in {shown}",
                        conflicting_files=tuple(files), old_target=old)


def _trailers(message: str, req: MergeRequest) -> str:
    out = add_trailer(message, TRAILER_KEY, req.merge_id)
    return add_trailer(out, ID_TRAILER, req.uid) if req.uid else out


def find_merge(w: ws.Workspace, head: str, uid: str, *, since: datetime | None = None) -> str | None:
    """The newest commit reachable from ``head`` whose ``Longshot-Merge-Id`` trailer is ``uid``, or None.

    On every merge's path: one ``git log`` (GitPython's ``iter_commits`` measured slower, see docs/git.md)."""
    pattern = f"^{ID_TRAILER}: {_ere_escape(uid)}$"
    args = ["log", "--format=%H%x00%B%x00", "-E", "-i", f"--grep={pattern}"]
    if since is not None:
        args.append(f"--since={int((since - SINCE_MARGIN).timestamp())}")
    out = w.git(*args, head).stdout.decode(errors="replace")
    fields = out.split("\0")
    for sha, message in zip(fields[0::2], fields[1::2], strict=False):
        if uid in trailer_values(message, ID_TRAILER):
            return sha.strip()
    return None


def _ere_escape(text: str) -> str:
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


def _merge_tree(w: ws.Workspace, ours: str, theirs: str) -> tuple[str, list[str]]:
    """Three-way merge without a worktree: ``(tree, conflicting_files)``; the tree is meaningless on conflict."""
    proc = w.git("merge-tree", "--write-tree", "-z", "--name-only", "--no-messages", ours, theirs, ok=(0, 1))
    parts = [p for p in proc.stdout.decode(errors="replace").split("\0") if p]
    tree = parts[0].strip()
    files = sorted(set(parts[1:])) if proc.returncode == 1 else []
    if proc.returncode == 1 and not files:
        files = ["(unknown)"]
    return tree, files


def _commit_tree(w: ws.Workspace, tree: str, parents: Sequence[str], message: str,
                 env: Mapping[str, str] | None = None) -> str:
    args = ["commit-tree", tree]
    for p in parents:
        args += ["-p", p]
    return w.git(*args, "-F", "-", input=message.encode(), env=env).stdout.decode().strip()


@dataclass(frozen=True)
class _Commit:
    sha: str
    parents: tuple[str, ...]
    tree: str
    author_name: str
    author_email: str
    author_date: str
    message: str


COMMIT_FORMAT = ("--date=raw", "--format=%H%x00%P%x00%T%x00%an%x00%ae%x00%ad%x00%B%x00")
"""``git log`` options printing what :func:`parse_commits` reads."""


def _branch_commits(w: ws.Workspace, old: str, commit: str) -> list[_Commit]:
    """``old..commit`` oldest first (topological), with what re-committing needs, in one git call."""
    out = w.git("log", "--reverse", "--topo-order", *COMMIT_FORMAT, f"{old}..{commit}").stdout
    return parse_commits(out)


def parse_commits(out: bytes) -> list[_Commit]:
    """The commits of a ``git log`` with :data:`COMMIT_FORMAT`, in its order."""
    fields = out.decode("utf-8", errors="surrogateescape").split("\0")
    commits = []
    for i in range(0, len(fields) - 6, 7):
        sha, parents, tree, an, ae, ad, msg = fields[i:i + 7]
        commits.append(_Commit(sha.strip(), tuple(parents.split()), tree, an, ae, ad, msg))
    return commits


def _rebase(w: ws.Workspace, old: str, old_tree: str, commit: str, commits: Sequence[_Commit],
            req: MergeRequest) -> str | list[str]:
    """Cherry-pick ``commits`` (``old..commit``) onto ``old`` with plumbing; the new head, or the
    conflicting files."""
    on_branch = {c.sha for c in commits}
    base, base_tree = old, old_tree or w.out("rev-parse", f"{old}^{{tree}}")
    for c in commits:
        if len(c.parents) != 1:
            continue  # merge commits are dropped (their changes come with the commits they merged)
        parent = c.parents[0]
        # merge-tree takes the merge base from history, and a cherry-pick needs c's parent as the base.
        # If the parent is reachable from old (hence from base) it is that merge base already; otherwise
        # a scaffold commit with base's tree and c's parent as its only parent makes it so.
        ours = base if parent not in on_branch else _commit_tree(w, base_tree, [parent], "longshot: scaffold\n")
        tree, files = _merge_tree(w, ours, c.sha)
        if files:
            return _rebase_conflict_files(w, old, commit, files)
        if tree == base_tree:
            continue  # became empty
        env = {"GIT_AUTHOR_NAME": c.author_name, "GIT_AUTHOR_EMAIL": c.author_email,
               "GIT_AUTHOR_DATE": c.author_date}
        base = _commit_tree(w, tree, [base], _trailers(c.message, req), env=env)
        base_tree = tree
    return base


def _rebase_conflict_files(w: ws.Workspace, old: str, commit: str, files: list[str]) -> list[str]:
    """Report what a fixer must resolve: the conflicts of the whole branch against the target, plus the
    ones of the commit that stopped the rebase."""
    _, whole = _merge_tree(w, old, commit)
    return sorted(set(files) | set(whole))


def push(w: ws.Workspace, target: str, old: str, new: str) -> tuple[bool, str] | None:
    """Push ``new`` to ``refs/heads/<target>`` only if the server still has ``old`` there.

    None when pushed; ``(True, detail)`` when the compare-and-swap was lost (stale); ``(False, detail)``
    when the server refused for another reason (hook, protection, permissions).
    """
    ref = f"refs/heads/{target}"
    proc = w.git("push", "--porcelain", "--atomic", "--no-verify", f"--force-with-lease={ref}:{old}",
                 "origin", f"{new}:{ref}", check=False)
    out = proc.stdout.decode(errors="replace")
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1].endswith(f":{ref}"):
            flag, summary = parts[0], parts[2]
            if flag in (" ", "+", "*", "="):
                return None
            stale = any(s in summary for s in ("stale info", "fetch first", "non-fast-forward",
                                               "cannot lock ref", "failed to update ref", "incorrect old value"))
            return stale, ws.redact(summary, w.credentials.secrets)
    if proc.returncode == 0:
        return None
    err = ws.redact(proc.stderr.decode(errors="replace").strip(), w.credentials.secrets)
    raise ws.GitError(f"git push to {target} failed with exit code {proc.returncode}: {err[-2000:]}",
                      returncode=proc.returncode, stderr=err)


# --- the queue ---------------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def queue_key(job: Mapping[str, Any]) -> tuple[int, datetime, str, str]:
    """Sort key of a MergeJob object: priority 10 first, then creationTimestamp, then namespace/name."""
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    created = meta.get("creationTimestamp")
    return (-int(spec.get("priority") or 5), timeutil.parse(created) or _EPOCH,
            meta.get("namespace") or "", meta.get("name") or "")


def order(jobs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The jobs in merge order (pass only those still waiting: not Merged, not failed for good)."""
    return sorted(jobs, key=queue_key)


def positions(jobs: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{"<namespace>/<name>": position}``, 0 being next, for ``status.queuePosition``."""
    return {merge_id(j["metadata"].get("namespace") or "", j["metadata"]["name"]): i
            for i, j in enumerate(order(jobs))}
