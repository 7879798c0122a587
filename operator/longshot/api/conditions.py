"""Condition types and reasons of the three resources, and the one pure setter.

Conditions follow the Kubernetes API conventions: ``status.conditions`` is a list keyed by ``type``; each
entry has ``status`` (True/False/Unknown), a CamelCase ``reason``, a human ``message``, the
``observedGeneration`` it was computed for and ``lastTransitionTime``, which changes only when ``status``
flips. ``status.phase`` is the state of the resource's state machine in ``core/`` (written with the conditions in
the same fenced status write, and read back by the operator: it is the decider's state); for people and tools it
is a summary for display, and what to decide on is the conditions.

Every type and reason lives here, with what it means, so that ``docs/conditions.md`` and the code agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from longshot.api import timeutil

TRUE: Final = "True"
FALSE: Final = "False"
UNKNOWN: Final = "Unknown"

# --- condition types ---------------------------------------------------------------------------------

# BuildRequest
PLANNED = "Planned"
"""The planner's task list was accepted and worker AgentTasks exist."""
PROGRESSING = "Progressing"
"""Tasks are being worked on; False when the build is idle, suspended or finished."""
MERGED = "Merged"
"""Every successful task branch is merged into the target branch."""
FINALIZED = "Finalized"
"""The finalization phase result: True/Passed, False/<why>, Unknown/InProgress."""
READY = "Ready"
"""True only when the object reached its goal: the build succeeded (every planned task succeeded and every
branch merged), the task succeeded, the branch merged. False while working and on failure (kstatus)."""
STALLED = "Stalled"
"""True when the object cannot make progress without a person: a terminal failure (the reason says which), or a
wait on a person (Configuration, AuthFailed, BudgetExceeded, TaskBlocked). kstatus reports it as Failed."""
RECONCILING = "Reconciling"
"""True while the operator is working towards the goal (planning, running, merging, finalizing)."""
SUSPENDED = "Suspended"
"""``spec.suspend`` is set: no new agent Pods start (on an AgentTask, its running attempt was stopped too)."""
BUDGET_EXCEEDED = "BudgetExceeded"
"""The token or cost budget is spent: no new agent Pods start until the budget is raised."""
HALTED = "Halted"
"""The operator-wide killswitch is engaged: every agent Pod was stopped."""

# AgentTask
SUCCEEDED = "Succeeded"
"""The task's last attempt produced a valid handoff (True) or the task failed for good (False)."""
RUNNING = "Running"
"""An attempt's Pod exists and has not finished."""
AUTHENTICATED = "Authenticated"
"""False when the agent could not authenticate to the model or git server; needs a person."""
BLOCKED = "Blocked"
"""True when a dependency failed or was cancelled: the task cannot start until it is retried and succeeds."""
AWAITING_INPUT = "AwaitingInput"
"""True when the agent asked a person a question (``status.question``); a new ``spec.answer`` starts the next
attempt with the question and the answer in its prompt."""
ADMITTED = "Admitted"
"""True once dispatch admitted the task's attempt (its Pod was made); False with ``WaitingForCapacity`` while its
Pod would not run now (its place in the line and its namespace's share in the message), ``InsufficientCapacity``
when it fits on no node agent Pods may use, ``TenantLimit`` or ``TokensPerHour`` while its namespace is at the limits
the platform team set for it (``admission.tenants``, its ResourceQuotas)."""
HELD_REASONS = ("WaitingForCapacity", "InsufficientCapacity", "TenantLimit", "TokensPerHour")
"""The reasons of an ``Admitted=False`` condition that dispatch's line writes (``Context.admission_line``)."""

# MergeJob
QUEUED = "Queued"
"""The job waits in its repository's merge queue."""
CONFLICTED = "Conflicted"
"""The branch does not merge cleanly; ``status.conflictingFiles`` lists the files."""
GATES_PASSED = "GatesPassed"
"""The candidate passed the build's quality gate as it would land (target tip plus the candidates ahead)."""
AWAITING_APPROVAL = "AwaitingApproval"
"""True when the build requires approval (``spec.merge.requireApproval``) and the branch passed its checks: it
joins no batch until someone sets the MergeJob's ``spec.approved`` to true."""
AWAITING_FORGE = "AwaitingForge"
"""True while a candidate that passed its gate waits on the forge (``spec.merge.delivery: pullRequest``): for the
pull request's approvals, its mergeability under branch protection, or the forge's merge; the message says which."""
CHECKS_PASSED = "ChecksPassed"
"""The branch passed the per-branch checks before it may join a batch: the secret scan of every commit and,
for the ``strict`` profile, a reviewer's approval."""

