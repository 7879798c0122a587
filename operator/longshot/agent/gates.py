"""The tester's quality gate run as named steps, and the coverage reports it reads.

Each step's command runs in the checkout as the tester's single command did (``/bin/sh -c``, its own process
group, killed as a group when the step's time is up, output capped); the steps run in order and the first that
fails stops the gate. A step with a coverage threshold then reads its report from the checkout:

* the path must resolve inside the checkout (symlinks included) and outside ``.git``, to a regular file of at most
  :data:`MAX_REPORT_BYTES`; anything else fails the step, naming why;
* Cobertura XML is not parsed as XML: the root ``<coverage>`` start tag is found in the first
  :data:`COBERTURA_HEAD_BYTES` and its ``lines-covered``/``lines-valid`` (else ``line-rate``) attributes read with
  a linear-time (RE2) pattern; a report that declares entities (``<!ENTITY``) is refused, so nothing is expanded;
* LCOV is read line by line (linear), summing the ``LF:`` (lines found) and ``LH:`` (lines hit) records.

Reports are the repository's (hostile) output: every failure is a failed step with a bounded message, never an
exception out of the runner.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import re2

from longshot.agent import errors, sandbox
from longshot.api.buildrequest import Coverage, GateStep

MAX_REPORT_BYTES = 16 * 1024 * 1024
"""Largest coverage report read (16 MiB); a larger one fails its step."""
COBERTURA_HEAD_BYTES = 64 * 1024
"""How much of a Cobertura report is searched for its root element."""
STEP_TAIL_CHARS = 2000
"""Output tail of a step kept in the gate's result (the fixer reads the last 3000 characters of the result, so the
failing step's name stays in front of its tail)."""
MAX_REASON = 2048
"""Longest reason an AgentTask's status keeps (``core.tasks``)."""
_DIGITS = 12

_ATTRIBUTE = re2.compile(r"""([A-Za-z_:][-A-Za-z0-9_:.]{0,63})\s*=\s*("[^"<]{0,256}"|'[^'<]{0,256}')""")
_NUMBER = re2.compile(r"^\s*([0-9]{1,12}(\.[0-9]{1,17})?|\.[0-9]{1,17})([eE][-+]?[0-9]{1,3})?\s*$")


class ReportError(Exception):
    """A coverage report that cannot be used (missing, too large, not the format)."""


@dataclass(frozen=True)
class StepResult:
    name: str
    passed: bool
    headline: str
    """``step <name> passed``, ``step <name> failed (exit 1)``, ``step coverage failed: 72.4% of lines ...``."""
    tail: str
    """The step's output tail, bounded and redacted."""

    def reason(self) -> str:
        """The headline with the output tail, at most :data:`MAX_REASON` characters (the tail's end is kept)."""
        if not self.tail.strip():
            return self.headline[:MAX_REASON]
        room = max(0, MAX_REASON - len(self.headline) - 2)
        return f"{self.headline}: {self.tail[-room:] if room else ''}"[:MAX_REASON]


# --- coverage reports ---------------------------------------------------------------------------------


