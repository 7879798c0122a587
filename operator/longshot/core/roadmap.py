"""Roadmap intake: a Markdown checklist in the repository becomes a plan; merged items are checked off.

Pure: text in, data or text out. The shell reads ``spec.planner.roadmapPath`` (default ``ROADMAP.md``) at
the target branch's tip, calls :func:`plan`, and hands the tasks to :func:`longshot.core.plan.build_tasks`
like a planner's; when a roadmap task's branch merges, the merge commit also carries
``check_off(text, [name])`` of the file.

**Items.** A checklist item is a list item that starts with a task box: ``- [ ] todo`` or ``- [x] done``
(``X`` too), with a ``-``, ``*`` or ``+`` bullet or an ordered marker (``1.``, ``1)``), at any
indentation (a tab advances to the next multiple of 4 columns). Lines in fenced code blocks (``````` or
``~~~``) are never items. An item's text is its line plus its continuation lines: the non-blank lines
right after it that are neither list items, headings nor fences (after a blank line, only lines indented
deeper than its bullet continue it). A list item without a box (``- note``) is not a task.

**Nesting: a parent depends on its sub-items.** An item indented deeper than a checklist item above it
(with no heading, and no unindented paragraph after a blank line, in between) is its sub-item, and the
parent's task gets ``depends_on`` its nearest unchecked sub-items: they run first, and the parent runs on
a target that has their merged work. That is how a checklist reads ("- [ ] Accounts" with "- [ ] user
model" and "- [ ] login endpoint" under it: Accounts is done when its steps are), and it leaves the parent
the work that needs all of them, integration and wiring. The other direction (children after the parent)
would make a parent a prerequisite of its own details, and a parent with nothing left to do but its
children would be an empty task. Plain bullets between the two are transparent; a checked sub-item is done
and adds no dependency, but unchecked items under it still count for the nearest unchecked ancestor.

**Names.** Each item gets a plan-local name (``api.handoff.PLAN_TASK_NAME``: a DNS label of at most 40
characters) from its first line: lowercase ASCII words joined by ``-`` (``Add the /login endpoint`` ->
``add-the-login-endpoint``). A longer slug is cut to 33 characters plus ``-`` and 6 hex digits of the
line's SHA-256. Names are assigned in document order over all items, checked ones included, so checking an
item off never renames another; a name already taken (two items with the same words), empty (``- [ ] !!!``)
or reserved (``planner``, the build's own planner task) gets the hash of the line and its occurrence
number instead. The same file always gives the same names.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from longshot.api.handoff import PLAN_TASK_NAME, PlannedTask

MAX_NAME = 40
HASH_LEN = 6
TAB = 4
MAX_DESCRIPTION = 100_000
MAX_LINES = 20_000
"""Most lines a roadmap may have (with its 1 MiB size bound, ``vcs.speculate.MAX_ROADMAP_BYTES``, this bounds the
per-line work of a parse: a longer file is refused, :class:`RoadmapTooLarge`)."""
MAX_ITEMS = 5_000
"""Most checklist items, checked ones included (a plan takes at most ``api.handoff.MAX_PLAN_TASKS`` of them)."""
"""Longest task description (``PlannedTask.description``); longer item text is cut."""
RESERVED = re.compile(r"^planner(-i[0-9]+)?(-[0-9]+)?$")
"""Names the build's own tasks use (``core.plan.planner_task_name``)."""

