"""Deterministic object names.

Every name the operator creates is derived from names it already has, so an operator restarted at any
moment computes the same name again and the API server's ``AlreadyExists`` turns a repeated create into a
no-op: no double Pod, no double AgentTask.

Names are kept to 63 characters so they are also valid label values (``longshot.dev/task``) and DNS
labels. When the natural name is longer, it is cut and suffixed with 8 hex digits of its SHA-256, which
keeps distinct long names distinct.
"""

from __future__ import annotations

import hashlib

from longshot.api import handoff as _handoff

MAX_NAME = 63
"""Longest name produced: a label value and a DNS label are at most 63 characters."""
HASH_LEN = 8


def short_hash(text: str, length: int = HASH_LEN) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def fit(name: str, limit: int = MAX_NAME) -> str:
    """``name`` itself when it fits in ``limit`` characters, else a cut prefix plus ``-<hash>``.

    The result starts and ends with an alphanumeric character when ``name`` starts with one.
    """
    if len(name) <= limit:
        return name
    head = name[: limit - HASH_LEN - 1].rstrip("-.")
    return f"{head}-{short_hash(name)}"


def child_name(parent: str, local: str) -> str:
    """Name of an object derived from ``parent``: ``<parent>-<local>``, shortened to fit."""
    return fit(f"{parent}-{local}")


def pod_name(task: str, attempt: int) -> str:
    """Name of the Pod of ``attempt`` (from 1) of the AgentTask ``task``: ``<task>-a<N>``."""
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, not {attempt}")
    suffix = f"-a{attempt}"
    if len(task) + len(suffix) <= MAX_NAME:
        return task + suffix
    # Keep the attempt suffix readable; hash the task name into the cut.
    head = task[: MAX_NAME - len(suffix) - HASH_LEN - 1].rstrip("-.")
    return f"{head}-{short_hash(task)}{suffix}"


def attempt_of(pod: str, task: str) -> int | None:
    """The attempt whose Pod is named ``pod`` (:func:`pod_name` of ``task``), or None when it is no such name."""
    head, sep, number = pod.rpartition("-a")
    if not sep or not head or not number.isdigit() or number.startswith("0"):
        return None
    return int(number) if pod_name(task, int(number)) == pod else None


def merge_job_name(task: str, attempt: int, *, first: bool) -> str:
    """Name of the MergeJob of the successful ``attempt`` of ``task``: the task's own name for its first MergeJob,
    ``<task>-a<N>`` (as its Pod) for one made after a relaunch, so it never collides with the earlier one."""
    return task if first else pod_name(task, attempt)


# --- refs ------------------------------------------------------------------------------------------------
#
# Every ref Longshot writes into a repository carries the build's namespace, so two builds of the same name in
# two namespaces (two tenants on one repository) never share a branch or a handoff ref:
#
#   task branch        longshot/<namespace>/<build>/<task>
#   candidate branch   longshot/<namespace>/<build>/<candidate task>          (a best-of-N candidate: a task)
#   queue branch       longshot/<namespace>/<build>/_queue/<batch>/<position>
#   pull branch        longshot/<namespace>/<build>/_pull                     (per: build delivery)
#   handoff ref        refs/longshot/handoffs/<namespace>/<build>/<task>/<attempt>
#
# A namespace is a DNS label (at most 63 characters) and a build or task name a DNS subdomain (at most 253), so
# every component stays under the 255 bytes a loose ref's file name may have and the whole ref well under the
# gateway's 1,024 (``gateway.refpolicy.valid_ref``). The handoff ref is defined in ``api.handoff`` (the agent
# reads the protocol module and may not import ``core``); :func:`handoff_ref` here is the same function.

BRANCH_ROOT = "longshot"
"""Every branch Longshot writes lies under ``refs/heads/longshot/``."""
QUEUE_BRANCH_DIR = "_queue"
"""The directory of a build's speculative queue branches (a task name never starts with ``_``)."""
PULL_BRANCH_LEAF = "_pull"
"""The build branch of ``spec.merge.pullRequest.per: build`` (a task name never starts with ``_``)."""
HANDOFF_REF_PREFIX = _handoff.HANDOFF_REF_PREFIX


def build_branch_prefix(namespace: str, build: str) -> str:
    """Where every branch of the build lies: ``longshot/<namespace>/<build>/`` (without ``refs/heads/``)."""
    if not namespace or not build:
        raise ValueError(f"a build branch needs a namespace and a build name, not {namespace!r}/{build!r}")
    return f"{BRANCH_ROOT}/{namespace}/{build}/"


def task_branch(namespace: str, build: str, task: str) -> str:
    """The branch of a task (a worker's work, a candidate's, a fixer's own): ``longshot/<ns>/<build>/<task>``."""
    return build_branch_prefix(namespace, build) + task


def queue_branch(namespace: str, build: str, batch_id: str, position: int) -> str:
    """The branch of a speculative commit: ``longshot/<ns>/<build>/_queue/<batch>/<position>``."""
    return f"{build_branch_prefix(namespace, build)}{QUEUE_BRANCH_DIR}/{batch_id}/{position}"


def pull_branch(namespace: str, build: str) -> str:
    """The build branch of ``per: build`` delivery: ``longshot/<ns>/<build>/_pull``, the head of the build's one pull
    request; the merge queue lands each tested candidate on it instead of on the base branch."""
    return build_branch_prefix(namespace, build) + PULL_BRANCH_LEAF


handoff_ref = _handoff.handoff_ref
"""``refs/longshot/handoffs/<namespace>/<build>/<task>/<attempt>``: where an attempt stores a large handoff."""
