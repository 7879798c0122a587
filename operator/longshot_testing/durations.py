"""The integration tier's files, longest first: xdist's ``--dist loadfile`` hands a free worker the next file in
collection order, so a long file that comes last ends the tier alone. ``tests/integration/durations.json`` holds
the seconds each file last took (``hack/test_durations.py`` writes it from a run's JUnit XML); the tier's conftest
orders its files by it. Order is all the table changes: a wrong or missing figure costs time, never a result."""

from __future__ import annotations

import heapq
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path

DEFAULT_FILE_SECONDS = 30.0
"""A file not measured yet: about the median of the measured ones."""


def load(table: Path) -> dict[str, float]:
    """Seconds per file keyed by its path under tests/ (``integration/test_chaos.py``); {} when unreadable."""
    try:
        raw = json.loads(table.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def longest_first(paths: Iterable[str], seconds: dict[str, float]) -> list[str]:
    """The distinct files of ``paths``, longest first; ties keep their first-seen order."""
    order = list(dict.fromkeys(paths))
    return sorted(order, key=lambda p: -seconds.get(p, DEFAULT_FILE_SECONDS))


def makespan(seconds: Iterable[float], workers: int) -> float:
    """When the last of ``workers`` ends if each file, in this order, goes to the worker that is free first."""
    free = [0.0] * workers
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return max(free)


def file_of(classname: str, tests_dir: Path) -> str | None:
    """A JUnit classname (``tests.integration.test_x`` or ``tests.integration.test_x.TestY``) -> its file's path
    under ``tests_dir`` (``integration/test_x.py``), or None when no such file exists."""
    parts = classname.split(".")
    if parts and parts[0] == tests_dir.name:
        parts = parts[1:]
    for end in range(len(parts), 0, -1):
        path = tests_dir.joinpath(*parts[:end]).with_suffix(".py")
        if path.is_file():
            return path.relative_to(tests_dir).as_posix()
    return None


def seconds_by_file(xml_paths: Iterable[Path], tests_dir: Path, prefix: str = "integration/") -> dict[str, float]:
    """The summed ``time`` of each file's test cases (set-up and tear-down included, pytest's default
    ``junit_duration_report=total``), for files under ``prefix``."""
    out: dict[str, float] = {}
    for xml in xml_paths:
        for case in ET.parse(xml).getroot().iter("testcase"):
            path = file_of(case.get("classname", ""), tests_dir)
            if path is not None and path.startswith(prefix):
                out[path] = out.get(path, 0.0) + float(case.get("time") or 0)
    return out
