"""Listing and deleting a build's refs on the server (the clean-up of a deleted build, ``core.cleanup``).

Both go through the workspace of the build's tenant (``controllers.queue.Workspaces``): its credentials and
its egress guard, as the merge queue's fetches and pushes do. A deletion is a compare-and-swap per ref
(``--force-with-lease=<ref>:<listed commit>``): a ref someone pushed to after it was listed is not deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from longshot.vcs import workspace as ws

CHUNK: Final = 200
"""Refs per push (an argument list of a 10,000-ref build stays far under the system's limit)."""
MAX_REFS: Final = 100_000
"""Most refs read from one listing (a hostile server cannot make the operator hold more)."""


def list_refs(w: ws.Workspace, prefixes: Sequence[str]) -> list[tuple[str, str]]:
    """``(ref, object id)`` of every ref on the server under one of ``prefixes`` (full names ending in ``/``)."""
    if not prefixes:
        return []
    with w.locked():
        w.ensure()
    out = w.out("ls-remote", "--", "origin", *(p + "*" for p in prefixes))
    found: list[tuple[str, str]] = []
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if sha and ref.startswith(tuple(prefixes)) and not ref.endswith("^{}"):
            found.append((ref, sha))
            if len(found) >= MAX_REFS:
                break
    return found


def delete_refs(w: ws.Workspace, refs: Sequence[tuple[str, str]]) -> None:
    """Delete each ``(ref, object id)`` on the server if it still points there. Refusals are not raised: the
    caller lists again to see what is left (a push of many refs fails as a whole when any one of them is
    refused, while the others were deleted)."""
    with w.locked():
        w.ensure()
        for i in range(0, len(refs), CHUNK):
            chunk = refs[i:i + CHUNK]
            leases = [f"--force-with-lease={ref}:{sha}" for ref, sha in chunk]
            w.git("push", "--quiet", "--no-verify", "--porcelain", *leases, "origin", *(f":{ref}" for ref, _ in chunk),
                  check=False)
