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
