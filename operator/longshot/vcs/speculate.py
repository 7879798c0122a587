"""Speculative batches for the merge queue: build ``S1 = target + c1``, ``S2 = S1 + c2``, ... with the build's
strategy, publish them for the quality gate, and land a tested one with a fenced push.

Everything runs in the operator's bare workspace with git plumbing (:mod:`longshot.vcs.merge`), so nothing is
ever checked out. Blocking: call from a worker thread.

* :func:`prepare` fetches the target and the members' commits, then applies each member on the commit before it.
  A member that does not apply is left out (the batch goes on without it); whether it also conflicts with the
  target alone is reported (only that counts as a conflict of its own). A member whose work is already on the
  target is recognised **by the queue's own record** (:func:`already_merged`): a commit on the target written by
  the queue that carries the MergeJob's UID in a ``Longshot-Merge-Id`` trailer, or the member's own commit being
  an ancestor of the target. A trailer any commit can carry (``Longshot-Merge: <namespace>/<name>``) is never
  trusted: a UID is random and not visible to agents.
* **A batch's reads are done once for all its members**, not once per member (``make bench-prepare`` counts the
  git commands of a batch of 32): which commits the workspace
  has (one ``cat-file --batch-check`` before and one after the fetch, :func:`_commit_ids`), the branches' commits
  that are not on the target (one ``git log``, :func:`_read_branches`: a member's ancestry, and the commits a rebase
  replays), and the queue's record (one ``git log --first-parent --grep`` of every member's UID line: the target's
  whole history is walked once a batch, not once a member, :func:`_merged_on_target`). Each answer is the one the
  member alone gets (:func:`already_merged`, ``Workspace.has_commit``, ``vmerge._branch_commits``); where the batch's
  read cannot say (a branch with merge commits, more than the bounds read), the member is asked alone.
* **Restacking** (``spec.dependencies: stacked``): a member built on its dependencies' unmerged commits
  (``Member.stacked_on``) joins a batch only after they merged (the MergeJob waits); then only its own commits,
  those not reachable from ``stacked_on`` (:func:`own_commits`), are replayed onto the target, which holds the
  dependencies' work as it merged (rebased, squashed, or from a later attempt). A conflict there is an ordinary
  conflict (retries, then a fixer).
* **Stacking**: ``prepare(..., onto=S)`` builds a batch on the speculative commit ``S`` of the batch under test
  instead of the target's head (``core.mergequeue``'s stacked batches); a member's conflict still counts only if
  it conflicts with the target alone, and a member whose change the batch below already holds is left out, not
  recorded as merged (that batch may still break).
* :func:`publish` pushes every speculative commit to
  ``refs/heads/longshot/<namespace>/<build>/_queue/<batch>/<position>`` (one push) so that tester Pods fetch
  exactly what they gate.
* :func:`land` pushes ``S_k`` to the target with ``--force-with-lease=<target>:<base>``: the target only ever moves
  to a commit whose gate passed, from the commit the batch was built on; then it deletes the batch's branches.

**The intake hook** (:func:`finish_member`): a member of a roadmap-driven build names its roadmap item
(``Member.check_off``) and one of an issue-driven build the lines its merged commit must carry
(``Member.references``, e.g. ``Refs #12``). After the member is applied, its last commit is rewritten with the
item checked off in the roadmap file (``core.roadmap.check_off``: only that mark changes, byte for byte) and the
lines added to its message, so the check-off lands in the same commit as the work, and is gated with it.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from git.objects.util import altz_to_utctz_str

from longshot.core import mergequeue as q
from longshot.core import names, roadmap
from longshot.vcs import gitobjects
from longshot.vcs import merge as vmerge
from longshot.vcs import workspace as ws

log = logging.getLogger("longshot.speculate")

ID_TRAILER = "Longshot-Merge-Id"
"""Trailer holding the MergeJob's UID on every commit the queue writes."""
QUEUE_BRANCH_DIR = names.QUEUE_BRANCH_DIR


@dataclass(frozen=True)
class Member:
    """A MergeJob as the batch needs it."""

    name: str
    namespace: str
    uid: str
    branch: str
    commit: str
    strategy: Literal["fast-forward", "rebase", "merge-commit"] = "rebase"
    task: str = ""
    build: str = ""
    check_off: tuple[str, str] | None = None
    """``(roadmap path, item name)``: check the item off in the merged commit (roadmap-driven builds)."""
    references: tuple[str, ...] = ()
    """Lines the merged commit's message must carry (``Refs #<issue>`` for issue-driven builds)."""
    stacked_on: tuple[str, ...] = ()
    """The dependencies' commits a stacked branch was built on (``MergeJob.spec.stackedOn``): they and everything
    reachable from them are not the member's own work and are never replayed (:func:`own_commits`)."""

    @property
    def human_id(self) -> str:
        return vmerge.merge_id(self.namespace, self.name)


