"""The mirrors' ``pre-receive`` hook: ``python -m longshot.gateway.hook``, run by ``git receive-pack``.

stdin has one ``<old> <new> <ref>`` line per ref of the push. The hook

1. refuses any ref not in ``$LONGSHOT_GATEWAY_ALLOWED_REFS`` and any delete (the gateway checked the
   commands already; this is the second lock on the same door);
2. pushes the new commits to ``$LONGSHOT_GATEWAY_UPSTREAM_URL`` with the credential in its environment,
   each ref with ``--force-with-lease=<ref>:<old>`` (the upstream must still be where the agent saw it),
   atomically when there are several.

A non-zero exit makes receive-pack refuse every ref (``pre-receive hook declined``); what the hook prints
on stderr reaches the agent as ``remote: ...`` lines. Nothing it prints contains the credential: git does
not print extra headers, and URLs are printed without user info.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

ZERO = re.compile(r"^0+$")
USERINFO = re.compile(r"(://)[^/@\s]+@")


def main() -> int:
    url = os.environ.get("LONGSHOT_GATEWAY_UPSTREAM_URL", "")
    allowed = set(os.environ.get("LONGSHOT_GATEWAY_ALLOWED_REFS", "").split())
    timeout = float(os.environ.get("LONGSHOT_GATEWAY_GIT_TIMEOUT", "600"))
    if not url:
        print("longshot-gateway: no upstream for this push", file=sys.stderr)
        return 1
    updates = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    for update in updates:
        if len(update) != 3:
            print("longshot-gateway: malformed ref update", file=sys.stderr)
            return 1
        old, new, ref = update
        if ZERO.match(new):
            print(f"longshot-gateway: refusing to delete {ref}", file=sys.stderr)
            return 1
        if ref not in allowed:
            print(f"longshot-gateway: refusing {ref}: agents may only update {' or '.join(sorted(allowed))}",
                  file=sys.stderr)
            return 1
    if not updates:
        return 0
    args = ["git", "push", "--porcelain", "--no-verify"]
    if len(updates) > 1:
        args.append("--atomic")
    for old, _, ref in updates:
        args.append(f"--force-with-lease={ref}:{'' if ZERO.match(old) else old}")
    args += ["--", url, *[f"{new}:{ref}" for _, new, ref in updates]]
    try:
        # the quarantine marker would reach a local (file://) upstream's receive-pack and make it refuse
        # every ref update; the objects stay readable through GIT_OBJECT_DIRECTORY and its alternates
        env = {k: v for k, v in os.environ.items() if k != "GIT_QUARANTINE_PATH"}
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    except subprocess.TimeoutExpired:
        print(f"longshot-gateway: the push to the upstream repository did not finish within {timeout:g}s",
              file=sys.stderr)
        return 1
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()][-8:]
        print("longshot-gateway: the upstream repository refused the push:", file=sys.stderr)
        for line in lines:
            print("  " + USERINFO.sub(r"\1", line), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
