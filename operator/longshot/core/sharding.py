"""Which replica works on which repository: balanced rendezvous hashing. Pure.

Every replica of the operator renews a *member* Lease; the live members are those whose Lease is not expired.
Work is sharded by tenant and repository: a shard is one tenant's use of a repository (namespace, credentials
Secret and URL: ``workspace.tenant_key``), its merge queues and every build of that tenant that targets it. Each
replica computes the same :func:`assign` from the same inputs (the active shards it sees and the live members)
and campaigns only for the shard Leases assigned to it; the shard Lease, not this computation, decides who
works (two replicas with briefly different views can never both hold a shard).

:func:`assign` is rendezvous (highest-random-weight) hashing with bounded loads: each shard, in sorted order,
goes to the member with the highest ``hash(shard, member)`` that is below its cap: ``shards // members + 1``
while fewer than ``shards % members`` members hold that many, ``shards // members`` after. The result is balanced
(any two members' loads differ by at most one: four repositories on three replicas are 2, 1 and 1, never 2, 2 and
0, which left a replica idle) and stable: a member joining or leaving moves only a few shards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping


def _weight(shard: str, member: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{shard}\0{member}".encode()).digest()[:8], "big")


def assign(shards: Iterable[str], members: Iterable[str]) -> dict[str, str]:
    """``{shard: member}`` for every shard; empty when there are no members."""
    ms = sorted(set(members))
    ss = sorted(set(shards))
    if not ms:
        return {}
    floor, extra = divmod(len(ss), len(ms))
    load = dict.fromkeys(ms, 0)
    full = 0  # members holding floor + 1 shards: at most ``extra`` of them, or another member would go short
    out: dict[str, str] = {}
    for s in ss:
        cap = floor + 1 if full < extra else floor
        for m in sorted(ms, key=lambda m: (-_weight(s, m), m)):
            if load[m] < cap:
                out[s] = m
                load[m] += 1
                full += load[m] == floor + 1
                break
    return out


def mine(assignment: Mapping[str, str], member: str) -> set[str]:
    """The shards assigned to ``member``."""
    return {s for s, m in assignment.items() if m == member}


def owner(shard: str, members: Iterable[str]) -> str | None:
    """The member with the highest ``hash(shard, member)``, whatever the other shards: the one that adopts ``shard``
    when it is orphaned (``controllers.leadership``). :func:`assign` depends on the whole set of shards, so two
    replicas whose views of that set differ (one still holding a build the other saw deleted) can each assign a new
    shard to the other, and nobody campaigns; this depends only on the members, which both read from the same
    Leases."""
    ms = set(members)
    if not ms:
        return None
    return min(ms, key=lambda m: (-_weight(shard, m), m))