def queue_branch(namespace: str, build: str, batch_id: str, position: int) -> str:
    """``longshot/<namespace>/<build>/_queue/<batch>/<position>`` (``core.names.queue_branch``)."""
    return names.queue_branch(namespace, build, batch_id, position)


def _trailers(message: str, m: Member) -> str:
    return vmerge.add_trailer(vmerge.add_trailer(message, vmerge.TRAILER_KEY, m.human_id), ID_TRAILER, m.uid)


def already_merged(w: ws.Workspace, head: str, m: Member) -> str | None:
    """The commit on the target that holds ``m``'s work, by the queue's own record, or None."""
    if m.commit == head or w.is_ancestor(m.commit, head):
        return m.commit
    if not m.uid:
        return None
    pattern = f"^{ID_TRAILER}: {vmerge._ere_escape(m.uid)}$"
    out = w.git("log", "--first-parent", "--format=%H%x00%B%x00", "-E", f"--grep={pattern}", "-n", "5",
                head).stdout.decode(errors="replace")
    fields = out.split("\0")
    for sha, message in zip(fields[0::2], fields[1::2], strict=False):
        if m.uid in vmerge.trailer_values(message, ID_TRAILER):
            return sha.strip()
    return None


MERGED_SCAN_MAX = 5
"""Commits carrying a member's ``Longshot-Merge-Id`` line that :func:`already_merged` reads at most (the newest)."""
BRANCH_SCAN_MAX = 20_000
"""Commits of the members' branches (not on the target) that :func:`_read_branches` reads at most; past that, each
member is asked alone."""


@dataclass
class _Branches:
    """The commits of the batch's branches that are not on the target (``<tip>..<members' commits>``), read by one
    ``git log`` (:func:`_read_branches`), so that applying a member does not need a ``git log`` of its own
    (:meth:`commits`), nor :func:`already_merged` an ancestry check of its own (:func:`_merged_on_target`)."""

    tip: str
    ids: Mapping[str, str | None]
    """A member's commit -> its full id (:func:`_commit_ids`)."""
    known: dict[str, vmerge._Commit]
    """Every commit reachable from a member's commit and not from ``tip``, by id."""
    head: str
    """The batch's head so far (the commit the next member is applied on)."""
    above: set[str] | None
    """Commits of ``known`` that may be reachable from ``head`` (those of the batch below, of a member applied with
    ``fast-forward`` or ``merge-commit``; the commits this batch wrote are in ``trees``); None when not known."""

    def reachable(self, sha: str) -> set[str]:
        """The commits of ``known`` reachable from ``sha``."""
        seen: set[str] = set()
        todo = [sha]
        while todo:
            c = self.known.get(todo.pop())
            if c is not None and c.sha not in seen:
                seen.add(c.sha)
                todo.extend(c.parents)
        return seen

    def commits(self, w: ws.Workspace, base: str, commit: str, trees: Mapping[str, str]) -> list[vmerge._Commit]:
        """``vmerge._branch_commits(w, base, commit)``, without git when ``base`` is the target or the batch's head
        and the branch is a line of commits (one parent each) off the target that does not reach a commit ``base``
        holds beyond the target: ``base..commit`` is then exactly that line, oldest first (its only topological
        order). Any other case asks git."""
        above: set[str] | None = set() if base == self.tip else self.above if base == self.head else None
        c = self.known.get(self.ids.get(commit) or "")
        if above is None or c is None:
            return vmerge._branch_commits(w, base, commit)
        line: list[vmerge._Commit] = []
        while c is not None:
            if len(c.parents) != 1 or c.sha in above or (base != self.tip and c.sha in trees):
                return vmerge._branch_commits(w, base, commit)
            line.append(c)
            c = self.known.get(c.parents[0])  # a parent not known is on the target: the line ends there
        line.reverse()
        return line

    def advance(self, head: str, m: Member) -> None:
        """``head`` is the batch's new head, ``m`` applied on the one before."""
        self.head = head
        if self.above is not None and m.strategy != "rebase":  # the branch's commits may now be below the head
            full = self.ids.get(m.commit)
            if not full:
                self.above = None
            else:
                self.above |= self.reachable(full)


