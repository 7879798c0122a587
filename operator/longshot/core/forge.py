"""Delivery through the forge (``spec.merge.delivery: pullRequest``): what to do with a candidate's pull request.
``decide(ask, facts) -> effects``. Pure: the shell (``controllers/queue/forge.py`` with ``runtime/forge.py``) reads
the pull request's facts from the forge, carries the effects out, and turns the outcome into MergeJob events
(``core.mergejobs``: ``ForgeWaiting``, ``ForgeMerged``, ``ForgeClosed``, ``ChangesRequested``).

The candidate passed its quality gate as it would land (the speculative queue tested it); instead of pushing the
target, the queue hands the job to the forge (MergeJob phase ``AwaitingForge``). Each poll of the job:

====== ======== ====== ============= ===================================== ========== ===========================
exists state    merged status on     reviews (latest per reviewer)         mergeable  effects
              head
====== ======== ====== ============= ===================================== ========== ===========================
no     -        -      -             -                                     -          OpenPull, Wait(opened)
yes    closed   yes    -             -                                     -          Landed(merge commit)
yes    closed   no     -             -                                     -          Fail(ClosedWithoutMerge)
yes    open     -      no            -                                     -          PostStatus, then the rows below
yes    open     -      -             changes requested on the tested head  -          RequestChanges (a fixer)
yes    open     -      -             fewer approvals than required         -          Wait(approvals)
yes    open     -      -             approved                              no         Wait(not mergeable: state)
yes    open     -      -             approved                              unknown    Wait(forge computing)
yes    open     -      -             approved                              yes        Merge(method, tested sha)
====== ======== ====== ============= ===================================== ========== ===========================

**Handing the pull request to the forge** (``spec.merge.pullRequest.autoMerge.enabled``, :attr:`Ask.auto_merge`):
the rows down to "changes requested" stand (no pull request: open it; merged: ``Landed``; closed: ``Fail``; a head
that is not the tested commit: wait; changes requested on the tested head: a fixer); then, instead of counting
approvals and merging, the forge's own rules (required reviews, required checks) decide:

================================ ================= =================================================================
forge says auto-merge is         handed already    effects
================================ ================= =================================================================
on                               -                 Wait(AutoMerge: the forge merges when its rules pass)
off                              no                EnableAutoMerge(number, node id, method, tested sha), Wait(AutoMerge)
off                              yes               Fail(AutoMergeDisabled, the forge's merge state as its reason)
================================ ================= =================================================================

"Handed already" is the job's record (``status.pullRequest.autoMerge``), written with the ``Wait`` that follows a
hand-off the forge accepted; a forge that turns auto-merge off afterwards (GitLab cancels it when the pipeline
fails; a person disables it; a push by someone without write access does on GitHub) fails the job with the forge's
merge state, rather than Longshot handing it over again behind the forge's back. The merge itself is the forge's:
the ``merged`` row above records it with the forge's merge commit.

``per: build`` (one pull request for the build): the job's MergeJob targets the build branch
(:func:`merge_target`, ``longshot/<ns>/<build>/_pull``), so the queue gates each candidate on the build branch and
lands it there by its usual compare-and-swap push, then hands the job to the forge with the landed commit. Every job
so handed polls the one pull request from the build branch to the base branch with the same table: the job whose
commit is the pull request's head drives it (status, approvals, merge of that exact head); the older jobs see a
head that is not their commit and wait (``Wait``), following the outcome: merged -> ``Landed`` for every job that
knew the pull request while it was open (the build branch only moves forward, by the queue, so its head at the
merge contains each of their commits), closed without merge -> ``Fail`` for each of them.

A merge the forge refuses (405 or 409: branch protection, a required check, the head moved past the tested commit)
keeps the job waiting with the forge's message (:func:`merge_outcome`); a merge it accepts lands the job with the
merge commit. A pull request merged on the forge by anyone (a person, the forge's merge queue) lands it too. A
changes-requested review counts only on the commit the gate tested: after a fixer pushed, the old review is stale
and the pull request waits for a new review. The merge names the tested commit (``sha``), so the forge never
merges a head Longshot did not test.

**Only people with write access decide** (:func:`counts`). Every row above reads only the reviews that count:
with ``spec.merge.pullRequest.reviewers`` set, those of the accounts it lists; otherwise those of accounts the forge
says may write to the repository (:attr:`Review.writer`: GitHub's ``author_association`` ``OWNER``, ``MEMBER`` or
``COLLABORATOR``; GitLab's access level Developer (30) or higher). A stranger's approval approves nothing and a
stranger's changes-requested review sends no fixer: on a public repository anyone may review.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from longshot.core import names

GATE_CONTEXT: Final = "longshot/gate"
"""The commit status context Longshot posts the gate's result under."""
MAX_REVIEW_TEXT: Final = 4000
"""Longest review body or comment carried into a fixer's description."""
MAX_REVIEW_COMMENTS: Final = 20
WRITE_ASSOCIATIONS: Final = frozenset({"OWNER", "MEMBER", "COLLABORATOR"})
"""GitHub ``author_association`` values of accounts that may write to the repository (the owner, a member of the
owning organisation, an invited collaborator)."""
DEVELOPER: Final = 30
"""GitLab's access level Developer: the least that may push and merge."""

