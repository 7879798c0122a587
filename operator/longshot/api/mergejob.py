"""MergeJob (short name ``mj``): merging one task branch into the build's target branch."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import Field

from longshot.api import conditions as c
from longshot.api.buildrequest import MergeStrategy
from longshot.api.common import (
    CONDITIONS_SCHEMA_EXTRA,
    GIT_BRANCH,
    Condition,
    LocalObjectRef,
    Model,
    Timestamp,
)

CommitSha = Annotated[str, Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")]


class MergeJobSpec(Model):
    """Which branch to merge where, and how."""

    build_ref: LocalObjectRef
    """The BuildRequest the branch belongs to."""
    task_ref: LocalObjectRef
    """The AgentTask that produced the branch (the MergeJob's owner)."""
    branch: str = Field(min_length=1, max_length=255, pattern=GIT_BRANCH)
    """The task branch to merge."""
    commit: str | None = Field(default=None, min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    """The branch head the task reported; the merge uses exactly this commit."""
    target: str = Field(min_length=1, max_length=255, pattern=GIT_BRANCH)
    """Branch to merge into (the build's base branch)."""
    strategy: MergeStrategy = "rebase"
    """``fast-forward``, ``rebase`` or ``merge-commit``."""
    priority: int = Field(default=5, ge=1, le=10)
    """Queue order: higher first, then by arrival."""
    base_commit: str | None = Field(default=None, min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    """The target commit the branch's work started from."""
    stacked_on: list[CommitSha] = Field(default_factory=list, max_length=256)
    """For a task of a build with ``spec.dependencies: stacked``: the dependencies' commits its branch was built
    on before they merged. The job waits until every dependency of its task merged (and fails, naming it, when
    one never will); then only the branch's own commits (those not reachable from these) are replayed onto
    the target, which by then holds the dependencies' merged work."""
    approved: bool = False
    """Approval for a build with ``spec.merge.requireApproval``: the MergeJob waits at ``AwaitingApproval``
    until this is true. Ignored when the build does not require approval."""


class MergeAttempt(Model):
    """One try at merging the branch."""

    time: Timestamp | None = None
    """When the try ran."""
    result: str = Field(max_length=64)
    """Merged, Conflicted, GatesFailed or Error."""
    message: str | None = Field(default=None, max_length=4096)
    """Details."""


class BatchStatus(Model):
    """The speculative batch the job is being tested in."""

    id: str = Field(max_length=64)
    """Batch id (a hash of its base and members)."""
    position: int = Field(ge=1)
    """1-based position of this candidate in the batch."""
    base: str = Field(max_length=64)
    """Target commit the batch was built on."""
    commit: str = Field(max_length=64)
    """The speculative commit: the base plus the batch's candidates up to this one; what its gate tests."""


class PullRequestStatus(Model):
    """The pull request (GitHub) or merge request (GitLab) the job is delivered through
    (``spec.merge.delivery: pullRequest``)."""

    number: int = Field(ge=1)
    """Its number (GitHub) or iid (GitLab) in the project."""
    url: str | None = Field(default=None, max_length=2048)
    """Its web page."""
    head: str | None = Field(default=None, max_length=64)
    """The head commit the gate's status was posted on."""
    status_posted: bool = False
    """The gate's commit status is on ``head``."""
    auto_merge: bool = False
    """Longshot handed it to the forge's auto-merge (``spec.merge.pullRequest.autoMerge``)."""


class MergeJobStatus(Model):
    """Observed state of the merge, written by the merge queue leader."""

    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_SCHEMA_EXTRA)
    """Queued, Merged, Conflicted, Ready and friends."""
    phase: str | None = Field(default=None, max_length=64)
    """Summary for display: Queued, AwaitingApproval, Testing, AwaitingForge, Merged, Conflicted, Failed, Superseded."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The ``metadata.generation`` the operator last acted on."""
    queue_position: int | None = Field(default=None, ge=0)
    """Place in the repository's queue, 0 being next."""
    tested_commit: str | None = Field(default=None, max_length=64)
    """The commit whose quality gate passed and that was handed to the forge (``spec.merge.delivery:
    pullRequest``): the branch's head (``per: task``) or the candidate landed on the build branch (``per: build``);
    the forge is asked to merge exactly this head."""
    merged_commit: str | None = Field(default=None, max_length=64)
    """Commit on the target branch that contains the merge."""
    conflicting_files: list[str] = Field(default_factory=list, max_length=10_000)
    """Files that conflicted on the last try."""
    attempts: list[MergeAttempt] = Field(default_factory=list, max_length=50)
    """Tries so far."""
    checks: str | None = Field(default=None, max_length=16)
    """Per-branch checks before batching (secret scan, review): pending, passed or failed."""
    conflicts: int = Field(default=0, ge=0)
    """Conflicts with the target so far (retried up to merge.maxConflictRetries, then a fixer)."""
    conflict_base: str | None = Field(default=None, max_length=64)
    """Target head of the last conflict; the job is retried when the target moves past it."""
    errors: int = Field(default=0, ge=0)
    """Unexpected errors so far."""
    not_before: Timestamp | None = None
    """Earliest next try after an error."""
    batch: BatchStatus | None = None
    """The speculative batch the job is in (phase Testing)."""
    fixer: str | None = Field(default=None, max_length=253)
    """The fixer AgentTask that took the branch over."""
    pull_request: PullRequestStatus | None = None
    """The pull request the job is delivered through (phase AwaitingForge), when the build delivers that way."""


PENDING_TEXT: Final = "waiting for the operator"
INITIAL_CONDITIONS: Final[tuple[tuple[str, Literal["True", "False", "Unknown"], str, str], ...]] = (
    (c.READY, c.FALSE, "Pending", PENDING_TEXT),
    (c.STALLED, c.FALSE, "NotStalled", "nothing needs a person"),
    (c.RECONCILING, c.TRUE, "Pending", PENDING_TEXT),
)
"""The summary conditions of a MergeJob the operator has not looked at yet: (type, status, reason, message)."""


def initial_status() -> dict[str, Any]:
    """The status every MergeJob has from its creation: the CRD's default for ``status`` (see
    ``buildrequest.initial_status``): ``Reconciling=True``, so kstatus and Argo CD call it InProgress / Progressing
    until the operator writes its first status. No ``phase`` (the queue reads an unset phase as Queued), no
    ``observedGeneration`` and no ``lastTransitionTime`` (a default cannot carry them): :func:`seen` tells it."""
    return {"conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in INITIAL_CONDITIONS]}


def seen(status: MergeJobStatus) -> bool:
    """Whether the operator has written this job's conditions: every condition it writes carries a
    ``lastTransitionTime``; until then the job has the CRD's default status (:func:`initial_status`), whose
    conditions carry none, or no status at all."""
    return any(x.last_transition_time is not None for x in status.conditions)


MERGE_JOB_SPEC_RULES = [
    {
        "rule": "self.branch != self.target",
        "message": "branch must differ from target",
        "fieldPath": ".branch",
    },
    {
        "rule": "self.taskRef == oldSelf.taskRef && self.buildRef == oldSelf.buildRef",
        "message": "taskRef and buildRef are immutable",
        "fieldPath": ".taskRef",
    },
]