def _read_branches(w: ws.Workspace, tip: str, base: str, members: Sequence[Member], ids: Mapping[str, str | None]
                   ) -> _Branches | None:
    """``<tip>..<members' commits>`` in one ``git log`` (and ``<tip>..<base>`` when the batch is stacked on another
    one); None when it cannot be read whole (git fails, more than :data:`BRANCH_SCAN_MAX` commits)."""
    full = sorted({c for m in members if (c := ids.get(m.commit)) and _FULL_ID.fullmatch(c)})
    if not full:
        return None
    proc = w.git("log", f"--max-count={BRANCH_SCAN_MAX}", *vmerge.COMMIT_FORMAT, *full, "--not", tip, "--",
                 check=False)
    if proc.returncode != 0:
        return None
    commits = vmerge.parse_commits(proc.stdout)
    if len(commits) >= BRANCH_SCAN_MAX or not all(
            _FULL_ID.fullmatch(c.sha) and _FULL_ID.fullmatch(c.tree) and all(_FULL_ID.fullmatch(p) for p in c.parents)
            for c in commits):
        return None
    above: set[str] | None = set()
    if base != tip:  # stacked: what the batch below holds beyond the target (a line off the target only if on it)
        below = w.git("rev-list", f"--max-count={BRANCH_SCAN_MAX}", base, "--not", tip, "--", check=False)
        listed = below.stdout.decode(errors="replace").split()
        above = (set(listed) if below.returncode == 0 and len(listed) < BRANCH_SCAN_MAX and w.is_ancestor(tip, base)
                 else None)
    return _Branches(tip=tip, ids=ids, known={c.sha: c for c in commits}, head=base, above=above)


def _merged_on_target(w: ws.Workspace, tip: str, members: Sequence[Member], branches: _Branches | None
                      ) -> dict[int, str | None]:
    """:func:`already_merged` of many members with one git call instead of two per member: ``{index in members:
    answer}`` for those it could answer (the others are left to :func:`already_merged`, which gives the same answer
    alone).

    Ancestry: ``branches`` holds what the members' branches have that the target does not, so a member's commit is
    an ancestor of the target exactly when it is not there. The queue's record: one ``git log --first-parent``
    with one ``--grep`` alternation of every member's ``^Longshot-Merge-Id: <uid>$`` line (the walk of the
    target's history, paid once, not once per member); each member then takes the newest :data:`MERGED_SCAN_MAX`
    commits whose message has its own line, as its own ``-n`` would have, and the first whose trailer block
    carries its UID. At most ``MERGED_SCAN_MAX`` commits per UID are read: when the walk stops there, a member with
    fewer is asked alone."""
    answers: dict[int, str | None] = {}
    full: dict[int, str] = {}
    for i, m in enumerate(members):
        if m.commit == tip:
            answers[i] = m.commit
        elif branches is not None and (c := branches.ids.get(m.commit)) and _FULL_ID.fullmatch(c):
            full[i] = c
    if branches is None or not full:
        return answers
    by_uid: dict[str, list[int]] = {}
    for i, c in full.items():
        m = members[i]
        if c not in branches.known:
            answers[i] = m.commit  # an ancestor of the target (a fast-forward, or merged by hand)
        elif not m.uid:
            answers[i] = None
        elif _PLAIN_UID.fullmatch(m.uid):
            by_uid.setdefault(m.uid, []).append(i)
    if not by_uid:
        return answers
    uids = sorted(by_uid)
    pattern = f"^{ID_TRAILER}: ({'|'.join(vmerge._ere_escape(u) for u in uids)})$"
    cap = MERGED_SCAN_MAX * len(uids)
    proc = w.git("log", "--first-parent", "--format=%H%x00%B%x00", "-E", f"--grep={pattern}", "-n", str(cap), tip,
                 check=False)
    if proc.returncode != 0:
        return answers
    fields = proc.stdout.decode(errors="replace").split("\0")
    found: dict[str, list[tuple[str, str]]] = {u: [] for u in uids}
    walked = 0
    for sha, message in zip(fields[0::2], fields[1::2], strict=False):
        walked += 1
        for line in message.split("\n"):  # the lines git's grep matched, each commit once per UID
            if (line.startswith(f"{ID_TRAILER}: ") and (u := line[len(ID_TRAILER) + 2:]) in found
                    and len(found[u]) < MERGED_SCAN_MAX and (not found[u] or found[u][-1][0] != sha)):
                found[u].append((sha, message))
    complete = walked < cap
    for u, indexes in by_uid.items():
        hits = found[u]
        if not complete and len(hits) < MERGED_SCAN_MAX:
            continue  # the walk stopped before this UID's own -n would have: asked alone
        answer = next((sha.strip() for sha, message in hits if u in vmerge.trailer_values(message, ID_TRAILER)), None)
        for i in indexes:
            answers[i] = answer
    return answers