PullState = Literal["open", "closed"]
ReviewState = Literal["APPROVED", "CHANGES_REQUESTED", "COMMENTED", "DISMISSED", "PENDING"]


@dataclass(frozen=True)
class Review:
    """One submitted review, in the order the forge lists them."""

    user: str
    state: str
    body: str = ""
    commit: str = ""
    """The head commit the review was given on."""
    comments: tuple[str, ...] = ()
    """Its inline comments (``path:line: text``), for a changes-requested review."""
    id: int = 0
    writer: bool = False
    """The forge says its author may write to the repository (:func:`github_writer`, :func:`gitlab_writer`)."""


@dataclass(frozen=True)
class PullFacts:
    """What the forge says about the pull request whose head is the candidate's branch."""

    exists: bool
    number: int = 0
    url: str = ""
    state: PullState = "open"
    merged: bool = False
    merge_commit: str | None = None
    head: str = ""
    """The pull request's head commit."""
    mergeable: bool | None = None
    """None: the forge is still computing it."""
    mergeable_state: str = ""
    reviews: tuple[Review, ...] = ()
    status_posted: bool = False
    """Longshot's gate status is on :attr:`head` already."""
    node_id: str = ""
    """GitHub's GraphQL id of the pull request (``node_id``), which ``enablePullRequestAutoMerge`` names."""
    auto_merge: bool = False
    """The forge says auto-merge is on (GitHub ``auto_merge`` set, GitLab ``merge_when_pipeline_succeeds``)."""


@dataclass(frozen=True)
class Ask:
    """What the job wants from the forge."""

    branch: str
    """The candidate's branch: the pull request's head."""
    target: str
    """The pull request's base."""
    commit: str
    """The commit the gate tested (the branch head the MergeJob names)."""
    title: str
    body: str
    labels: tuple[str, ...] = ()
    merge_method: str = "merge"
    approvals_required: int = 1
    reviewers: tuple[str, ...] = ()
    """``spec.merge.pullRequest.reviewers``: when set, only these accounts' reviews count (:func:`counts`)."""
    per_build: bool = False
    """The pull request is the build's (``per: build``): a head that is not :attr:`commit` is a newer candidate."""
    auto_merge: str | None = None
    """``spec.merge.pullRequest.autoMerge.method`` when auto-merge is enabled: hand the pull request to the forge."""
    handed: bool = False
    """This job handed the pull request to the forge's auto-merge already (``status.pullRequest.autoMerge``)."""


def merge_target(*, delivery: str, per: str | None, base: str, namespace: str, build: str) -> str:
    """The branch a build's MergeJobs land on: the base branch, or for ``delivery: pullRequest`` with ``per: build``
    the build branch that is the head of the build's pull request.

    =========== ===== ==================================
    delivery    per   target
    =========== ===== ==================================
    push        any   base
    pullRequest task  base
    pullRequest build ``longshot/<ns>/<build>/_pull``
    =========== ===== ==================================
    """
    if delivery == "pullRequest" and per == "build":
        return names.pull_branch(namespace, build)
    return base


# --- effects -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenPull:
    branch: str
    target: str
    title: str
    body: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class PostStatus:
    """Post the gate's result on ``sha`` (context :data:`GATE_CONTEXT`)."""

    sha: str
    state: Literal["success", "failure", "pending"]
    description: str


