#!/usr/bin/env python3
"""Benchmark of the large-handoff path (``runtime.handoffs.fetch_from``): peak memory of fetch + parse.

Run: ``.venv/bin/python hack/bench_handoff.py``. Builds a repository holding planner handoffs (many small tasks,
the shape that is most expensive to parse) and fetches each through a pointer in a fresh process, printing wall
time and the process's peak RSS (VmHWM; git's own memory is bounded by ``core.bigFileThreshold``):

* plans just under the limit (``MAX_HANDOFF_BYTES``, 8 MiB): 1,000 long tasks (fetched, parsed, validated) and
  79,000 small ones (parsed, refused before validation: more than ``MAX_PLAN_TASKS``);
* a 36 MiB plan announced honestly: refused before anything is fetched;
* the same 36 MiB blob behind a pointer that says 2,000 bytes: the blob's size is read from git, it is refused
  unread;
* with ``--unbounded``: the 36 MiB plan read and parsed whole, as before the limits (for comparison).

Figures only, no assertion.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from longshot.api import handoff as ho

ENV = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.com", "GIT_COMMITTER_NAME": "a",
       "GIT_COMMITTER_EMAIL": "a@example.com", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}

MEASURE = """
import json, sys, time
from longshot.api import handoff as ho
from longshot.runtime import handoffs

def peak_mib():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024

url, pointer, mode = sys.argv[1], ho.HandoffPointer.model_validate_json(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
if mode == "bounded":
    result = handoffs.fetch_from(url, None, pointer)
else:  # the path before the limits: fetch everything, read the blob whole, parse
    import subprocess, tempfile
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["git", "init", "-q", "--bare", tmp], check=True)
        subprocess.run(["git", "-C", tmp, "fetch", "-q", "--depth=1", url, pointer.ref], check=True)
        data = subprocess.run(["git", "-C", tmp, "cat-file", "blob", "FETCH_HEAD:handoff.json"], check=True,
                              capture_output=True).stdout
    import json as j
    raw = j.loads(data)
    try:
        result = ho.Handoff.model_validate(raw)
    except Exception as e:
        result = e
outcome = (f"{len(result.tasks)} tasks" if isinstance(result, ho.Handoff) else f"refused: {str(result)[:90]}")
print(json.dumps({"seconds": time.perf_counter() - start, "outcome": outcome, "self_mib": peak_mib()}))
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, env=ENV, capture_output=True,
                          text=True).stdout.strip()


def plan(task: str, size: int, description: str = "split the work into a small piece " * 2) -> bytes:
    head = json.dumps({"kind": "Handoff", "protocol": ho.PROTOCOL_VERSION, "task": task, "attempt": 1,
                       "role": "planner", "outcome": "succeeded"})[:-1] + ', "tasks": ['
    parts, n, total = [head.encode()], 0, len(head)
    while True:
        item = json.dumps({"name": f"t{n}", "description": description}).encode()
        if total + len(item) + 3 > size:
            break
        parts.append(item if n == 0 else b"," + item)
        total += len(parts[-1])
        n += 1
    parts.append(b"]}")
    return b"".join(parts)


def publish(repo: Path, ref: str, data: bytes) -> str:
    git(repo, "checkout", "-q", "--orphan", f"b{abs(hash(ref))}")
    git(repo, "rm", "-rq", "--cached", "--ignore-unmatch", ".")
    (repo / ho.HANDOFF_FILE).write_bytes(data)
    git(repo, "add", ho.HANDOFF_FILE)
    git(repo, "commit", "-qm", "handoff")
    git(repo, "update-ref", ref, "HEAD")
    return git(repo, "rev-parse", "HEAD")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unbounded", action="store_true", help="also run the path before the limits")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=ENV)
        allowed = plan("t", ho.MAX_HANDOFF_BYTES - 1024, "describe the piece of work in detail " * 226)
        many = plan("t", ho.MAX_HANDOFF_BYTES - 1024)
        bomb = plan("t", 36 * 1024 * 1024)
        cases = [
            ("8 MiB plan, 1,000 tasks (accepted)", "refs/longshot/handoffs/ns/b/t/1", allowed, len(allowed), "bounded"),
            ("8 MiB plan, 79,000 small tasks", "refs/longshot/handoffs/ns/b/t/5", many, len(many), "bounded"),
            ("36 MiB plan, honest pointer", "refs/longshot/handoffs/ns/b/t/2", bomb, len(bomb), "bounded"),
            ("36 MiB blob, pointer says 2000", "refs/longshot/handoffs/ns/b/t/3", bomb, 2000, "bounded"),
        ]
        if args.unbounded:
            cases.append(("36 MiB plan, no limits (before)", "refs/longshot/handoffs/ns/b/t/4", bomb, len(bomb), "old"))
        for what, ref, data, size, mode in cases:
            commit = publish(repo, ref, data)
            pointer = ho.HandoffPointer(ref=ref, commit=commit, sha256=ho.digest(data), size=size)
            out = subprocess.run([sys.executable, "-c", MEASURE, f"file://{repo}",
                                  pointer.model_dump_json(by_alias=True), mode], capture_output=True, text=True,
                                 check=True, env={**ENV, "PYTHONPATH": os.pathsep.join(sys.path)})
            r = json.loads(out.stdout)
            print(f"{what:36} {r['seconds']:6.2f} s  peak RSS {r['self_mib']:5.0f} MiB  {r['outcome']}")


if __name__ == "__main__":
    main()