_FULL_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_PLAIN_UID = re.compile(r"[A-Za-z0-9._:-]+")
"""A UID that can join the alternation (a Kubernetes UID always does); any other is asked alone."""


def _commit_ids(w: ws.Workspace, revs: Sequence[str]) -> dict[str, str | None]:
    """What :meth:`Workspace.has_commit` says of each of ``revs``, in one ``git cat-file --batch-check`` instead of a
    process per commit: ``{rev: the full id of the commit it names, or None when the workspace lacks it}``. A rev
    that cannot be a line of that batch (empty, or with white space) is asked alone, and is ``""`` when present."""
    out: dict[str, str | None] = {}
    batch = sorted({r for r in revs if r and not any(ch.isspace() for ch in r)})
    if batch:
        proc = w.git("cat-file", "--batch-check=%(objectname) %(objecttype)",
                     input="".join(f"{r}^{{commit}}\n" for r in batch), check=False)
        lines = proc.stdout.decode(errors="replace").splitlines()
        if proc.returncode == 0 and len(lines) == len(batch):
            for r, line in zip(batch, lines, strict=True):
                name, _, kind = line.partition(" ")
                out[r] = name if kind == "commit" and _FULL_ID.fullmatch(name) else None
    for r in revs:
        if r not in out:
            out[r] = "" if w.has_commit(r) else None
    return out


def fetch(w: ws.Workspace, target: str, members: Sequence[Member]) -> str:
    """Fetch the target and the members' branches (and their exact commits if the branches moved on); the
    target's head."""
    return _fetch(w, target, members)[0]


def _fetch(w: ws.Workspace, target: str, members: Sequence[Member]) -> tuple[str, dict[str, str | None]]:
    """:func:`fetch`, and what :func:`_commit_ids` says of the members' commits after it: which the workspace has
    is asked once before and once after the fetch for all members together (with the target's head)."""
    w.ensure()
    ids = _commit_ids(w, [m.commit for m in members]) if members else {}
    specs = [f"+refs/heads/{target}:refs/remotes/origin/{target}"]
    specs += [f"+refs/heads/{m.branch}:refs/longshot/queue/{m.name}" for m in members if ids[m.commit] is None]
    w.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--refmap=",
          "origin", *specs)
    target_ref = f"refs/remotes/origin/{target}"
    after = _commit_ids(w, [target_ref, *[c for c, i in ids.items() if i is None]])
    ids.update(after)
    missing = [m.commit for m in members if ids[m.commit] is None]
    if missing:
        w.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin", *missing)
        ids.update(_commit_ids(w, missing))
    head = after[target_ref] or w.resolve(f"{target_ref}^{{commit}}")[0]
    if head is None:
        raise ws.GitError(f"target branch {target!r} does not resolve to a commit")
    return head, ids


def fetch_commits(w: ws.Workspace, members: Sequence[Member]) -> None:
    """Fetch, in one fetch, the branches of the members whose commits the workspace lacks (the queue checks many
    new branches per reconcile). Best effort: when one branch cannot be fetched (deleted meanwhile), nothing is
    raised, and each member's own fetch later says what is wrong with it."""
    with w.locked():
        w.ensure()
        ids = _commit_ids(w, [m.commit for m in members])
        missing = [m for m in members if ids[m.commit] is None]
        if not missing:
            return
        specs = [f"+refs/heads/{m.branch}:refs/longshot/queue/{m.name}" for m in missing]
        try:
            w.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--refmap=",
                  "origin", *specs, check=False)
        except ws.GitError as e:  # (timed out) each member's own fetch tries again
            log.info("fetching %d branches together failed: %s", len(missing), e)


def head_of(w: ws.Workspace, target: str) -> str:
    with w.locked():
        return fetch(w, target, ())


def remote_head(w: ws.Workspace, target: str) -> str:
    """The target's head on the server (``git ls-remote``), without the workspace's lock: it writes nothing, so it
    does not wait for the merge queue's git work in the same workspace (the build reconciler asks between merges)."""
    if not (w.path / "HEAD").exists():
        with w.locked():
            w.ensure()
    for line in w.out("ls-remote", "--", "origin", f"refs/heads/{target}").splitlines():
        sha, _, ref = line.partition("\t")
        if ref == f"refs/heads/{target}" and sha:
            return sha
    raise ws.GitError(f"target branch {target!r} does not exist on the server")


