#!/usr/bin/env python3
"""Every parser of untrusted text over maximum-size adversarial inputs, timed (docs/security.md).

Run: ``PYTHONPATH=operator .venv/bin/python hack/hostile_parsers.py``. Prints one line per input and, last,
``worst_parse_s=…``; the target is under 1 s. ``hack/bench_hostile.py`` imports :func:`worst_parse_s`.

The inputs are the shapes that made the old parsers backtrack (issue 29), at the largest size each parser accepts:

* secret scan: a line of ``token`` repeated in ``settings.yaml`` (2,000 bytes took 21 s, 4,000 bytes 144 s with
  Python's re), as one line piece (64 KiB), as a whole 1 MiB file scanned by ``scan_range`` in a real git
  repository, and a 1 MiB-plus blob of credential anchors (the byte-stream path); and text holding every
  keyword of every rule (gitleaks' and ours), so that every rule runs, as a line piece and as a blob chunk: repeated
  in a fixed order, and shuffled with random values (varied text: each rule's DFA keeps meeting new states);
* roadmap: one item line of 1 MiB of spaces before a last character (20,000 took 3.9 s), and the most items
  and lines;
* scope patterns: two scopes at the CRD bounds (128 entries of 32 segments) whose every entry pair is disjoint
  and costly, and the issue's ``"a/"*1000 + "x.py"`` (RecursionError before);
* handoff: a plan at the handoff size bound (8 MiB), and 8 MiB of brackets;
* tracker: a Link header of 64 KiB, an 8 MiB issue listing turned into tasks (parsed under its budget), and the
  refusal of 8 MiB answers shaped to amplify (``[],`` repeated, deep nesting, small objects).
"""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from longshot.api import boundedjson, common
from longshot.api import handoff as hmod
from longshot.core import roadmap, scheduler
from longshot.runtime import trackers
from longshot.vcs import secretrules, secretscan

ROADMAP_BYTES = 1024 * 1024  # vcs.speculate.MAX_ROADMAP_BYTES


CPU_S: list[float] = []
"""This process's CPU seconds of every timed parse (wall time on a loaded machine mostly measures the load)."""


def _timed(fn: Callable[[], object]) -> float:
    began, cpu = time.perf_counter(), time.process_time()
    fn()
    CPU_S.append(time.process_time() - cpu)
    return time.perf_counter() - began


