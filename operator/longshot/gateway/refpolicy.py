"""Which refs one agent attempt may update through the gateway (pure).

An attempt may update exactly:

* its own branch, ``refs/heads/<TaskInput.branch>``, when its role writes code (``worker``, ``fixer``) and
  that branch lies under ``refs/heads/longshot/<namespace>/<build>/`` (a fixer's branch is the one it fixes,
  which the operator named there too; ``core.names`` lists every ref Longshot writes);
* its handoff ref, ``refs/longshot/handoffs/<namespace>/<build>/<task>/<attempt>`` (any role: large handoffs
  travel there).

The namespace in both keeps two tenants' builds of one name on one repository apart.

Creating and (force-)updating those two is allowed; deleting any ref, and touching any other ref, is
refused with a reason the agent sees in git's ``! [remote rejected] <ref> (<reason>)``.

What a clone or fetch advertises (:func:`read_config`): every ref but the other tasks' branches of the build
(``refs/heads/longshot/<namespace>/<build>/``), apart from those the attempt reads: its own branch and its base
branch (``gitserve.read_env``; a reviewer, who may judge candidates, sees them all). A repository holds a branch
per task of every build, and a clone of each took them all (a 1,000-agent run: 11,594 objects and 1,151 refs where
its base branch held 5,112 objects).
The commits at their tips may still be fetched by id (``uploadpack.allowTipSHA1InWant``): hiding is not a secret
between one build's tasks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from longshot.core import names
from longshot.gateway import pktline

WRITING_ROLES = frozenset({"worker", "fixer"})
_BAD_REF = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|//|@\{|/\.|\.lock(/|$)")


def valid_ref(ref: str) -> bool:
    """Whether ``ref`` is a full ref name git accepts (``git check-ref-format`` rules, strictly)."""
    return (ref.startswith("refs/") and len(ref) <= 1024 and not ref.endswith(("/", "."))
            and _BAD_REF.search(ref) is None)


@dataclass(frozen=True)
class RefPolicy:
    namespace: str
    build: str
    task: str
    attempt: int
    role: str
    branch: str | None
    """The attempt's branch (TaskInput ``branch``), without ``refs/heads/``."""

    @property
    def branch_ref(self) -> str | None:
        """The branch this attempt may push, or None (a reader role, or a branch outside the build's)."""
        if self.role not in WRITING_ROLES or not self.branch:
            return None
        ref = f"refs/heads/{self.branch}"
        if not ref.startswith("refs/heads/" + names.build_branch_prefix(self.namespace, self.build)) \
                or not valid_ref(ref):
            return None
        return ref

    @property
    def handoff_ref(self) -> str:
        return names.handoff_ref(self.namespace, self.build, self.task, self.attempt)

    @property
    def allowed(self) -> tuple[str, ...]:
        return tuple(r for r in (self.branch_ref, self.handoff_ref) if r)

    def check(self, command: pktline.Command) -> str | None:
        """Why ``command`` is refused, or None when it may go ahead."""
        if not valid_ref(command.ref):
            return "invalid ref name"
        if command.is_delete:
            return "deleting refs is not allowed for agents"
        if command.ref in self.allowed:
            return None
        mine = " or ".join(self.allowed)
        return f"agents may only update {mine}; the merge queue updates the other branches"

    def decide(self, commands: Iterable[pktline.Command]) -> list[tuple[str, str | None]]:
        """``(ref, reason or None)`` per command; when any is refused, the others are refused with it
        (a push goes through whole or not at all)."""
        results = [(c.ref, self.check(c)) for c in commands]
        if any(reason for _, reason in results):
            return [(ref, reason or "not updated: another ref of this push was refused") for ref, reason in results]
        return results


def scope_env(policy: RefPolicy, *, enforce: bool, scope: Iterable[str], base_branches: Iterable[str],
              stack_commits: Iterable[str]) -> dict[str, str]:
    """The ``pre-receive`` hook's environment for ``spec.scope.enforce`` (:mod:`longshot.gateway.hook`): the
    task's scope, the branch it guards, and what the task started from (its base branches and, stacked, its
    dependencies' commits), whose commits are not the task's. Empty when nothing is enforced: the build does
    not enforce, the task has no scope, or the attempt pushes no branch."""
    entries = list(scope)
    if not enforce or not entries or policy.branch_ref is None:
        return {}
    bases = [f"refs/heads/{b}" for b in dict.fromkeys(base_branches) if b and valid_ref(f"refs/heads/{b}")]
    commits = [c for c in stack_commits if re.fullmatch(r"[0-9a-f]{7,64}", c)]
    return {"LONGSHOT_GATEWAY_SCOPE": json.dumps(entries), "LONGSHOT_GATEWAY_SCOPE_REF": policy.branch_ref,
            "LONGSHOT_GATEWAY_SCOPE_BASE": " ".join([*bases, *commits])}


def read_config(namespace: str, build: str, visible: Iterable[str]) -> list[tuple[str, str]]:
    """git config entries (``uploadpack.*``) for a clone or fetch of an attempt of ``namespace/build``: the build's
    task branches hidden from its advertisement, except ``visible`` (branch names without ``refs/heads/``: its own
    and its base branch). Pure."""
    try:
        prefix = "refs/heads/" + names.build_branch_prefix(namespace, build)
    except ValueError:
        return []
    shown = sorted(_under(prefix, visible))
    return ([("uploadpack.hideRefs", prefix.rstrip("/"))] + [("uploadpack.hideRefs", f"!{ref}") for ref in shown]
            + [("uploadpack.allowTipSHA1InWant", "true")])


def _under(prefix: str, branches: Iterable[str]) -> set[str]:
    return {f"refs/heads/{b}" for b in branches if b and f"refs/heads/{b}".startswith(prefix)
            and valid_ref(f"refs/heads/{b}")}