def own_commits(w: ws.Workspace, base: str, commits: Sequence[vmerge._Commit], stacked_on: Sequence[str]
                ) -> tuple[list[vmerge._Commit], set[str]]:
    """The restack of a stacked branch: ``commits`` (``base..head``, oldest first) without those reachable from
    ``stacked_on`` (the dependencies' work, which reaches the target through their own MergeJobs, possibly
    rebased, squashed or changed by a later attempt) and without the merge commits that only joined them (every
    parent excluded). ``(own commits, excluded shas)``; commits already on ``base`` are neither."""
    present = [c for c in stacked_on if w.has_commit(c)]
    if not present:
        return list(commits), set()
    excluded = set(w.out("rev-list", *present, "--not", base, "--").split())
    own: list[vmerge._Commit] = []
    for c in commits:
        if c.sha in excluded:
            continue
        if len(c.parents) > 1 and all(p in excluded for p in c.parents):
            excluded.add(c.sha)  # the merge that stacked two dependencies together
            continue
        own.append(c)
    return own, excluded


def _replay(w: ws.Workspace, base: str, base_tree: str, m: Member, commits: Sequence[vmerge._Commit],
            stacked: set[str], trees: dict[str, str], objs: gitobjects.Objects | None = None) -> str | list[str]:
    """Cherry-pick ``commits`` one by one onto ``base`` with plumbing: the new head, or the conflicting files. A
    commit whose parent is not ``base``'s ancestor (on the branch, or a stacked-on dependency commit) is picked
    against a scaffold commit so that its parent is the merge base: only its own change is applied. The merge base
    of each pick is thus the commit's parent; with ``objs``, a pick that is a trivial three-way merge is computed
    and committed in this process (:mod:`longshot.vcs.gitobjects`), the others by git."""
    on_branch = {c.sha: c.tree for c in commits}
    head, head_tree = base, base_tree
    for c in commits:
        if len(c.parents) != 1:
            continue
        parent = c.parents[0]
        tree = _fast_pick(objs, c, on_branch.get(parent), head_tree) if objs is not None else None
        if tree is None:
            if parent not in on_branch and parent not in stacked:
                ours = head
            else:
                ours = vmerge._commit_tree(w, head_tree, [parent], "longshot: scaffold\n")
            tree, files = vmerge._merge_tree(w, ours, c.sha)
            if files:
                return vmerge._rebase_conflict_files(w, base, m.commit, files)
        if tree == head_tree:
            continue
        message = _trailers(c.message, m)
        written = gitobjects.commit(objs, tree, [head], message, (c.author_name, c.author_email, c.author_date)
                                    ) if objs is not None else None
        if written is None:
            env = {"GIT_AUTHOR_NAME": c.author_name, "GIT_AUTHOR_EMAIL": c.author_email,
                   "GIT_AUTHOR_DATE": c.author_date}
            written = vmerge._commit_tree(w, tree, [head], message, env=env)
        head, head_tree = written, tree
        trees[head] = tree
    return head


def _fast_pick(objs: gitobjects.Objects, c: vmerge._Commit, parent_tree: str | None, head_tree: str) -> str | None:
    """The tree of ``c`` picked onto ``head_tree`` (merge base: ``c``'s parent, whose tree is ``parent_tree`` when
    the branch read it) without git, or None when git is to merge it."""
    try:
        return gitobjects.pick(objs, parent_tree or objs.tree_of(c.parents[0]), c.tree, head_tree)
    except gitobjects.Malformed as e:
        log.debug("commit %s is picked by git: %s", c.sha[:12], e)
        return None


def _commit(w: ws.Workspace, trees: dict[str, str], tree: str, parents: Sequence[str], message: str) -> str:
    """``vmerge._commit_tree``, remembering the new commit's tree in ``trees``."""
    commit = vmerge._commit_tree(w, tree, parents, message)
    trees[commit] = tree
    return commit


