"""The mirrors' ``pre-receive`` hook: ``python -m longshot.gateway.hook``, run by ``git receive-pack``.

stdin has one ``<old> <new> <ref>`` line per ref of the push. The hook

1. refuses any ref not in ``$LONGSHOT_GATEWAY_ALLOWED_REFS`` and any delete (the gateway checked the
   commands already; this is the second lock on the same door);
2. when ``$LONGSHOT_GATEWAY_SCOPE`` is set (a JSON list: the task's scope, its build has ``spec.scope.enforce``),
   refuses the push of ``$LONGSHOT_GATEWAY_SCOPE_REF`` (the task's branch) when a commit new to the task (not
   reachable from the ref's old value, nor from ``$LONGSHOT_GATEWAY_SCOPE_BASE``: the branches and commits the
   task started from) changes a file outside that scope, naming the files (:mod:`longshot.core.scope`). A
   merge of two parents counts the files where it differs from what git's own merge of those parents writes
   (``git merge-tree --write-tree``): what a conflict resolution or an "evil merge" wrote, not what a clean
   merge brought in. So a merge whose second parent is an old commit of the target, with a file reverted
   to that commit's version, counts that file (``git diff-tree -c`` did not: the file equals one parent).
   A merge of more than two parents is refused.
   Bounded: at most :data:`MAX_COMMITS` new commits, :data:`MAX_MERGES` of them merges, and
   :data:`MAX_DIFF_BYTES` of path names, within the git timeout; a push past a bound is refused, never let
   through unchecked;
3. pushes the new commits to ``$LONGSHOT_GATEWAY_UPSTREAM_URL`` with the credential of the 0600 git config
   file ``$LONGSHOT_GATEWAY_CREDENTIALS_FILE`` (included by that push only: the credential itself is in no
   environment, :func:`with_include`), each ref with ``--force-with-lease=<ref>:<old>`` (the upstream must
   still be where the agent saw it), atomically when there are several.

A non-zero exit makes receive-pack refuse every ref (``pre-receive hook declined``); what the hook prints
on stderr reaches the agent as ``remote: ...`` lines. Nothing it prints contains the credential: git does
not print extra headers, and URLs are printed without user info.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

ZERO = re.compile(r"^0+$")
USERINFO = re.compile(r"(://)[^/@\s]+@")
MAX_COMMITS = 10_000
"""Most new commits of one ref whose changes the scope check reads."""
MAX_DIFF_BYTES = 32 * 1024 * 1024
"""Most bytes of changed path names the scope check reads for one ref."""
MAX_MERGES = 100
"""Most new merge commits of one ref the scope check merges again (one ``git merge-tree`` each)."""
OID = re.compile(r"^[0-9a-f]{40,64}$")

CREDENTIALS_FILE = "LONGSHOT_GATEWAY_CREDENTIALS_FILE"
"""The hook's variable naming the git config file (0600) with the upstream credential, when there is one."""


def config_text(entries: list[tuple[str, str]]) -> str:
    """A git config file setting ``entries`` (``section.name``, value), each value quoted. Pure."""
    lines: list[str] = []
    for key, value in entries:
        section, _, name = key.partition(".")
        if not section or not name or "\n" in value or "\0" in value:
            raise ValueError(f"cannot write the git config entry {key!r}")
        quoted = value.replace("\\", "\\\\").replace('"', '\\"')
        lines += [f"[{section}]", f'\t{name} = "{quoted}"']
    return "\n".join(lines) + "\n"


def with_include(env: dict[str, str], path: str | None) -> dict[str, str]:
    """``env`` plus ``include.path=<path>`` through ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n`` (after the entries
    already there): git reads the file, the environment holds only its path. ``env`` as it is when ``path`` is
    None. Pure."""
    if not path:
        return env
    out = dict(env)
    count = int(out.get("GIT_CONFIG_COUNT") or 0)
    out[f"GIT_CONFIG_KEY_{count}"] = "include.path"
    out[f"GIT_CONFIG_VALUE_{count}"] = path
    out["GIT_CONFIG_COUNT"] = str(count + 1)
    return out


class ScopeCheckError(Exception):
    """The check could not be made within its bounds (the push is refused)."""


def _bounded(args: list[str], *, stdin: bytes | None, limit: int, deadline: float) -> bytes:
    """stdout of ``args``, killed past ``limit`` bytes or ``deadline`` (monotonic); raises ScopeCheckError."""
    with subprocess.Popen(args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), proc.kill)
        timer.start()
        try:
            if stdin is not None:
                threading.Thread(target=_feed, args=(proc, stdin), daemon=True).start()
            assert proc.stdout is not None
            out = bytearray()
            while chunk := proc.stdout.read(65536):
                out += chunk
                if len(out) > limit:
                    raise ScopeCheckError(f"more than {limit} bytes of changes to check")
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
    if time.monotonic() >= deadline:
        raise ScopeCheckError("the check did not finish within the git timeout")
    if code != 0:
        raise ScopeCheckError(f"{args[1]} failed (exit {code})")
    return bytes(out)