@dataclass(frozen=True)
class Merge:
    """Ask the forge to merge pull request ``number`` with ``method``, only if its head still is ``sha``."""

    number: int
    method: str
    sha: str


@dataclass(frozen=True)
class EnableAutoMerge:
    """Ask the forge to merge pull request ``number`` (GraphQL id ``node_id`` on GitHub) with ``method`` when its
    rules pass; GitLab is told the tested ``sha`` too (it refuses a moved head)."""

    number: int
    node_id: str
    method: str
    sha: str


@dataclass(frozen=True)
class Wait:
    """Keep waiting; ``reason`` and ``message`` go on the job's ``AwaitingForge`` condition."""

    reason: str
    message: str


@dataclass(frozen=True)
class Landed:
    """The forge merged the pull request: the target holds ``commit``."""

    commit: str
    message: str


@dataclass(frozen=True)
class Fail:
    reason: str
    message: str


@dataclass(frozen=True)
class RequestChanges:
    """A reviewer asked for changes on the tested commit: a fixer gets ``reasons`` (body and comments)."""

    reviewer: str
    reasons: tuple[str, ...]


Effect = OpenPull | PostStatus | Merge | EnableAutoMerge | Wait | Landed | Fail | RequestChanges


# --- the decision ------------------------------------------------------------------------------------


def github_writer(association: object) -> bool:
    """Whether a GitHub ``author_association`` is one of an account with write access."""
    return isinstance(association, str) and association.upper() in WRITE_ASSOCIATIONS


def gitlab_writer(access_level: object) -> bool:
    """Whether a GitLab member's ``access_level`` may push and merge (Developer, 30, or higher)."""
    return isinstance(access_level, int) and not isinstance(access_level, bool) and access_level >= DEVELOPER


def counts(review: Review, reviewers: Sequence[str]) -> bool:
    """Whether ``review`` decides anything: its author is listed in ``reviewers`` (case-insensitive, as the forges
    compare account names), or, with no list, the forge says its author may write to the repository."""
    if reviewers:
        return review.user.casefold() in {r.casefold() for r in reviewers}
    return review.writer


def latest_reviews(reviews: Sequence[Review]) -> dict[str, Review]:
    """Each reviewer's latest review that decides something (approved, changes requested or dismissed); comments
    change no one's verdict, as on GitHub."""
    out: dict[str, Review] = {}
    for r in reviews:
        if r.state in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED"):
            out[r.user] = r
    return out


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REVIEW_TEXT else text[: MAX_REVIEW_TEXT - 6] + " [...]"


def decide(ask: Ask, facts: PullFacts) -> list[Effect]:
    """The effects for one poll (see the table in the module docstring)."""
    if not facts.exists:
        return [OpenPull(ask.branch, ask.target, ask.title, ask.body, ask.labels),
                PostStatus(ask.commit, "success", "the quality gate passed as it would land"),
                Wait("PullRequestOpened", f"opened a pull request from {ask.branch} to {ask.target}; waiting for "
                                          "its reviews")]
    where = f"pull request #{facts.number}"
    if facts.state == "closed" or facts.merged:
        if facts.merged and facts.merge_commit:
            return [Landed(facts.merge_commit, f"{where} was merged on the forge as {facts.merge_commit[:12]}")]
        if facts.merged:
            return [Wait("AwaitingForge", f"{where} is merged; waiting for the forge to name its merge commit")]
        return [Fail("ClosedWithoutMerge", f"{where} was closed without merging")]
    out: list[Effect] = []
    if not facts.status_posted and facts.head == ask.commit:
        out.append(PostStatus(ask.commit, "success", "the quality gate passed as it would land"))
    if facts.head and facts.head != ask.commit:
        if ask.per_build:
            return [*out, Wait("AwaitingForge", f"{where} carries this commit ({ask.commit[:12]}); its head is the "
                                                f"newer candidate {facts.head[:12]}, whose MergeJob drives it; this "
                                                "job follows its outcome")]
        return [*out, Wait("AwaitingForge", f"{where}'s head {facts.head[:12]} is not the tested commit "
                                            f"{ask.commit[:12]}; waiting for its own MergeJob or a person")]
    latest = latest_reviews([r for r in facts.reviews if counts(r, ask.reviewers)])
    asking = [r for r in latest.values() if r.state == "CHANGES_REQUESTED" and r.commit == ask.commit]
    if asking:
        r = asking[0]
        reasons = tuple(_cut(x) for x in (r.body, *r.comments[:MAX_REVIEW_COMMENTS]) if x.strip())
        return [*out, RequestChanges(r.user, reasons or ("(the review gave no text)",))]
    if ask.auto_merge:
        return [*out, *_auto_merge(ask, facts, where)]
    approvals = sum(1 for r in latest.values() if r.state == "APPROVED")
    stale = [r.user for r in latest.values() if r.state == "CHANGES_REQUESTED"]
    if approvals < ask.approvals_required or stale:
        why = (f"{', '.join(sorted(stale)[:5])} asked for changes on an earlier commit; " if stale else "")
        return [*out, Wait("AwaitingForge", f"{where}: {why}waiting for approval ({approvals} of "
                                            f"{ask.approvals_required})")]
    if facts.mergeable is None:
        return [*out, Wait("AwaitingForge", f"{where} is approved; the forge is still computing its mergeability")]
    if not facts.mergeable:
        return [*out, Wait("AwaitingForge", f"{where} is approved but not mergeable "
                                            f"({facts.mergeable_state or 'no reason given'})")]
    return [*out, Merge(facts.number, ask.merge_method, ask.commit)]


