"""The build's skills and instructions in the checkout (``spec.agent.skills``, ``spec.agent.instructions``).

The Pod mounts each skill's ConfigMap read-only at ``SKILLS_DIR/<name>/`` and the instructions' key at
``INSTRUCTIONS_DIR/AGENTS.md``; :func:`install` copies them into the checkout just before the model runs (after the
clone, the role's checkout and its hooks), where coding agents read them:

========================================  ===============================================================
what                                      where in the checkout
========================================  ===============================================================
a skill (every key a file, ``SKILL.md``)  ``.agents/skills/<name>/`` and ``.claude/skills/<name>/``, or the
                                          skill's ``path``
the instructions                          ``AGENTS.md``: the repository's own, then the build's between the
                                          :data:`BEGIN` and :data:`END` markers; the build's alone when the
                                          repository has none
========================================  ===============================================================

**Never committed.** Each folder written (and an ``AGENTS.md`` the runner created) is listed in the checkout's
``.git/info/exclude`` (so ``git status`` and ``git add --all`` leave them out, whoever commits), and
:meth:`Installed.withdraw` takes everything out again before the runner commits: the folders it made, the
``AGENTS.md`` it made, and its block of a tracked ``AGENTS.md`` (which an exclude cannot hide).

**Bounded and checked.** A ConfigMap key is a file name (``[-._a-zA-Z0-9]+``, never ``.``/``..``: no ``/`` can
reach a path); the kubelet's own entries (``..data``, ``..<timestamp>``) are skipped and a file that resolves outside
its mount is refused. At most :data:`MAX_FILES` files of :data:`MAX_FILE_BYTES` each, :data:`MAX_SKILL_BYTES` a
skill, :data:`MAX_TOTAL_BYTES` in all, :data:`MAX_INSTRUCTIONS_BYTES` of instructions; a skill without ``SKILL.md``,
or over a bound, fails the attempt with ``Configuration`` naming it. The checkout is the repository's (hostile): a
folder on the way that is a symlink or a file is not written through (that copy of the skill is left out and
logged), and a folder the repository already has is the repository's (left as it is).

The pure parts (:func:`folders_of`, :func:`description_of`, :func:`with_instructions`,
:func:`without_instructions`, :func:`exclude_lines`) decide; the rest reads and writes files.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from longshot.agent import errors, events
from longshot.api import handoff

SKILL_FILE = "SKILL.md"
"""The file every skill must have: its instructions, with an optional YAML front matter (``description``)."""
DEFAULT_FOLDERS = (".agents/skills", ".claude/skills")
"""Where a skill goes without a ``path``: ``.agents/skills`` (the shared layout: Codex, and agents following
AGENTS.md conventions) and ``.claude/skills`` (Claude Code)."""
AGENTS_MD = handoff.INSTRUCTIONS_FILE
MAX_FILES = 64
"""Most files of one skill."""
MAX_FILE_BYTES = 256 * 1024
"""Largest file of a skill."""
MAX_SKILL_BYTES = 1024 * 1024
"""Most bytes of one skill (a ConfigMap holds at most 1 MiB anyway)."""
MAX_TOTAL_BYTES = 4 * 1024 * 1024
"""Most bytes of all the skills of an attempt (each written once per folder)."""
MAX_INSTRUCTIONS_BYTES = 256 * 1024
"""Largest instructions text."""
MAX_DESCRIPTION_CHARS = 1024
"""Longest skill description put in the prompt (longer ones are cut)."""
FRONT_MATTER_CHARS = 16 * 1024
"""How much of a ``SKILL.md`` is searched for its front matter."""
MAX_PATH_SEGMENTS = 8
BEGIN = "<!-- longshot: the build's instructions (spec.agent.instructions), not committed -->"
END = "<!-- longshot: end of the build's instructions -->"

_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# --- pure decisions ------------------------------------------------------------------------------------

def valid_key(name: str) -> bool:
    """Whether ``name`` is a ConfigMap key that is safe as a file name (not ``.``, ``..``, nor the kubelet's
    ``..``-prefixed entries)."""
    return bool(_KEY.match(name)) and not name.startswith("..") and name != "."


def folders_of(skill: handoff.SkillInput) -> tuple[str, ...]:
    """The folders of the checkout (relative, ``/``-separated) the skill is written to: its ``path``, else
    ``<default>/<name>`` for each of :data:`DEFAULT_FOLDERS`. A path that leaves the checkout or enters ``.git``
    raises ``ConfigError``."""
    if skill.path is None:
        return tuple(f"{root}/{skill.name}" for root in DEFAULT_FOLDERS)
    parts = skill.path.split("/")
    if (len(parts) > MAX_PATH_SEGMENTS or skill.path.startswith("/")
            or any(not _SEGMENT.match(p) or p in (".", "..") or p.lower() == ".git" for p in parts)):
        raise errors.ConfigError(f"spec.agent.skills ({skill.name}): path {skill.path!r} is not a folder inside the "
                                 f"checkout (at most {MAX_PATH_SEGMENTS} segments of [A-Za-z0-9._-], no '.', '..' or "
                                 "'.git')")
    return (skill.path,)


def description_of(skill_md: bytes) -> str | None:
    """The ``description`` of a ``SKILL.md``'s YAML front matter (``---`` lines around ``key: value`` lines at its
    start), as one line of at most :data:`MAX_DESCRIPTION_CHARS`; None without one. Plain, quoted and block
    (``>``, ``|``) scalars; no YAML parser (the text is the ConfigMap author's)."""
    text = skill_md[:FRONT_MATTER_CHARS].decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    found: list[str] | None = None
    for line in lines[1:]:
        if line.strip() in ("---", "..."):
            break
        if found is not None:
            if line[:1] in (" ", "\t") or not line.strip():
                found.append(line.strip())
                continue
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() == "description" and line[:1] not in (" ", "\t"):
            value = value.strip()
            if value[:1] in (">", "|"):
                found = []
                continue
            found = [_unquote(value)]
    else:
        return None  # no closing line: not front matter
    if not found:
        return None
    one = _CONTROL.sub(" ", " ".join(p for p in found if p))
    one = " ".join(one.split())
    if not one:
        return None
    return one if len(one) <= MAX_DESCRIPTION_CHARS else one[:MAX_DESCRIPTION_CHARS - 3].rstrip() + "..."


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def block(text: str) -> str:
    """The build's instructions as the runner writes them into ``AGENTS.md``: between the markers."""
    return f"{BEGIN}\n{text.rstrip()}\n{END}\n"


def with_instructions(existing: str | None, text: str) -> str:
    """The ``AGENTS.md`` the agents read: the repository's own (``existing``, None when it has none), then the
    build's block, a blank line between."""
    if existing is None or not existing.strip():
        return block(text)
    return existing.rstrip("\n") + "\n\n" + block(text)


def without_instructions(current: str, existing: str | None, text: str) -> str | None:
    """``AGENTS.md`` as it is to be committed, from ``current`` (as the attempt left it): the repository's content
    (``existing``, None when it had none) with the agent's own edits, without the build's block; None when there is
    nothing to commit (the runner made the file and the agent added nothing). A block edited inside is cut from its
    first marker to its last; a file whose markers are gone is kept as it is (the agent rewrote it)."""
    if current == with_instructions(existing, text):
        return existing
    own = block(text)
    if own in current:
        at = current.find(own)
        head, tail = current[:at], current[at + len(own):]
    else:
        start, end = current.find(BEGIN), current.rfind(END)
        if start < 0 or end < start:
            return current
        head, tail = current[:start], current[end + len(END):]
    out = (head.rstrip("\n") + "\n" if head.strip() else "") + tail.lstrip("\n")
    if existing is None and not out.strip():
        return None
    return out


def exclude_lines(folders: list[str], agents_md_created: bool) -> list[str]:
    """Lines of ``.git/info/exclude`` for what the runner wrote: each folder anchored at the root, and
    ``/AGENTS.md`` when the runner created it."""
    lines = [f"/{f}/" for f in folders]
    if agents_md_created:
        lines.append(f"/{AGENTS_MD}")
    return lines


# --- reading the mounts ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Skill:
    """One skill as mounted: its files (name, bytes) and where it goes."""

    name: str
    files: tuple[tuple[str, bytes], ...]
    folders: tuple[str, ...]
    description: str | None = None


def _read_bounded(path: Path, root: Path, limit: int, what: str) -> bytes:
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        raise errors.ConfigError(f"{what} resolves outside its mount")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise errors.ConfigError(f"{what} cannot be read: {e.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise errors.ConfigError(f"{what} is not a file")
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > limit:
        raise errors.ConfigError(f"{what} is larger than {limit // 1024} KiB")
    return data


def read_skill(skill: handoff.SkillInput, mount: Path) -> Skill:
    """The skill mounted at ``mount`` (a ConfigMap volume), checked against the bounds."""
    where = f"spec.agent.skills ({skill.name})"
    if not mount.is_dir():
        raise errors.ConfigError(f"{where}: its ConfigMap is not mounted at {mount}")
    names = sorted(e.name for e in os.scandir(mount) if not e.name.startswith(".."))
    bad = [n for n in names if not valid_key(n)]
    if bad:
        raise errors.ConfigError(f"{where}: the ConfigMap key {bad[0][:80]!r} is not a file name")
    if SKILL_FILE not in names:
        raise errors.ConfigError(f"{where}: the ConfigMap has no key {SKILL_FILE}; add the skill's instructions "
                                 f"under key {SKILL_FILE}")
    if len(names) > MAX_FILES:
        raise errors.ConfigError(f"{where}: the ConfigMap has {len(names)} keys, more than {MAX_FILES}")
    files: list[tuple[str, bytes]] = []
    total = 0
    for name in names:
        data = _read_bounded(mount / name, mount, MAX_FILE_BYTES, f"{where}: file {name}")
        total += len(data)
        if total > MAX_SKILL_BYTES:
            raise errors.ConfigError(f"{where}: the skill is larger than {MAX_SKILL_BYTES // 1024} KiB")
        files.append((name, data))
    skill_md = next(data for name, data in files if name == SKILL_FILE)
    return Skill(skill.name, tuple(files), folders_of(skill), description_of(skill_md))


# --- writing the checkout ----------------------------------------------------------------------------

@dataclass
class Installed:
    """What :func:`install` wrote, so that :meth:`withdraw` can take it out before a commit."""

    checkout: Path
    skills: list[Skill] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    """Folders the runner made (relative), taken out by :meth:`withdraw`."""
    written: list[str] = field(default_factory=list)
    """The same folders, kept after :meth:`withdraw` (for :meth:`prompt`)."""
    made_dirs: list[str] = field(default_factory=list)
    """Parent folders the runner made on the way (``.agents``, ``.agents/skills``), removed when left empty."""
    instructions: str | None = None
    agents_md_before: str | None = None
    """The repository's ``AGENTS.md`` before the runner appended (None: it had none)."""

    def prompt(self) -> dict[str, object]:
        """What the prompt says about them (``system.j2``: ``skills`` and ``agents_md``)."""
        return {"skills": [{"name": s.name, "description": s.description,
                            "folder": next(f for f in s.folders if f in self.written)} for s in self.skills],
                "agents_md": self.instructions is not None}

    def withdraw(self, ev: events.Events | None = None) -> None:
        """Take out what :func:`install` wrote (before the runner commits): its folders, its ``AGENTS.md`` or its
        block of the repository's one. Safe to call twice."""
        for rel in self.folders:
            path = self.checkout / rel
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
        for rel in reversed(self.made_dirs):
            path = self.checkout / rel
            try:
                if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
                    path.rmdir()
            except OSError:
                pass
        self.folders, self.made_dirs = [], []
        if self.instructions is None:
            return
        path = self.checkout / AGENTS_MD
        try:
            current = _read_checkout_file(path)
        except OSError as e:
            current = None
            if ev is not None:
                ev.log("AGENTS.md: the build's instructions could not be taken out before the commit",
                       level="warning", error=str(e)[:300])
        if current is not None:
            kept = without_instructions(current, self.agents_md_before, self.instructions)
            if kept is None:
                path.unlink()
            elif kept != current:
                _write_checkout_file(path, kept)
            elif BEGIN in current and ev is not None:
                ev.log("AGENTS.md: the build's instructions could not be taken out before the commit",
                       level="warning")
        self.instructions = None


MAX_AGENTS_MD_BYTES = 2 * 1024 * 1024
"""Largest ``AGENTS.md`` of the checkout the runner appends to (or takes its block out of)."""


def _read_checkout_file(path: Path) -> str | None:
    """A regular file of the checkout (not through a symlink) of at most :data:`MAX_AGENTS_MD_BYTES`, or None when
    there is none; OSError for anything else (the repository's file: never a Configuration failure)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise OSError(f"{path.name} is not a regular file")
    try:
        data = _read_bounded(path, path.parent, MAX_AGENTS_MD_BYTES, path.name)
    except errors.ConfigError as e:
        raise OSError(str(e)) from None
    return data.decode("utf-8", errors="replace")


def _write_checkout_file(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _make_folder(checkout: Path, rel: str, made: list[str]) -> bool:
    """Make ``checkout/rel``; False when it exists already, or a component on the way is a symlink or a file."""
    parts = PurePosixPath(rel).parts
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        path = checkout / sub
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.mkdir(mode=0o755)
            if i < len(parts):
                made.append(sub)
            continue
        if i == len(parts) or not stat.S_ISDIR(st.st_mode):
            return False  # the repository's own folder (or not a folder at all): left as it is
    return True


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _exclude(git_dir: Path, lines: list[str]) -> None:
    """Append ``lines`` to ``git_dir/info/exclude`` (made when missing; never through a symlink)."""
    if not lines:
        return
    info = git_dir / "info"
    if info.is_symlink() or (info.exists() and not info.is_dir()):
        raise errors.AgentError(f"{info} is not a folder; the runner does not write through it")
    info.mkdir(exist_ok=True)
    fd = os.open(info / "exclude", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write("\n# longshot: the build's skills and instructions (never committed)\n" + "\n".join(lines) + "\n")


def install(task: handoff.TaskInput, checkout: Path, *, skills_dir: Path, instructions_dir: Path,
            ev: events.Events) -> Installed:
    """Write the task's skills and instructions into ``checkout`` and exclude them from git."""
    done = Installed(checkout)
    if not task.skills and not task.agents_md:
        return done
    read = [read_skill(s, skills_dir / s.name) for s in task.skills]
    total = sum(len(data) * len(s.folders) for s in read for _, data in s.files)
    if total > MAX_TOTAL_BYTES:
        raise errors.ConfigError(f"spec.agent.skills: the skills come to {total // 1024} KiB in the checkout, more "
                                 f"than {MAX_TOTAL_BYTES // 1024} KiB")
    text: str | None = None
    if task.agents_md:
        raw = _read_bounded(instructions_dir / AGENTS_MD, instructions_dir, MAX_INSTRUCTIONS_BYTES,
                            "spec.agent.instructions")
        text = raw.decode("utf-8", errors="replace")
    for skill in read:
        written = 0
        for rel in skill.folders:
            if not _make_folder(checkout, rel, done.made_dirs):
                ev.log("skill not written: the checkout already has this folder, or a file or symlink on its way",
                       level="warning", skill=skill.name, folder=rel)
                continue
            done.folders.append(rel)
            done.written.append(rel)
            written += 1
            for name, data in skill.files:
                _write_new(checkout / rel / name, data)
        if written:  # the prompt lists the skills the runner wrote, not a folder the repository has of its own
            done.skills.append(skill)
    created = False
    if text is not None:
        path = checkout / AGENTS_MD
        try:
            before = _read_checkout_file(path)
        except OSError as e:
            ev.log("instructions not written: the checkout's AGENTS.md cannot take them", level="warning",
                   error=str(e)[:300])
        else:
            _write_checkout_file(path, with_instructions(before, text))
            done.instructions, done.agents_md_before, created = text, before, before is None
    _exclude(checkout / ".git", exclude_lines(done.folders, created))
    ev.log("skills and instructions written", skills=[s.name for s in done.skills], folders=done.folders,
           agents_md=done.instructions is not None)
    return done