def _git(repo: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@x",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo)}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def _scan_range_worst() -> dict[str, float]:
    """A commit adding a 1 MiB settings.yaml of one ``token`` line (the diff path, in 64 KiB pieces) and a blob of
    anchors just over the big-file threshold (the byte-stream path)."""
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        _git(repo, "init", "-q", "-b", "main")
        (repo / "README").write_text("x\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "base")
        base = _git(repo, "rev-parse", "HEAD")
        (repo / "settings.yaml").write_text("token" * (secretscan.BIG_FILE_THRESHOLD // 5 - 1) + "\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "line")
        line_head = _git(repo, "rev-parse", "HEAD")
        (repo / "blob.yaml").write_text("sk-" * (secretscan.BIG_FILE_THRESHOLD // 3 + 10))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "blob")
        blob_head = _git(repo, "rev-parse", "HEAD")
        return {
            "secretscan_file_1mib_token_line": _timed(lambda: secretscan.scan_range(repo, base, line_head)),
            "secretscan_blob_1mib_anchors": _timed(lambda: secretscan.scan_range(repo, line_head, blob_head)),
        }


EVERY_KEYWORD = ("{}= ", '{}="Ab3dE5gH7jK9mN1pQ3sT5" ', '"{}" + "')
"""Shapes of text around each keyword: an assignment without a value, one with a random value, joined literals."""


def _every_keyword(unit: str, size: int) -> str:
    """``unit`` around every keyword of every rule, repeated up to ``size`` characters: every rule runs on it."""
    words = sorted({k for r in secretrules.ruleset().rules for k in r.keywords})
    text = "".join(unit.format(k) for k in words)
    return (text * (size // len(text) + 1))[:size]


def _shuffled_keywords(size: int, seed: int = 1) -> str:
    """Every keyword of every rule in a random order, each after a random separator and before a random value:
    the varied text on which RE2's automata build the most states (costlier than a repetition of one unit)."""
    words = sorted({k for r in secretrules.ruleset().rules for k in r.keywords})
    letters = string.ascii_letters + string.digits + "_-=\"': ./+"
    pick = random.Random(seed)
    parts: list[str] = []
    length = 0
    while length < size:
        part = pick.choice(words) + pick.choice(("=", "_", "-", ":", '="', "'", " ")) + "".join(
            pick.choice(letters) for _ in range(pick.randint(0, 40)))
        parts.append(part)
        length += len(part)
    return "".join(parts)[:size]


def _worst_scope(i: int, tail: str) -> str:
    return "/".join(["x"] * (common.MAX_SCOPE_SEGMENTS - 1) + [f"*.{tail}{i}"])


def worst_parse_s() -> dict[str, float]:
    """Seconds each parser takes on its worst input at its size bound (see the module doc), by input."""
    piece = secretscan.LINE_PIECE
    out: dict[str, float] = {}
    out["secretscan_line_token_64kib"] = max(
        _timed(lambda p=p: secretscan.scan_line(p, 1, "token" * (piece // 5))) for p in ("settings.yaml", ".env"))
    out["secretscan_line_assignments_64kib"] = max(
        _timed(lambda line=line: secretscan.scan_line(".env", 1, line))
        for line in ("TOKEN=" * (piece // 6), "export " + "a_token" * (piece // 7), " " * piece + "x"))
    out["secretscan_chunk_1mib_anchors"] = max(
        _timed(lambda w=w: list(secretscan._RangeScan([], ".")._matches(w)))
        for w in ("sk-" * (secretscan.BLOB_CHUNK // 3), "eyJ" * (secretscan.BLOB_CHUNK // 3),
                  "aws_secret_access_key=" * (secretscan.BLOB_CHUNK // 22)))
    out["secretscan_line_every_keyword_64kib"] = max(
        _timed(lambda u=u: secretscan.scan_line("settings.yaml", 1, _every_keyword(u, piece))) for u in EVERY_KEYWORD)
    out["secretscan_line_shuffled_keywords_64kib"] = max(
        _timed(lambda s=s: secretscan.scan_line("settings.yaml", 1, _shuffled_keywords(piece, s))) for s in (1, 2))
    out["secretscan_chunk_every_keyword"] = max(
        _timed(lambda u=u: secretscan._RangeScan([], ".")._matches(_every_keyword(u, secretscan.BLOB_CHUNK),
                                                                    "settings.yaml"))
        for u in EVERY_KEYWORD)
    out["secretscan_chunk_shuffled_keywords"] = max(
        _timed(lambda s=s: secretscan._RangeScan([], ".")._matches(_shuffled_keywords(secretscan.BLOB_CHUNK, s),
                                                                    "settings.yaml"))
        for s in (3, 4))
    out.update(_scan_range_worst())
    out["roadmap_line_1mib_spaces"] = _timed(lambda: roadmap.plan("- [ ] x" + " " * (ROADMAP_BYTES - 9) + "y"))
    out["roadmap_most_items_and_lines"] = _timed(
        lambda: roadmap.plan(("- [ ] " + "a" * 150 + "\n") * roadmap.MAX_ITEMS
                             + "  b\n" * (roadmap.MAX_LINES - roadmap.MAX_ITEMS - 1)))
    a = tuple(_worst_scope(i, "a") for i in range(common.MAX_SCOPE_ENTRIES))
    b = tuple(_worst_scope(i, "b") for i in range(common.MAX_SCOPE_ENTRIES))
    scheduler._scope_cache.clear()
    out["scope_check_at_crd_bounds"] = _timed(lambda: scheduler.scope_check(a, b))
    deep = "a/" * 1000 + "x.py"
    scheduler.patterns_overlap.cache_clear()
    out["scope_issue_deep_entry"] = _timed(lambda: scheduler.patterns_overlap(deep, "**/" + deep))
    tasks = [{"name": f"t{i}", "description": "d" * 7800,
              "scope": [_worst_scope(j, str(i)) for j in range(2)]} for i in range(hmod.MAX_PLAN_TASKS)]
    plan = json.dumps({"kind": "Handoff", "task": "p", "role": "planner", "outcome": "succeeded",
                       "tasks": tasks}).encode()
    assert len(plan) <= hmod.MAX_HANDOFF_BYTES, len(plan)
    out["handoff_plan_8mib"] = _timed(lambda: hmod.parse_handoff_bytes(plan))
    brackets = b"[" * hmod.MAX_HANDOFF_BYTES

    def refused() -> None:
        try:
            hmod.parse_handoff_bytes(brackets)
        except hmod.HandoffError:
            return
        raise AssertionError("8 MiB of brackets was accepted")

    out["handoff_brackets_8mib"] = _timed(refused)
    out["tracker_link_header_64kib"] = _timed(lambda: trackers._link_next("<https://t/x>; rel=" + "a" * 65_000))
    body = "b " * 4000
    listing = [{"number": i, "title": "t" * 200, "body": body, "labels": [], "html_url": f"https://x/{i}"}
               for i in range(trackers.MAX_ISSUES)]
    data = json.dumps(listing).encode()
    assert len(data) <= trackers.MAX_RESPONSE_BYTES

    def listing_to_tasks() -> None:
        gh = trackers.GitHub(repository="o/r", token=None)
        try:
            issues = [gh._issue(item) for item in boundedjson.loads(data, trackers.PARSE_BUDGET)]
        finally:
            gh.close()
        trackers.issues_to_tasks(i for i in issues if i is not None)

    out["tracker_listing_8mib"] = _timed(listing_to_tasks)
    amplifying = {"arrays": b"[" + b"[]," * (trackers.MAX_RESPONSE_BYTES // 3 - 2) + b"[]]",
                  "deep": b"[" * (trackers.MAX_RESPONSE_BYTES // 2) + b"]" * (trackers.MAX_RESPONSE_BYTES // 2),
                  "objects": b"[" + b'{"a":{}},' * (trackers.MAX_RESPONSE_BYTES // 9 - 2) + b'{"a":{}}]'}

    def refused_unparsed(body: bytes) -> None:
        try:
            boundedjson.loads(body, trackers.PARSE_BUDGET)
        except boundedjson.Refused:
            return
        raise AssertionError("an amplifying tracker answer was parsed")

    out["tracker_amplifying_8mib"] = max(_timed(lambda b=b: refused_unparsed(b)) for b in amplifying.values())
    return out


def main() -> None:
    figures = worst_parse_s()
    for name, seconds in figures.items():
        print(f"{name:40} {seconds:8.3f} s")
    print(f"worst_parse_s={max(figures.values()):.3f} worst_parse_cpu_s={max(CPU_S):.3f}")


if __name__ == "__main__":
    main()