def _apply(w: ws.Workspace, base: str, m: Member, trees: dict[str, str] | None = None,
           branches: _Branches | None = None, objs: gitobjects.Objects | None = None) -> str | list[str]:
    """``m`` applied on ``base`` with its strategy: the new commit, or the conflicting files.

    A stacked member (``stacked_on``) is restacked: only its own commits are replayed onto ``base`` (which holds
    its dependencies' merged work by then); with ``merge-commit`` the replayed tree is committed as the merge of
    ``base`` and the branch. ``trees`` holds the trees of the commits written so far (a commit's id names its tree,
    so the batch's next member needs no ``rev-parse`` of the one before); the new ones are added. ``branches`` has
    the branch's commits when the batch read them (:meth:`_Branches.commits`)."""
    trees = {} if trees is None else trees

    def branch_commits() -> list[vmerge._Commit]:
        if branches is None:
            return vmerge._branch_commits(w, base, m.commit)
        return branches.commits(w, base, m.commit, trees)

    base_tree = trees.get(base) or trees.setdefault(base, w.out("rev-parse", f"{base}^{{tree}}"))
    if m.stacked_on and m.strategy != "fast-forward":
        own, stacked = own_commits(w, base, branch_commits(), m.stacked_on)
        # a branch with no commit of its own would "land" as nothing: never trust stackedOn that far (the agent
        # reports it); the branch is then replayed whole, as without a stack
        if stacked and own and not any(len(c.parents) > 1 for c in own):
            result = _replay(w, base, base_tree, m, own, stacked, trees, objs)
            if isinstance(result, list) or result == base or m.strategy != "merge-commit":
                return result
            tree = trees.get(result) or w.out("rev-parse", f"{result}^{{tree}}")
            message = (f"Merge branch '{m.branch}' into the target\n\nTask {m.task or '?'} of build "
                       f"{m.build or '?'} ({m.namespace}), restacked on its merged dependencies.\n")
            return _commit(w, trees, tree, [base, m.commit], _trailers(message, m))
    if m.strategy == "fast-forward":
        if w.is_ancestor(base, m.commit):
            return m.commit
        _, files = vmerge._merge_tree(w, base, m.commit)
        return files or ["(not a fast-forward of the target: rebase the branch)"]
    if m.strategy == "merge-commit":
        tree, files = vmerge._merge_tree(w, base, m.commit)
        if files:
            return files
        message = (f"Merge branch '{m.branch}' into the target\n\nTask {m.task or '?'} of build {m.build or '?'} "
                   f"({m.namespace}).\n")
        return _commit(w, trees, tree, [base, m.commit], _trailers(message, m))
    commits = branch_commits()
    if not commits:
        return base
    if any(len(c.parents) > 1 for c in commits):
        # The branch merged the target in (a fixer resolving a conflict): replaying its commits one by one would
        # conflict again. Its resolution, merged three-way with what the target gained since, lands as one commit.
        tree, files = vmerge._merge_tree(w, base, m.commit)
        if files:
            return files
        last = commits[-1]
        subject = last.message.strip().splitlines()[0] if last.message.strip() else "changes"
        message = (f"{m.branch}: {subject}\n\nSquashed from {len(commits)} commits of {m.branch} (it merged the "
                   "target to resolve conflicts).\n")
        return _commit(w, trees, tree, [base], _trailers(message, m))
    return _replay(w, base, base_tree, m, commits, set(), trees, objs)


MAX_ROADMAP_BYTES = 1024 * 1024
"""Largest roadmap file the operator reads or rewrites."""


def read_file(w: ws.Workspace, commit: str, path: str, limit: int = MAX_ROADMAP_BYTES) -> str | None:
    """The UTF-8 text of ``path`` at ``commit``, or None when it does not exist there. Raises ValueError when it
    is larger than ``limit`` bytes, not a file, or not UTF-8 text."""
    spec = f"{commit}:{path}"
    kind = w.git("cat-file", "-t", spec, check=False)
    if kind.returncode != 0:
        return None
    if kind.stdout.decode().strip() != "blob":
        raise ValueError(f"{path} is not a file")
    size = int(w.out("cat-file", "-s", spec))
    if size > limit:
        raise ValueError(f"{path} has {size} bytes, more than the {limit} read")
    data = w.git("cat-file", "blob", spec).stdout
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None


def _replace_file(w: ws.Workspace, commit: str, path: str, text: str) -> str:
    """The tree of ``commit`` with ``path`` holding ``text`` (mode kept), without touching any worktree."""
    mode = w.out("ls-tree", commit, "--", path).split(" ", 1)[0] or "100644"
    blob = w.out("hash-object", "-w", "--stdin", input=text.encode("utf-8"))
    fd, index = tempfile.mkstemp(prefix="longshot-index-", dir=str(w.path))
    os.close(fd)
    os.unlink(index)
    env = {"GIT_INDEX_FILE": index}
    try:
        w.git("read-tree", commit, env=env)
        w.git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=env)
        return w.git("write-tree", env=env).stdout.decode().strip()
    finally:
        if os.path.exists(index):
            os.unlink(index)