def _feed(proc: subprocess.Popen[bytes], data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        proc.stdin.close()
    except (OSError, ValueError):
        pass  # killed, or closed once the reader gave up: the reader reports why


def changed_paths(old: str, new: str, base: list[str], deadline: float) -> list[str]:
    """Paths changed by the commits reachable from ``new`` and not from ``old`` or ``base`` (a merge: the files
    where it differs from git's merge of its two parents), each once, in the order first seen."""
    not_from = ([] if ZERO.match(old) else [old]) + base
    lines = _bounded(["git", "rev-list", "--parents", "--ignore-missing", f"--max-count={MAX_COMMITS + 1}", new,
                      "--not", *not_from], stdin=None, limit=(MAX_COMMITS + 1) * 65 * 4,
                     deadline=deadline).decode().splitlines()
    if len(lines) > MAX_COMMITS:
        raise ScopeCheckError(f"more than {MAX_COMMITS} new commits")
    commits = [line.split() for line in lines if line.strip()]
    merges = [c for c in commits if len(c) > 2]
    if any(len(c) > 3 for c in merges):
        raise ScopeCheckError("a merge of more than two parents cannot be checked; merge one branch at a time")
    if len(merges) > MAX_MERGES:
        raise ScopeCheckError(f"more than {MAX_MERGES} new merge commits")
    out = bytearray()
    plain = [c[0].encode() for c in commits if len(c) <= 2]
    if plain:
        out += _bounded(["git", "diff-tree", "--stdin", "-r", "--root", "--no-commit-id", "--name-only", "-z"],
                        stdin=b"\n".join(plain) + b"\n", limit=MAX_DIFF_BYTES, deadline=deadline)
    for commit, first, second in merges:
        out += b"\0" + _merge_changes(commit, first, second, deadline, MAX_DIFF_BYTES - len(out))
    seen = dict.fromkeys(p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p)
    return list(seen)


def _merge_changes(commit: str, first: str, second: str, deadline: float, limit: int) -> bytes:
    """NUL-separated paths where merge ``commit`` differs from what ``git merge-tree`` makes of its parents
    (conflicted files included: their resolution is the pusher's)."""
    if limit <= 0:
        raise ScopeCheckError(f"more than {MAX_DIFF_BYTES} bytes of changes to check")
    with subprocess.Popen(["git", "merge-tree", "--write-tree", "--no-messages", first, second],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        try:
            out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise ScopeCheckError("the check did not finish within the git timeout") from None
    tree = out.split(b"\n", 1)[0].decode(errors="replace").strip()
    if proc.returncode not in (0, 1) or not OID.match(tree):  # 1: the merge has conflicts, the tree still made
        raise ScopeCheckError(f"git merge-tree failed (exit {proc.returncode})")
    return _bounded(["git", "diff-tree", "-r", "--no-commit-id", "--name-only", "-z", tree, commit], stdin=None,
                    limit=limit, deadline=deadline)


def check_scope(updates: list[list[str]], timeout: float) -> str | None:
    """Why the push is refused for its task's scope (one message), or None."""
    raw = os.environ.get("LONGSHOT_GATEWAY_SCOPE", "")
    if not raw:
        return None
    # imported here: the hook runs once per push, and most pushes have no scope to check (a third of its start-up)
    import json

    from longshot.core import scope as scopemod

    entries = [str(e) for e in json.loads(raw)]
    base = os.environ.get("LONGSHOT_GATEWAY_SCOPE_BASE", "").split()
    checked = os.environ.get("LONGSHOT_GATEWAY_SCOPE_REF", "")
    deadline = time.monotonic() + timeout
    for old, new, ref in updates:
        if ref != checked:
            continue  # the handoff ref carries the handoff, not the task's work
        try:
            paths = changed_paths(old, new, base, deadline)
        except ScopeCheckError as e:
            return f"refusing {ref}: its changes could not be checked against the task's scope ({e})"
        verdict = scopemod.outside(entries, paths)
        if verdict.count:
            return f"refusing {ref}: {scopemod.refusal(entries, verdict)}"
    return None


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
    refused = check_scope(updates, timeout)
    if refused:
        print(f"longshot-gateway: {refused}", file=sys.stderr)
        return 1
    args = ["git", "push", "--porcelain", "--no-verify"]
    if len(updates) > 1:
        args.append("--atomic")
    for old, _, ref in updates:
        args.append(f"--force-with-lease={ref}:{'' if ZERO.match(old) else old}")
    args += ["--", url, *[f"{new}:{ref}" for _, new, ref in updates]]
    try:
        # the quarantine marker would reach a local (file://) upstream's receive-pack and make it refuse
        # every ref update; the objects stay readable through GIT_OBJECT_DIRECTORY and its alternates
        env = {k: v for k, v in os.environ.items() if k not in ("GIT_QUARANTINE_PATH", CREDENTIALS_FILE)}
        env = with_include(env, os.environ.get(CREDENTIALS_FILE))
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
