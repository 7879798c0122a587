"""The shell commands of the docs a new user copies (README.md, docs/install.md, docs/operations.md, docs/runbooks.md),
extracted and checked against what they name (issue 55, item 3): Makefile targets, the repository's scripts and
their subcommands, ``kubectl`` and ``helm`` flags against the real binaries' ``--help``, label selectors against the
chart's labels and the operator's label keys, ``--set`` keys against the chart's values, and ``kubectl longshot``
against the plugin's own parser.

This module only reads and parses (the pure part, unit-tested); ``tests/integration/test_docs_commands.py`` runs the
binaries' ``--help`` and renders the chart.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/install.md", "docs/operations.md", "docs/runbooks.md")
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console"})
PLACEHOLDER = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class Command:
    """One simple command of a docs' shell block: where it is, and its words (``sudo``/``VAR=x`` prefixes off)."""

    doc: str
    line: int
    text: str
    argv: tuple[str, ...]
    refused: bool = False
    """A ``console`` example whose output starts with ``Error``: the docs show it being refused on purpose."""

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def blocks(text: str) -> Iterator[tuple[int, str, list[tuple[int, str]]]]:
    """The fenced blocks of a Markdown text: (first line number, language, [(line number, line)])."""
    lang: str | None = None
    start = 0
    body: list[tuple[int, str]] = []
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^\s*```(\S*)\s*$", line)
        if m and lang is None:
            lang, start, body = m.group(1), n, []
        elif m:
            yield start, lang or "", body
            lang = None
        elif lang is not None:
            body.append((n, line))


def _logical_lines(lang: str, body: list[tuple[int, str]]) -> Iterator[tuple[int, str, bool]]:
    """Shell lines, continuations joined, and whether the docs show the line refused; in a ``console`` block only
    the lines after a ``$`` prompt, refused when the output after it starts with ``Error``."""
    pending, first = "", 0
    for i, (n, raw) in enumerate(body):
        line = raw.rstrip()
        if lang == "console" and not pending:
            if not line.lstrip().startswith("$ "):
                continue
            line = line.lstrip()[2:]
        if not pending:
            first = n
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        after = body[i + 1][1].lstrip() if i + 1 < len(body) else ""
        yield first, pending + line, lang == "console" and after.startswith("Error")
        pending = ""
    if pending:
        yield first, pending, False


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (outside quotes)."""
    quote: str | None = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line


def _simple_commands(line: str) -> Iterator[str]:
    """``a | b && c; d``: the simple commands, split outside quotes and ``$( )``."""
    out, cur, quote, depth, i = [], "", None, 0, 0
    while i < len(line):
        ch = line[i]
        if quote:
            cur += ch
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            cur += ch
        elif line.startswith("$(", i):
            depth += 1
            cur += "$("
            i += 1
        elif ch == ")" and depth:
            depth -= 1
            cur += ch
        elif depth == 0 and (line.startswith("&&", i) or line.startswith("||", i)):
            out.append(cur)
            cur = ""
            i += 1
        elif depth == 0 and ch in "|;":
            out.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    out.append(cur)
    yield from (c.strip() for c in out if c.strip())


def commands(root: Path = ROOT, docs: tuple[str, ...] = DOCS) -> list[Command]:
    """Every simple command of the shell blocks of ``docs``."""
    found: list[Command] = []
    for doc in docs:
        for _, lang, body in blocks((root / doc).read_text()):
            if lang not in SHELL_LANGS:
                continue
            for n, line, refused in _logical_lines(lang, body):
                line = _strip_comment(line)
                inner = re.findall(r"\$\(([^()]*)\)", line)  # $(cmd): a command of its own
                line = re.sub(r"\$\(([^()]*)\)", "X", line)
                for simple in [*_simple_commands(line), *(c for i in inner for c in _simple_commands(i))]:
                    try:
                        words = shlex.split(simple)
                    except ValueError:
                        words = simple.split()
                    while words and (words[0] in ("sudo", "env", "time", "exec")
                                     or re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0])):
                        words = words[1:]
                    if words:
                        found.append(Command(doc, n, simple, tuple(words), refused))
    return found


# --- what the commands name ------------------------------------------------------------------------------------

def make_targets(makefile: Path = ROOT / "Makefile") -> set[str]:
    return set(re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*):(?!=)", makefile.read_text(), re.M))


def script_subcommands(script: Path) -> set[str]:
    """The words a script's ``case`` arms accept (``up)``, ``down|stop)``)."""
    arms = re.findall(r"^\s*([A-Za-z0-9_|.-]+)\)", script.read_text(), re.M)
    return {w for arm in arms for w in arm.split("|")}


def help_flags(help_text: str) -> set[str]:
    """The flags a ``--help`` lists (``-n, --namespace=''``, ``--tail=-1``, ``-A, --all-namespaces``)."""
    flags: set[str] = set()
    for m in re.finditer(r"(?m)^\s+(-[A-Za-z0-9])?,?\s*(--[A-Za-z0-9][A-Za-z0-9-]*)", help_text):
        flags.update(f for f in m.groups() if f)
    return flags


def flags_used(argv: tuple[str, ...]) -> list[str]:
    """The flags of a command line (``--x=1`` -> ``--x``; ``-it`` -> ``-i``, ``-t``; placeholders and values not)."""
    out: list[str] = []
    for w in argv:
        if w == "--":
            break
        if w.startswith("--"):
            out.append(w.split("=", 1)[0])
        elif re.match(r"^-[A-Za-z]+$", w):  # -n, or short flags together: -it
            out.extend(f"-{c}" for c in w[1:])
    return out


def selectors(argv: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """The ``-l``/``--selector`` terms: (key, value or None for an existence test)."""
    out: list[tuple[str, str | None]] = []
    for i, w in enumerate(argv):
        value = None
        if w in ("-l", "--selector") and i + 1 < len(argv):
            value = argv[i + 1]
        elif w.startswith("--selector=") or (w.startswith("-l") and len(w) > 2):
            value = w.split("=", 1)[1] if w.startswith("--") else w[2:]
        if value is None:
            continue
        for term in value.split(","):
            m = re.match(r"^\s*!?([^=!\s]+)\s*(?:==?|!=)?\s*(.*)$", term)
            if m:
                out.append((m.group(1), m.group(2) or None))
    return out


def set_keys(argv: tuple[str, ...]) -> list[str]:
    """The value paths of ``--set``/``--set-string``/``--set-json`` arguments."""
    out: list[str] = []
    for i, w in enumerate(argv):
        arg = None
        if w in ("--set", "--set-string", "--set-json") and i + 1 < len(argv):
            arg = argv[i + 1]
        elif w.startswith(("--set=", "--set-string=", "--set-json=")):
            arg = w.split("=", 1)[1]
        if arg:
            out.extend(part.split("=", 1)[0] for part in re.split(r",(?=[A-Za-z][\w.\[\]]*=)", arg))
    return out


def values_have(values: Any, path: str) -> bool:
    """Whether the chart's values declare ``path`` (``a.b[0].c``): a key the values have, or any key under a map
    or list the values leave open (an empty map, a list)."""
    node = values
    for part in re.split(r"\.(?![^\[]*\])", path):
        name = re.sub(r"\[\d+\]$", "", part)
        if isinstance(node, list):
            return True
        if not isinstance(node, dict):
            return False
        if name not in node:
            return node == {}
        node = node[name]
        if part.endswith("]"):
            return isinstance(node, list)
    return True


@dataclass
class Report:
    """What was checked, what failed, and what no rule knows."""

    checked: int = 0
    failures: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)

    def fail(self, cmd: Command, why: str) -> None:
        self.failures.append(f"{cmd.where}\n    {why}")


Checker = Callable[[Command, Report], bool]