# BuildSchedule
MISSED_RUNS = "MissedRuns"
"""True when a run of the schedule did not start: past ``startingDeadlineSeconds`` (MissedStartingDeadline) or one
of more than 100 missed at once (TooManyMissedRuns); False/OnTime otherwise."""

BUILD_REQUEST_TYPES = (READY, STALLED, RECONCILING, PLANNED, PROGRESSING, MERGED, FINALIZED)
AGENT_TASK_TYPES = (READY, STALLED, RECONCILING, SUCCEEDED, RUNNING, AWAITING_INPUT)
MERGE_JOB_TYPES = (READY, STALLED, RECONCILING, QUEUED, CHECKS_PASSED, AWAITING_APPROVAL, GATES_PASSED, MERGED,
                   CONFLICTED, AWAITING_FORGE)
BUILD_SCHEDULE_TYPES = (READY, STALLED, MISSED_RUNS)

# --- reasons ------------------------------------------------------------------------------------------

REASONS: dict[str, str] = {
    "Pending": "Waiting for something that has not happened yet (a plan, a Pod, a queue slot).",
    "WaitingForCapacity": "The task is ready but its Pod would not run now: it waits in line for room on the nodes "
                          "(or its namespace's limit); the message says its place and its namespace's share.",
    "InsufficientCapacity": "The task's Pod requests more than any node agent Pods may use offers (or its "
                            "namespace's whole limit): lower its resources or add nodes.",
    "TenantLimit": "The task is ready but its namespace is at a limit the platform team set (maxAgents, cpu or memory "
                   "in admission.tenants, or its ResourceQuotas): it starts when the namespace's own agents end.",
    "TokensPerHour": "The task is ready but its namespace used its tokensPerHour (admission.tenants) in the last "
                     "hour: it starts as the hour moves on.",
    "Admitted": "Dispatch admitted the attempt: its Pod was made.",
    "Withdrawn": "The attempt's Pod found no node for longer than the grace: it was deleted and the task went back "
                 "in line, without counting a failure.",
    "InProgress": "Work is under way.",
    "PlanAccepted": "The planner's task list was validated and its AgentTasks created.",
    "PlanRejected": "The planner's task list was invalid (unknown dependency, cycle, empty or too large).",
    "TasksRunning": "At least one AgentTask is running or waiting to run.",
    "Idle": "No task is running or waiting.",
    "Suspended": "spec.suspend is true.",
    "Relaunched": "A new spec.retryToken stopped the running attempt; a new one starts.",
    "BudgetExceeded": "The build's token or cost budget is spent.",
    "Killswitch": "The operator-wide killswitch is engaged.",
    "Passed": "Finalization passed: everything is merged and the final sweep passed.",
    "TestsFailed": "The final sweep's test command failed.",
    "UnmergedBranches": "Some successful task branches could not be merged.",
    "Cancelled": "The build or task was cancelled by a user.",
    "Disabled": "Finalization is disabled for this build.",
    "AllMerged": "Every successful task branch is merged.",
    "BranchesPending": "Some task branches are not merged yet.",
    "Completed": "The attempt produced a valid handoff.",
    "Failed": "The task failed and will not be retried.",
    "RetryScheduled": "The attempt failed and another one is scheduled after a backoff.",
    "AuthFailed": "The agent could not authenticate; fix the credentials Secret, then retry the task.",
    "InvalidHandoff": "The agent's handoff did not validate.",
    "PodRunning": "The attempt's Pod is running.",
    "WaitingForDependencies": "Some dependsOn tasks have not succeeded yet.",
    "Queued": "Waiting in the merge queue.",
    "MergeSucceeded": "The branch was merged and the target pushed.",
    "MergeConflict": "The branch conflicts with the target branch.",
    "GatesFailed": "The branch failed the secret scan or a quality gate.",
    "AlreadyMerged": "The branch was merged before (recognised after a restart); nothing was pushed twice.",
    "NotFastForward": "The fast-forward strategy cannot merge: the target moved past the branch's base.",
    "FixerCreated": "A fixer task was created for the conflicting files.",
    "Superseded": "A fixer task's branch replaced this one; its MergeJob carries the merge.",
    "Error": "An unexpected error; the message says what failed.",
    # kstatus-style summaries (Ready / Stalled / Reconciling)
    "Succeeded": "The object reached its goal.",
    "Planning": "The build's planner is working out the tasks.",
    "Working": "The build's tasks are running or waiting for a worker slot.",
    "Merging": "Every task finished; the merge queue is landing the remaining branches.",
    "Finalizing": "Finalization runs: draining the merge queue, retrying unmerged branches, the final sweep.",
    "TasksFailed": "Some planned tasks failed for good (or are blocked by failed dependencies).",
    "TaskBlocked": "A task needs a person (configuration, credentials or budget) before it can go on.",
    "TaskRetrying": "A task failed and waits for its next attempt; the message says why.",
    "Configuration": "The spec cannot work as written (a missing Secret or key, base branch or image, an invalid "
                     "URL); the message names the field and the fix. Editing the spec resumes.",
    "NotStalled": "Nothing needs a person.",
    "Finished": "Nothing more to do.",
    "DependencyFailed": "A dependency failed or was cancelled; the message names it.",
    "DependenciesReady": "Every dependency is done (merged, for merging roles).",
    "Resumed": "The cause of the stop was changed (spec edit, budget raised, spec.suspend set back to false): the "
               "task runs again.",
    "Testing": "The candidate is in a speculative batch whose quality gates run.",
    "Evicted": "The candidate broke its batch's quality gate; a fixer gets the failure.",
    "Requeued": "The candidate waits for another batch (its batch broke elsewhere or the target moved).",
    "SecretFound": "The secret scan found a credential in a commit of the branch.",
    "ScanTimedOut": "The secret scan of the branch did not finish within its deadline (scanTimeoutSeconds); a fixer "
                    "gets it, as for a found secret.",
    "DispatchFailed": "The dispatch plan of this build's tasks failed (the message names the error class); its "
                      "tasks do not start until it is fixed, and every other build dispatches as usual.",
    "ChangesRequested": "The reviewer asked for changes; a fixer gets the reasons.",
    "Reviewing": "A reviewer checks the branch before it may join a batch.",
    "NoFixer": "The failure cannot get a fixer: merge.maxFixers or the fix depth is used up.",
    # planning iterations, intake, best-of-N, awaits and people in the loop (docs/planning.md)
    "RequestMet": "The planner said the request is met (or the roadmap or issue list has nothing left): no more "
                  "planning iterations.",
    "NextIteration": "Every task of the iteration ended and its branches landed; the next iteration is planned.",
    "QuestionAsked": "The agent asked a person a question (status.question); answer it in spec.answer.",
    "Answered": "spec.answer answered the agent's question; the next attempt has both in its prompt.",
    "AwaitingInput": "A task waits for a person's answer to its agent's question.",
    "AwaitingApproval": "The branch passed its checks and waits for spec.approved (spec.merge.requireApproval).",
    "Approved": "spec.approved is true: the branch may join a batch.",
    "NotRequired": "Nothing to wait for (the build does not require it, or no question is open).",
    "FanningOut": "Candidates of a best-of-N task run, are gated and judged; only the winner is merged.",
    "Judged": "The judge picked the winning candidate; the reasons are in status.fanout.",
    "NoCandidatePassed": "Every candidate of a best-of-N task failed or failed its gate; status.fanout says why.",
    "HeartbeatLost": "The running attempt's agent stopped reporting for longer than the heartbeat bound; its Pod was "
                     "deleted and the attempt failed as Timeout.",
    "IntakeFailed": "Reading the roadmap file or the issue tracker failed; the message says why and what to do.",
    "RateLimited": "The issue tracker's rate limit is spent; the build reads it again when the limit resets.",
    "Watching": "A standing intake (spec.intake) polls its tracker and starts a child build per eligible issue; the "
                "message counts the eligible issues and the builds.",
    "BuildsRunning": "Child builds of a standing intake are not finished yet.",
    # delivery through pull requests (docs/merge-queue.md)
    "AwaitingForge": "The candidate passed its gate and waits on its pull request: approvals, branch protection or "
                     "the forge's merge (the message says which).",
    "PullRequestOpened": "The pull request of the branch was opened (or found open) and the gate's status posted.",
    "MergedOnForge": "The forge merged the pull request (by Longshot, a person or the forge's merge queue).",
    "ClosedWithoutMerge": "The pull request was closed without merging: the job failed.",
    "ForgeRefusedMerge": "The forge refused to merge (branch protection, 405/409); the job keeps waiting.",
    "ForgeError": "A forge API call failed; it is tried again at the next poll.",
    "AutoMerge": "The pull request is handed to the forge's auto-merge (spec.merge.pullRequest.autoMerge): the forge "
                 "merges it when its own rules (required reviews and checks) pass.",
    "AutoMergeRefused": "The forge refused to turn auto-merge on (the message has its words); asked again at the next "
                        "poll.",
    "AutoMergeDisabled": "The forge turned auto-merge off after Longshot handed the pull request over (a failed "
                         "pipeline, a person): the job failed with the forge's merge state as the reason.",
    "ForgeFailurePosted": "The candidate's gate failed on the head of an open pull request; a failure status "
                          "naming the failing step was posted on it.",
    # scheduled builds (docs/schedules.md)
    "Scheduled": "A BuildSchedule's expression and time zone work: the message gives the next run (and a run that "
                 "waits for an active child under concurrencyPolicy Forbid).",
    "InvalidSchedule": "spec.schedule of a BuildSchedule cannot be read or matches no time in five years; the message "
                       "names the field and what is wrong. Nothing runs until it is fixed.",
    "UnknownTimeZone": "spec.timeZone of a BuildSchedule is not in the operator's time zone database; nothing runs "
                       "until it names an IANA zone.",
    "OnTime": "No run of the schedule was missed.",
    "ChildRefused": "The API server refused a BuildSchedule's child build (an admission policy: egress, agent image, "
                    "RuntimeClass; or a label): the message has its answer. Tried again at every reconcile; fix "
                    "spec.buildTemplate.",
    "MissedStartingDeadline": "A run of the schedule did not start within spec.startingDeadlineSeconds (the operator "
                              "was down, the schedule suspended, or concurrencyPolicy Forbid held it).",
    "TooManyMissedRuns": "More than 100 runs of the schedule were missed; only the latest started. Set "
                         "spec.startingDeadlineSeconds to bound how late a run may start.",
}