# The roadmap is repository text an agent may have written, so no pattern applied to its lines may backtrack
# (the item pattern once ended in ``.*?[ \t]*\r?$``: 3.9 s on one line with 20,000 trailing spaces). Each is
# anchored at the line's start, and each quantifier is followed by a character it cannot match: a match attempt
# is linear in the line. An item line's trailing ``\r`` and blanks are cut off before the match (:func:`_item`).
_ITEM = re.compile(
    r"(?P<lead>[ \t]*)(?P<bullet>[-*+]|[0-9]{1,9}[.)])[ \t]+\[(?P<mark>[ xX])\](?:[ \t]+(?P<text>.*))?"
)
_LIST = re.compile(r"^[ \t]*(?:[-*+]|[0-9]{1,9}[.)])(?:[ \t]|\r?$)")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]|\r?$)")
_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def _item(line: str) -> re.Match[str] | None:
    """The checklist item of ``line``: its text is what follows the box, without the trailing blanks and ``\r``."""
    end = len(line) - 1 if line.endswith("\r") else len(line)
    while end > 0 and line[end - 1] in " \t":
        end -= 1
    return _ITEM.fullmatch(line, 0, end)


_NAME = re.compile(PLAN_TASK_NAME)


class RoadmapTooLarge(ValueError):
    """The roadmap has more lines or items than a parse accepts; the message says which bound and how to fix it."""


@dataclass(frozen=True)
class Item:
    """One checklist item of a roadmap."""

    name: str
    """Plan-local task name, stable across runs and check-offs."""
    title: str
    """The text on the item's own line."""
    text: str
    """The title and its continuation lines, one per line."""
    checked: bool
    """``[x]``: done."""
    line: int
    """Index (from 0) of the item's line in the text."""
    column: int
    """Indentation of the bullet, in columns."""
    parent: str | None = None
    """Name of the nearest checklist item it is nested under."""
    children: tuple[str, ...] = ()
    """Names of the checklist items nested directly under it, in order."""


@dataclass
class _Raw:
    title: str
    checked: bool
    line: int
    column: int
    mark: int
    """Offset of the mark character in its line."""
    extra: list[str] = field(default_factory=list)
    parent: int | None = None
    children: list[int] = field(default_factory=list)