def _auto_merge(ask: Ask, facts: PullFacts, where: str) -> list[Effect]:
    """The rows of the hand-off table (module docstring): the pull request is open, its head is the tested commit
    and no reviewer who counts asks for changes on it."""
    waiting = Wait("AutoMerge", f"{where} is handed to the forge's auto-merge ({ask.auto_merge}); the forge merges "
                                "it when its own rules (required reviews and checks) pass")
    if facts.auto_merge:
        return [waiting]
    if ask.handed:
        return [Fail("AutoMergeDisabled", f"{where}: the forge turned auto-merge off (merge state: "
                                          f"{facts.mergeable_state or 'none given'}); re-enable it on the forge and "
                                          "merge it there, or close it and run the task again")]
    return [EnableAutoMerge(facts.number, facts.node_id, ask.auto_merge or "merge", ask.commit), waiting]


MAX_STATUS_DESCRIPTION: Final = 140
"""GitHub's limit on a commit status description."""


def failed_step(output: str, steps: Sequence[str]) -> str | None:
    """The gate step that failed, as the tester's result names it (``step <name> failed``): the first of ``steps``
    (the build's own step names, never text from the output) whose failure line the output holds. Linear: one
    substring search per step name."""
    for name in steps:
        if f"step {name} failed" in output:
            return name
    return None


def failure_status(*, commit: str, facts: PullFacts, step: str | None) -> PostStatus | None:
    """A gate that failed on ``commit`` goes on the pull request as a ``failure`` status when the pull request is open
    and its head is that commit (a fixer's push to a pull request's branch whose gate failed); else nothing (no pull
    request, or its head is another commit, which has its own status). The description names the failing step, by
    its name from the spec, bounded; it carries no output (the output may hold anything).

    ============ ============== =================================
    pull request head           effect
    ============ ============== =================================
    none/closed  -              none
    open         other commit   none
    open         ``commit``     PostStatus(failure, "... step X")
    ============ ============== =================================
    """
    if not facts.exists or facts.state != "open" or facts.merged or not commit or facts.head != commit:
        return None
    text = (f"the quality gate failed at step {step} as it would land" if step
            else "the quality gate failed as it would land")
    return PostStatus(commit, "failure", text[:MAX_STATUS_DESCRIPTION])


def merge_outcome(number: int, merged: bool, commit: str | None, message: str) -> Effect:
    """What a merge request's answer means: merged (with its commit), or refused by the forge (405/409: branch
    protection, required checks, a moved head) -- keep waiting with the forge's own words."""
    where = f"pull request #{number}"
    if merged and commit:
        return Landed(commit, f"{where} merged by the forge as {commit[:12]}")
    if merged:
        return Wait("AwaitingForge", f"{where} merged; waiting for the forge to name its merge commit")
    return Wait("ForgeRefusedMerge", f"the forge refused to merge {where}: {message[:500] or 'no reason given'}")