now_utc = timeutil.utcnow
rfc3339 = timeutil.rfc3339


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    """The condition of this type, or None."""
    for c in conditions or ():
        if c.get("type") == type_:
            return c
    return None


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    c = find(conditions, type_)
    return c is not None and c.get("status") == TRUE


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    type_: str,
    status: str,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime,
) -> tuple[list[dict[str, Any]], bool]:
    """Return ``(new_conditions, changed)`` with the condition ``type_`` set.

    Pure: the input is not modified. ``lastTransitionTime`` is set to ``now`` only when the status
    flips (or the condition is new); a change of reason, message or generation alone keeps it.
    ``changed`` is False when the result equals the input, so callers can skip a no-op patch.
    """
    if status not in (TRUE, FALSE, UNKNOWN):
        raise ValueError(f"condition {type_}: status must be True, False or Unknown, not {status!r}")
    if reason and reason not in REASONS:
        raise ValueError(f"condition {type_}: reason {reason!r} is not documented in longshot.api.conditions")
    result = [dict(c) for c in conditions or ()]
    for i, old in enumerate(result):
        if old.get("type") != type_:
            continue
        new = dict(old)
        new.update(status=status, reason=reason, message=message)
        if observed_generation is not None:
            new["observedGeneration"] = observed_generation
        if old.get("status") != status or "lastTransitionTime" not in old:
            new["lastTransitionTime"] = rfc3339(now)
        if new == old:
            return result, False
        result[i] = new
        return result, True
    new = {"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": rfc3339(now)}
    if observed_generation is not None:
        new["observedGeneration"] = observed_generation
    result.append(new)
    return result, True


def since_creation(conditions: Iterable[Mapping[str, Any]], created: datetime | None) -> list[dict[str, Any]]:
    """The conditions, each without a ``lastTransitionTime`` given ``created`` (the object's creation time): the
    conditions of a CRD's default status (``initial_status`` of ``api.agenttask``, ``api.buildrequest`` and
    ``api.mergejob``) carry no time, and have held since the object was created."""
    conds = [dict(c) for c in conditions]
    if created is None or all("lastTransitionTime" in c for c in conds):
        return conds
    stamp = rfc3339(created)
    return [c if "lastTransitionTime" in c else {**c, "lastTransitionTime": stamp} for c in conds]