def _columns(lead: str) -> int:
    col = 0
    for ch in lead:
        col = (col // TAB + 1) * TAB if ch == "\t" else col + 1
    return col


def _lines(text: str) -> list[str]:
    """The text's lines without their ``\\n`` (a ``\\r`` stays); ``"\\n".join`` gives the text back."""
    return text.split("\n")


def _scan(text: str) -> list[_Raw]:
    raws: list[_Raw] = []
    stack: list[int] = []  # indexes into raws of the open checklist items, outermost first
    fence: str | None = None
    current: int | None = None  # the item whose continuation lines may follow
    blank_since = False
    lines = _lines(text)
    if len(lines) > MAX_LINES:
        raise RoadmapTooLarge(f"the roadmap has {len(lines)} lines, more than the {MAX_LINES} accepted; split it or "
                              "remove done items")
    for number, line in enumerate(lines):
        stripped = line.strip()
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening["fence"][0] == fence[0] and len(opening["fence"]) >= len(fence) \
                    and not line[opening.end():].strip():
                fence = None
            continue
        if opening:
            fence = opening["fence"]
            current = None
            continue
        if not stripped:
            blank_since = True
            continue
        match = _item(line)
        if match and match["text"] and match["text"].strip():  # text of only whitespace (e.g. \x1f) is no item
            column = _columns(match["lead"])
            while stack and raws[stack[-1]].column >= column:
                stack.pop()
            raw = _Raw(title=match["text"].strip(), checked=match["mark"] != " ", line=number, column=column,
                       mark=match.start("mark"), parent=stack[-1] if stack else None)
            raws.append(raw)
            if len(raws) > MAX_ITEMS:
                raise RoadmapTooLarge(f"the roadmap has more than {MAX_ITEMS} checklist items; split it or remove "
                                      "done items")
            index = len(raws) - 1
            if raw.parent is not None:
                raws[raw.parent].children.append(index)
            stack.append(index)
            current, blank_since = index, False
            continue
        if _HEADING.match(line):
            stack, current = [], None
        elif _LIST.match(line):
            current = None  # a plain bullet: transparent for nesting, not part of any item's text
        else:
            column = _columns(line[: len(line) - len(line.lstrip(" \t"))])
            if current is not None and (not blank_since or column > raws[current].column):
                raws[current].extra.append(stripped)
            else:
                current = None
                if column == 0:
                    stack = []  # an unindented paragraph ends the list
        blank_since = False
    return raws


def _slug(title: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    return _NOT_SLUG.sub("-", ascii_text).strip("-")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LEN]


def _cut(slug: str, limit: int) -> str:
    return slug[:limit].rstrip("-")


def _names(raws: list[_Raw]) -> list[str]:
    taken: set[str] = set()
    seen: dict[str, int] = {}
    out: list[str] = []
    for raw in raws:
        slug = _slug(raw.title)
        occurrence = seen.get(raw.title, 0) + 1
        seen[raw.title] = occurrence
        name = slug if len(slug) <= MAX_NAME else f"{_cut(slug, MAX_NAME - HASH_LEN - 1)}-{_digest(raw.title)}"
        salt = 0
        while not name or name in taken or RESERVED.match(name) or not _NAME.match(name):
            key = f"{raw.title}\x00{occurrence}" + (f"\x00{salt}" if salt else "")
            head = _cut(slug, MAX_NAME - HASH_LEN - 1) or "item"
            name = f"{head}-{_digest(key)}"
            salt += 1
        taken.add(name)
        out.append(name)
    return out


def parse(text: str) -> list[Item]:
    """Every checklist item of ``text``, checked or not, in document order. Raises :class:`RoadmapTooLarge` past
    :data:`MAX_LINES` lines or :data:`MAX_ITEMS` items: with those bounds and the size bound a parse is linear
    in the text and takes well under a second (``hack/hostile_parsers.py``)."""
    raws = _scan(text)
    names = _names(raws)
    return [
        Item(name=names[i], title=raw.title, text="\n".join([raw.title, *raw.extra]), checked=raw.checked,
             line=raw.line, column=raw.column, parent=names[raw.parent] if raw.parent is not None else None,
             children=tuple(names[c] for c in raw.children))
        for i, raw in enumerate(raws)
    ]


def _open_below(item: Item, by_name: dict[str, Item]) -> Iterator[str]:
    """The nearest unchecked items under ``item``: its unchecked children, and the nearest unchecked
    items under its checked children."""
    for child in item.children:
        sub = by_name[child]
        if not sub.checked:
            yield child
        else:
            yield from _open_below(sub, by_name)


def plan(text: str) -> list[PlannedTask]:
    """One task per unchecked item, in document order: the item's text as the description, the nearest
    unchecked sub-items as dependencies. An empty list means the roadmap is done."""
    items = parse(text)
    by_name = {i.name: i for i in items}
    tasks = []
    for item in items:
        if item.checked:
            continue
        description = item.text if len(item.text) <= MAX_DESCRIPTION else item.text[: MAX_DESCRIPTION - 6] + " [...]"
        tasks.append(PlannedTask(name=item.name, description=description,
                                 depends_on=list(_open_below(item, by_name))))
    return tasks


def check_off(text: str, names: Iterable[str]) -> str:
    """``text`` with the items named ``names`` marked ``[x]``; every other character is kept as it was.

    Already checked items stay as they are, so checking off again is a no-op; names that are not in the
    roadmap (the item was edited or removed meanwhile) are skipped: see :func:`unknown_names`."""
    wanted = set(names)
    if not wanted:
        return text
    raws = _scan(text)
    targets = {raw.line: raw.mark for raw, name in zip(raws, _names(raws), strict=True)
               if name in wanted and not raw.checked}
    if not targets:
        return text
    lines = _lines(text)
    for number, mark in targets.items():
        line = lines[number]
        lines[number] = f"{line[:mark]}x{line[mark + 1:]}"
    return "\n".join(lines)


def unknown_names(text: str, names: Collection[str]) -> list[str]:
    """Those of ``names`` that name no item of ``text``, sorted."""
    known = {i.name for i in parse(text)}
    return sorted(set(names) - known)