def read_report(root: Path, path: str, *, limit: int = MAX_REPORT_BYTES) -> bytes:
    """The bytes of report ``path`` (relative to ``root``), refused when it resolves outside the checkout or into
    ``.git``, is not a regular file, or is larger than ``limit``."""
    try:
        real = sandbox.Sandbox(root).resolve(path)
    except errors.ToolError as e:
        raise ReportError(str(e)) from None
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ReportError(f"the report {path} does not exist") from None
    except OSError as e:
        raise ReportError(f"the report {path} cannot be opened: {e.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ReportError(f"the report {path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise ReportError(f"the report {path} is {st.st_size} bytes, larger than the {limit}-byte limit")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ReportError(f"the report {path} is larger than the {limit}-byte limit")
    return data


def _number(text: str) -> float:
    if not _NUMBER.match(text):
        raise ReportError(f"{text[:40]!r} is not a number")
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ReportError(f"{text[:40]!r} is not a number of lines or a rate")
    return value


def cobertura_percent(data: bytes) -> float:
    """Lines covered, in percent, of a Cobertura XML report: its root element's ``lines-covered``/``lines-valid``,
    else its ``line-rate``."""
    head = data[:COBERTURA_HEAD_BYTES].decode("utf-8", errors="replace")
    if "<!ENTITY" in head.upper():
        raise ReportError("the report declares XML entities, which are refused")
    at = 0
    while True:
        at = head.find("<coverage", at)
        if at < 0:
            raise ReportError("no <coverage> root element in the first "
                              f"{COBERTURA_HEAD_BYTES // 1024} KiB: not a Cobertura report")
        nxt = head[at + len("<coverage"):at + len("<coverage") + 1]
        if nxt and (nxt.isspace() or nxt in ">/"):
            break
        at += 1
    end = head.find(">", at)
    if end < 0:
        raise ReportError("the <coverage> element's start tag does not end in the first "
                          f"{COBERTURA_HEAD_BYTES // 1024} KiB")
    attributes = {m.group(1): m.group(2)[1:-1] for m in _ATTRIBUTE.finditer(head[at + len("<coverage"):end])}
    if "lines-valid" in attributes and "lines-covered" in attributes:
        valid, covered = _number(attributes["lines-valid"]), _number(attributes["lines-covered"])
        if covered > valid:
            raise ReportError("lines-covered is larger than lines-valid")
        return 100.0 if valid == 0 else 100.0 * covered / valid
    if "line-rate" not in attributes:
        raise ReportError("the <coverage> element has no line-rate")
    rate = _number(attributes["line-rate"])
    if rate > 1:
        raise ReportError(f"line-rate {attributes['line-rate'][:40]} is above 1")
    return 100.0 * rate


def lcov_percent(data: bytes) -> float:
    """Lines covered, in percent, of an LCOV tracefile: hit (``LH:``) over found (``LF:``), summed over its
    records."""
    found = hit = records = 0
    for raw in data.splitlines():
        line = raw.strip()
        if line[:3] in (b"LF:", b"LH:"):
            value = line[3:].strip()
            if not value.isdigit() or len(value) > _DIGITS:
                raise ReportError(f"{line[:40].decode('utf-8', errors='replace')!r} is not a line count")
            if line[:3] == b"LF:":
                found += int(value)
                records += 1
            else:
                hit += int(value)
    if records == 0:
        raise ReportError("no LF: records: not an LCOV tracefile")
    if hit > found:
        raise ReportError("more lines hit (LH:) than found (LF:)")
    return 100.0 if found == 0 else 100.0 * hit / found


def coverage_percent(root: Path, coverage: Coverage) -> float:
    """Lines covered, in percent, by the report ``coverage`` names in the checkout ``root``."""
    data = read_report(root, coverage.report)
    return cobertura_percent(data) if coverage.format == "cobertura" else lcov_percent(data)


def check_coverage(name: str, root: Path, coverage: Coverage) -> StepResult:
    """Step ``name``'s coverage threshold, checked on its report."""
    try:
        percent = coverage_percent(root, coverage)
    except ReportError as e:
        return StepResult(name, False, f"step {name} failed: the {coverage.format} coverage report "
                                       f"{coverage.report} cannot be used: {e}"[:1000], "")
    shown = math.floor(percent * 10) / 10
    if percent < coverage.min_percent:
        return StepResult(name, False, f"step {name} failed: {shown:.1f}% of lines covered, below the "
                                       f"{coverage.min_percent:g}% minimum ({coverage.report})"[:1000], "")
    return StepResult(name, True, f"step {name} passed: {shown:.1f}% of lines covered, at least the "
                                  f"{coverage.min_percent:g}% minimum ({coverage.report})"[:1000], "")


# --- steps ------------------------------------------------------------------------------------------


def run_step(step: GateStep, *, cwd: Path, env: dict[str, str], default_timeout: float, output_cap: int,
             redact: Callable[[str], str]) -> StepResult:
    """Run one step: its command (if any), then its coverage threshold (if any)."""
    tail = ""
    if step.command:
        timeout = float(step.timeout_seconds) if step.timeout_seconds else default_timeout
        result = sandbox.run(["/bin/sh", "-c", step.command], cwd=cwd, env=env, timeout=timeout,
                             output_cap=output_cap)
        tail = redact(sandbox.truncate(result.output, STEP_TAIL_CHARS))
        if result.timed_out:
            return StepResult(step.name, False, f"step {step.name} failed: it did not finish within {timeout:g}s",
                              tail)
        if result.exit_code != 0:
            return StepResult(step.name, False, f"step {step.name} failed (exit {result.exit_code})", tail)
    if step.coverage is not None:
        checked = check_coverage(step.name, cwd, step.coverage)
        return StepResult(step.name, checked.passed, checked.headline, tail)
    return StepResult(step.name, True, f"step {step.name} passed (exit 0)", tail)


def run_steps(steps: Sequence[GateStep], *, cwd: Path, env: dict[str, str], default_timeout: float,
              output_cap: int, redact: Callable[[str], str],
              on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
    """Run ``steps`` in order, stopping after the first that fails; the results of those that ran."""
    out: list[StepResult] = []
    for step in steps:
        result = run_step(step, cwd=cwd, env=env, default_timeout=default_timeout, output_cap=output_cap,
                          redact=redact)
        out.append(result)
        if on_step is not None:
            on_step(result)
        if not result.passed:
            break
    return out


def reasons_of(results: Sequence[StepResult]) -> list[str]:
    """The gate's reasons: a line per step that ran, the last (the failing step, or the last step) with its output
    tail. The merge queue hands the last two to a fixer."""
    if not results:
        return ["the gate has no steps"]
    return [r.headline for r in results[:-1]] + [results[-1].reason()]