def finish_member(w: ws.Workspace, commit: str, m: Member, trees: dict[str, str] | None = None) -> str:
    """``commit`` (the member applied) rewritten with its roadmap item checked off and its reference lines in the
    message (the intake hook); ``commit`` itself when there is nothing to change. The new commit's tree is added to
    ``trees`` (see :func:`_apply`)."""
    if m.check_off is None and not m.references:
        return commit
    with w.repo() as repo:
        c = repo.commit(commit)
        try:  # the commit may be the agent's own (fast-forward): its headers are hostile input
            parents, tree, message = [p.hexsha for p in c.parents], c.tree.hexsha, c.message
            an, ae = c.author.name or "", c.author.email or ""
            ad = f"{c.authored_date} {altz_to_utctz_str(c.author_tz_offset)}"  # git's raw date (GIT_AUTHOR_DATE)
        except (ValueError, LookupError) as e:
            log.warning("commit %s of %s is not checked off: its header does not parse (%s)", commit[:12], m.name, e)
            return commit
    if isinstance(message, bytes):  # GitPython keeps a message it could not decode as bytes
        message = message.decode("utf-8", errors="replace")
    new_tree = tree
    if m.check_off is not None:
        path, item = m.check_off
        try:
            text = read_file(w, commit, path)
        except ValueError as e:
            log.warning("roadmap of %s not checked off: %s", m.name, e)
            text = None
        if text is not None:
            try:
                checked = roadmap.check_off(text, [item])
                unknown = checked == text and bool(roadmap.unknown_names(text, [item]))
            except roadmap.RoadmapTooLarge as e:
                log.warning("roadmap of %s not checked off: %s", m.name, e)
                checked, unknown = text, False
            if checked != text:
                new_tree = _replace_file(w, commit, path, checked)
            elif unknown:
                log.warning("roadmap item %s of %s is no longer in %s; nothing checked off", item, m.name, path)
    new_message = message.rstrip("\n") + "\n"
    missing = [line for line in m.references if line not in new_message.splitlines()]
    if missing:
        new_message = new_message.rstrip("\n") + "\n\n" + "\n".join(missing) + "\n"
    if m.uid and m.uid not in vmerge.trailer_values(new_message, ID_TRAILER):
        new_message = _trailers(new_message, m)  # recognised after a restart like every queue commit
    if new_tree == tree and new_message == message:
        return commit
    env = {"GIT_AUTHOR_NAME": an, "GIT_AUTHOR_EMAIL": ae, "GIT_AUTHOR_DATE": ad}
    rewritten = vmerge._commit_tree(w, new_tree, parents, new_message, env=env)
    if trees is not None:
        trees[rewritten] = new_tree
    return rewritten


def copy_branch(w: ws.Workspace, source: str, destinations: Sequence[str]) -> str:
    """Create ``destinations`` at the head of branch ``source`` on the remote (those that exist are left as they
    are); the head. For the candidates of a best-of-N fixer, which each start from the branch to fix."""
    with w.locked():
        w.ensure()
        w.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--refmap=", "origin",
              f"+refs/heads/{source}:refs/longshot/copy-source")
        head = w.resolve("refs/longshot/copy-source^{commit}")[0]
        if head is None:
            raise ws.GitError(f"branch {source!r} does not resolve to a commit")
        listed = w.out("ls-remote", "--heads", "origin", *[f"refs/heads/{d}" for d in destinations])
        have = {line.split("\t", 1)[1] for line in listed.splitlines() if "\t" in line}
        specs = [f"{head}:refs/heads/{d}" for d in destinations if f"refs/heads/{d}" not in have]
        if specs:
            w.git("push", "--quiet", "--no-verify", "origin", *specs)
        return head


def prepare(w: ws.Workspace, target: str, members: Sequence[Member], onto: str | None = None,
            onto_branch: str | None = None) -> q.Prepared:
    """Build the batch's speculative commits on the target's current head, or, for a batch stacked on the batch
    under test, on ``onto`` (that batch's longest speculative commit, fetched from its queue branch
    ``onto_branch`` when another replica built it)."""
    with w.locked(), gitobjects.Objects(w) as objs:
        tip, ids = _fetch(w, target, members)
        base = tip
        if onto is not None:
            _fetch_speculative(w, onto, onto_branch, "stacking")
            base = onto
        out: list[q.Applied | q.DidNotApply | q.AlreadyOnTarget] = []
        head = base
        branches = _read_branches(w, tip, base, members, ids)
        merged = _merged_on_target(w, tip, members, branches)
        trees: dict[str, str] = {}
        _read_ahead(objs, base, branches, trees)
        for i, m in enumerate(members):
            found = merged[i] if i in merged else already_merged(w, tip, m)
            if found is not None:
                out.append(q.AlreadyOnTarget(m.name, found))
                continue
            result = _apply(w, head, m, trees, branches, objs)
            if isinstance(result, list):
                with_target = head == tip or isinstance(_apply(w, tip, m, trees, branches, objs), list)
                out.append(q.DidNotApply(m.name, tuple(result), with_target))
                continue
            if result == head:
                if head == tip:
                    out.append(q.AlreadyOnTarget(m.name, head))  # every change is already there
                else:  # already in the batch below, which may still break: not recorded as merged
                    out.append(q.DidNotApply(m.name, (), with_target=False))
                continue
            result = finish_member(w, result, m, trees)
            head = result
            if branches is not None:
                branches.advance(head, m)
            out.append(q.Applied(m.name, result))
        return q.Prepared(base, tuple(out), target=tip if onto is not None else None)


