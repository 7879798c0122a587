"""The label and annotation keys Longshot puts on objects: one table, imported by every layer.

Labels select (``kubectl get pods -l longshot.dev/build=demo``); annotations carry what does not fit a label
value. The recommended ``app.kubernetes.io/*`` labels mark what Longshot manages.
"""

from __future__ import annotations

from typing import Final

PREFIX: Final = "longshot.dev/"

# --- labels ----------------------------------------------------------------------------------------------
BUILD: Final = "longshot.dev/build"
"""The BuildRequest an AgentTask, agent Pod or MergeJob belongs to."""
TASK: Final = "longshot.dev/task"
"""The AgentTask an agent Pod runs (or a task's plan-local name on the AgentTask)."""
ATTEMPT: Final = "longshot.dev/attempt"
"""The attempt number an agent Pod runs."""
ROLE: Final = "longshot.dev/role"
"""The task's role (planner, worker, fixer, ...)."""
PARENT_TASK: Final = "longshot.dev/parent-task"
"""The subplanner that planned this task."""
ITERATION: Final = "longshot.dev/iteration"
"""The planning iteration that planned this task."""
REPLAN: Final = "longshot.dev/replan"
"""Which re-plan a top-level planner task is (absent on the first planner of a build)."""
PURPOSE: Final = "longshot.dev/purpose"
"""Why the operator made a task (a fixer, a gate's reviewer or tester, a best-of-N candidate or judge)."""
FANOUT_OF: Final = "longshot.dev/fanout-of"
"""The fanned-out task a best-of-N candidate or judge belongs to."""
BATCH: Final = "longshot.dev/batch"
"""The merge queue batch a MergeJob is part of."""
FIX_DEPTH: Final = "longshot.dev/fix-depth"
"""How many fixers deep a fixer is (fixers of fixers are bounded)."""
LEASE_KIND: Final = "longshot.dev/lease"
"""What a Lease elects (the operator, or one repository's merge queue)."""

# --- annotations -----------------------------------------------------------------------------------------
REDUCTION: Final = "longshot.dev/reduction"
"""On a best-of-N judge: how it reduces the candidates (``summarize``: it compares them all; absent: it picks)."""
PLAN_NAME: Final = "longshot.dev/plan-name"
"""A task's name in its plan (an AgentTask's name is made unique within the namespace)."""
TASK_INPUT: Final = "longshot.dev/task-input"
"""The TaskInput of a task the operator built from other objects."""
POSITION: Final = "longshot.dev/position"
"""A MergeJob's place in its queue."""
FIXES: Final = "longshot.dev/fixes"
"""The MergeJob or task a fixer fixes."""
QUEUE: Final = "longshot.dev/queue"
"""The merge queue (repository and target) of a MergeJob."""
MODEL: Final = "longshot.dev/model"
"""The model a best-of-N candidate runs."""
BACKEND: Final = "longshot.dev/backend"
"""The backend a best-of-N candidate runs (``fanout.backends``; written by the operator, like ``MODEL``)."""
CANDIDATE: Final = "longshot.dev/candidate"
"""A best-of-N candidate's name."""
TEST_COMMAND: Final = "longshot.dev/test-command"
"""The test command a tester Pod runs."""
MERGED_COUNT: Final = "longshot.dev/merged-count"
"""A BuildRequest's merged count as last announced (Events once per merge)."""
SWEEP_ITERATION: Final = "longshot.dev/sweep-iteration"
"""On an early final sweep: the planning iteration beside whose planner it began (``core.sweeps.early_sweep_kept``)."""
FINAL_ATTEMPT: Final = "longshot.dev/final-attempt"
"""On an early final sweep that finalization adopted: the attempt whose final sweep it is."""
ISSUE_COMMENT: Final = "longshot.dev/issue-comment"
"""The issue comment a build already posted."""
DESCRIPTION: Final = "longshot.dev/description"
"""A human description of an object the operator made."""

# --- app.kubernetes.io ----------------------------------------------------------------------------------
NAME: Final = "app.kubernetes.io/name"
INSTANCE: Final = "app.kubernetes.io/instance"
COMPONENT: Final = "app.kubernetes.io/component"
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
PART_OF: Final = "app.kubernetes.io/part-of"
OPERATOR: Final = "longshot-operator"
"""The ``app.kubernetes.io/managed-by`` value of what the operator makes."""
