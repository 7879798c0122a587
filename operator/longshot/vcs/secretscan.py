"""Find credentials in a change before it is pushed (used by the agent runner and the merge queue).

``scan_diff(diff)`` reads a unified diff (``git diff`` output) and checks only the lines it adds;
``scan_text(path, text)`` checks a whole file. A :class:`Finding` names the file, the line and the rule,
never the secret itself, so it is safe to log, to put in a handoff and to show in a condition.

A line carrying the marker ``longshot:allow-secret`` (in a comment) is skipped: use it for test fixtures
and documented example values.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ALLOW_MARKER = "longshot:allow-secret"

# (rule, pattern) — specific token formats; each is a credential wherever it appears.
TOKEN_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("aws-access-key-id", re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b")),
    ("aws-secret-access-key", re.compile(
        r"(?i)aws_?secret_?access_?key[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")),
    ("github-token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b")),
    ("github-fine-grained-token", re.compile(r"\bgithub_pat_[A-Za-z0-9_]{50,255}\b")),
    ("gitlab-token", re.compile(r"\bgl(?:pat|dt|rt|ptt|cbt|oas)-[A-Za-z0-9_-]{20,}")),
    ("slack-token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("slack-webhook", re.compile(r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+")),
    ("anthropic-api-key", re.compile(r"\bsk-ant-(?:api|admin)\d{2}-[A-Za-z0-9_-]{20,}")),
    ("openai-api-key", re.compile(r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,}"
                                  r"|\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}"
                                  r"|\bsk-[A-Za-z0-9]{48}\b")),
    ("private-key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
)

# Files where a long random value assigned to a secret-sounding key is almost surely a credential.
CONFIG_SUFFIXES = (
    ".env", ".ini", ".cfg", ".conf", ".config", ".properties", ".toml", ".yaml", ".yml", ".json",
    ".tfvars", ".tf", ".xml", ".npmrc", ".pypirc", ".netrc", ".envrc",
)
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)(?P<key>[A-Za-z0-9_.-]*(?:secret|token|passw(?:or)?d|pwd|api[_-]?key|access[_-]?key|"
    r"private[_-]?key|client[_-]?secret|credential|auth)[A-Za-z0-9_.-]*)[\"']?\s*[:=]\s*[\"']?"
    r"(?P<value>[A-Za-z0-9+/=_.~-]{20,})"
)
ENTROPY_THRESHOLD = 3.5


@dataclass(frozen=True)
class Finding:
    """A suspected credential: where and which rule matched (never the value)."""

    file: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}"


def shannon_entropy(value: str) -> float:
    """Bits per character of ``value``."""
    if not value:
        return 0.0
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def is_config_file(path: str) -> bool:
    name = path.rsplit("/", 1)[-1].lower()
    return name.startswith(".env") or name.endswith(CONFIG_SUFFIXES)


def scan_line(path: str, number: int, line: str, known: Iterable[str] = ()) -> list[Finding]:
    """Findings of one line of ``path``; ``known`` are exact credential values to look for as well
    (the caller's own tokens), reported as rule ``known-credential``."""
    found = [Finding(path, number, "known-credential") for secret in known if secret and secret in line]
    if found:
        return found[:1]
    if ALLOW_MARKER in line:
        return []
    found = [Finding(path, number, rule) for rule, pattern in TOKEN_RULES if pattern.search(line)]
    if not found and is_config_file(path):
        for match in _SECRET_ASSIGNMENT.finditer(line):
            value = match.group("value")
            if _looks_random(value):
                found.append(Finding(path, number, "high-entropy-secret-assignment"))
                break
    return found


def _looks_random(value: str) -> bool:
    if value.startswith(("${", "{{", "<")) or value.lower() in {"changeme", "placeholder"}:
        return False
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and shannon_entropy(value) >= ENTROPY_THRESHOLD


def scan_text(path: str, text: str, known: Iterable[str] = ()) -> list[Finding]:
    """Findings of a whole file."""
    known = [k for k in known if k]
    return [f for number, line in enumerate(text.splitlines(), 1) for f in scan_line(path, number, line, known)]


def scan_diff(diff: str, known: Iterable[str] = ()) -> list[Finding]:
    """Findings in the lines a unified diff adds (file paths and line numbers of the new side)."""
    known = [k for k in known if k]
    return [f for path, number, line in added_lines(diff) for f in scan_line(path, number, line, known)]


_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def added_lines(diff: str | Iterable[str]) -> Iterator[tuple[str, int, str]]:
    """``(path, line number, text)`` of every added line of a unified diff."""
    lines = diff.splitlines() if isinstance(diff, str) else diff
    path: str | None = None
    number = 0
    in_hunk = False
    for raw in lines:
        if raw.startswith("diff --git "):
            path, in_hunk = None, False
            continue
        if not in_hunk and raw.startswith("+++ "):
            target = raw[4:].rstrip("\t\n")
            path = None if target == "/dev/null" else _strip_prefix(_unquote(target))
            continue
        match = _HUNK.match(raw)
        if match:
            number, in_hunk = int(match.group(1)), True
            continue
        if not in_hunk or path is None:
            continue
        if raw.startswith("+"):
            yield path, number, raw[1:]
            number += 1
        elif raw.startswith(" "):
            number += 1
        elif raw.startswith("\\"):
            continue
        elif not raw.startswith("-"):
            in_hunk = False


def _unquote(target: str) -> str:
    if target.startswith('"') and target.endswith('"'):
        return target[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape").encode(
            "latin-1").decode("utf-8", "replace")
    return target


def _strip_prefix(target: str) -> str:
    return target[2:] if target.startswith(("b/", "w/", "i/")) else target