def _read_ahead(objs: gitobjects.Objects, base: str, branches: _Branches | None, trees: dict[str, str]) -> None:
    """The batch's base tree, and the trees its members' picks will read, read ahead together
    (``gitobjects.prefetch``)."""
    try:
        trees[base] = objs.tree_of(base)
    except gitobjects.Malformed:
        return  # asked of git by the first pick
    if branches is not None:
        known = branches.known
        gitobjects.prefetch(objs, [(c.parents[0], known[c.parents[0]].tree if c.parents[0] in known else None, c.tree)
                                   for c in known.values() if len(c.parents) == 1], trees[base])


def _fetch_speculative(w: ws.Workspace, commit: str, queue_branch_: str | None, local: str) -> None:
    """Make sure the workspace has the speculative ``commit``, fetching its queue branch (into
    ``refs/longshot/queue/<local>``) when another replica built it; GitError when it is gone."""
    if not w.has_commit(commit) and queue_branch_:
        w.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--refmap=", "origin",
              f"+refs/heads/{queue_branch_}:refs/longshot/queue/{local}")
    if not w.has_commit(commit):
        raise ws.GitError(f"the speculative commit {commit[:12]} is not on {queue_branch_} any more")


def publish(w: ws.Workspace, namespace: str, build: str, batch_id: str, commits: Sequence[tuple[int, str]]) -> None:
    """Push each speculative commit to its queue branch, for the gate Pods."""
    specs = [f"{c}:refs/heads/{queue_branch(namespace, build, batch_id, pos)}" for pos, c in commits]
    if not specs:
        return
    with w.locked():
        w.git("push", "--quiet", "--force", "--no-verify", "origin", *specs)


def land(w: ws.Workspace, target: str, base: str, commit: str, queue_branch_: str) -> tuple[bool, str]:
    """Push ``commit`` to the target if it still is ``base``: ``(True, "")``, or ``(False, why)`` when the
    compare-and-swap was lost (nothing was pushed). Raises GitError when the server refuses for another reason.

    The commit may have been built by another replica (the batch was prepared before a hand-over): it is then
    fetched from its queue branch first."""
    with w.locked():
        w.ensure()
        _fetch_speculative(w, commit, queue_branch_, "landing")
        result = vmerge.push(w, target, base, commit)
    if result is None:
        return True, ""
    stale, detail = result
    if stale:
        return False, detail
    raise ws.GitError(f"push to {target} refused: {detail}")


def ensure_branch(w: ws.Workspace, branch: str, start: str) -> None:
    """Create ``branch`` on the server at ``start``'s head when it does not exist (the build branch of ``per: build``
    delivery starts at the base branch). Nothing when it exists: it is never reset."""
    with w.locked():
        w.ensure()
        listed = w.out("ls-remote", "--", "origin", f"refs/heads/{branch}")
        if any(line.endswith(f"\trefs/heads/{branch}") for line in listed.splitlines()):
            return
        head = fetch(w, start, ())
        w.git("push", "--quiet", "--no-verify", "origin", f"{head}:refs/heads/{branch}")


def push_branch(w: ws.Workspace, branch: str, commit: str) -> None:
    """Make sure the server's ``branch`` holds ``commit`` (delivery through a pull request: the branch is its head).
    A fast-forward push; nothing when it already does, and nothing forced over a branch that moved on (a fixer
    pushed to it: its own MergeJob takes the pull request from there)."""
    with w.locked():
        w.ensure()
        if not w.has_commit(commit):
            w.git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin", commit, check=False)
        w.git("push", "--quiet", "--no-verify", "origin", f"{commit}:refs/heads/{branch}", check=False)


def cleanup(w: ws.Workspace, namespace: str, build: str, batch_id: str, positions: Sequence[int]) -> None:
    """Delete the batch's queue branches (best effort)."""
    specs = [f":refs/heads/{queue_branch(namespace, build, batch_id, p)}" for p in positions]
    if specs:
        with w.locked():
            w.git("push", "--quiet", "--no-verify", "origin", *specs, check=False)
