#!/usr/bin/env python3
"""The dependency lock: requirements/*.txt, every package pinned with its hashes, from pyproject.toml.

    python hack/lock.py           regenerate every lock with uv (`make lock`; needs PyPI, uv from the lint extra)
    python hack/lock.py --check   exit 1 (and say why) when a lock does not match pyproject.toml (`make lint`;
                                  offline: it reads files only)

The locks (each installs with ``pip install --require-hashes -r``):

* ``dev.txt``: the runtime extras, test, lint and e2e (``make venv``, and so CI);
* ``operator.txt``: the extras ``operator`` and ``gateway`` (images/operator, which runs both);
* ``agent.txt``: the extra ``agent`` (images/agent);
* ``plugin.txt``: the extra ``plugin`` (kubectl longshot: tests/integration/test_plugin_install.py).

``dev.txt`` is resolved first, and the others with it as constraints, so an image runs the versions the tiers
tested. Resolution is universal for Python 3.11 (the images' Debian bookworm interpreter) and later.

The check cannot resolve (that needs an index); it checks what can go stale without one: each lock's header holds
the sha256 of the requirements it was compiled from (the base dependencies and its extras, as pyproject.toml says
them), and every requirement has a pin in the lock that satisfies its specifier. Editing a bound or adding a
dependency in pyproject.toml without `make lock` fails the check.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "longshot-operator"
PYTHON = "3.11"
LOCKS: dict[str, tuple[str, ...]] = {
    # name: the extras it installs (besides the base dependencies); dev first: the others are constrained by it
    "dev": ("all", "test", "lint", "e2e"),
    "operator": ("operator", "gateway"),
    "agent": ("agent",),
    "plugin": ("plugin",),
}
HEADER = "# inputs-sha256: "
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
                  r"(?:\s*;\s*(?P<marker>[^\\]+?))?\s*\\?$")


def _project(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def requirements(project: dict, extras: tuple[str, ...]) -> list[Requirement]:
    """The base dependencies and those of ``extras``, self-references (``longshot-operator[a,b]``) expanded."""
    optional = project.get("optional-dependencies", {})
    out: list[Requirement] = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r}")
        for text in optional[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == PROJECT:
                todo.extend(sorted(req.extras))
            else:
                out.append(req)
    return out


def inputs_digest(reqs: list[Requirement]) -> str:
    return hashlib.sha256("\n".join(sorted({str(r) for r in reqs})).encode()).hexdigest()


def pins(text: str) -> dict[str, list[tuple[str, str | None]]]:
    """``name -> [(version, marker)]`` of a lock's ``name==version [; marker]`` lines."""
    out: dict[str, list[tuple[str, str | None]]] = {}
    for line in text.splitlines():
        m = _PIN.match(line.strip())
        if m:
            out.setdefault(canonicalize_name(m["name"]), []).append((m["version"], m["marker"]))
    return out


def check(root: Path) -> list[str]:
    project = _project(root)
    problems: list[str] = []
    for name, extras in LOCKS.items():
        path = root / "requirements" / f"{name}.txt"
        if not path.exists():
            problems.append(f"{path.relative_to(root)} is missing")
            continue
        text = path.read_text()
        reqs = requirements(project, extras)
        digest = next((line[len(HEADER):].strip() for line in text.splitlines() if line.startswith(HEADER)), "")
        if digest != inputs_digest(reqs):
            problems.append(f"{path.relative_to(root)} was compiled from other requirements than pyproject.toml's "
                            f"(extras {', '.join(extras)})")
        locked = pins(text)
        for req in reqs:
            if req.marker is not None and not req.marker.evaluate({"python_version": PYTHON}):
                continue
            versions = locked.get(canonicalize_name(req.name), [])
            if not versions:
                problems.append(f"{path.relative_to(root)} has no pin for {req.name}")
            for version, _ in versions:
                if not req.specifier.contains(version, prereleases=True):
                    problems.append(f"{path.relative_to(root)} pins {req.name}=={version}, outside {req}")
        if "--hash=sha256:" not in text:
            problems.append(f"{path.relative_to(root)} has no hashes")
    return problems


def uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if not found:
        raise SystemExit("uv is not installed: make venv installs it (the lint extra)")
    return found


def compile_locks(root: Path) -> None:
    project = _project(root)
    out_dir = root / "requirements"
    out_dir.mkdir(exist_ok=True)
    env = {**os.environ, "UV_NATIVE_TLS": "1", "UV_NO_CONFIG": "1"}
    env.pop("PIP_FIND_LINKS", None)
    dev = out_dir / "dev.txt"
    for name, extras in LOCKS.items():
        reqs = requirements(project, extras)
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "requirements.in"
            source.write_text("".join(f"{r}\n" for r in reqs))
            target = out_dir / f"{name}.txt"
            cmd = [uv(), "pip", "compile", "--quiet", "--universal", "--python-version", PYTHON, "--generate-hashes",
                   "--no-header", "--no-annotate", "--index-url", "https://pypi.org/simple", "--output-file",
                   str(Path(tmp) / "out.txt"), str(source)]
            if name != "dev":
                cmd += ["--constraint", str(dev)]
            subprocess.run(cmd, check=True, env=env, cwd=tmp)
            body = (Path(tmp) / "out.txt").read_text()
        target.write_text(
            f"# The lock of {PROJECT} with the extras {', '.join(extras)} (and its base dependencies), for Python "
            f"{PYTHON}+.\n# Written by `make lock` (hack/lock.py, uv pip compile); do not edit by hand.\n"
            f"{HEADER}{inputs_digest(reqs)}\n{body}")
        print(f"wrote {target.relative_to(root)} ({len(pins(body))} packages)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="check the locks against pyproject.toml (offline)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.root)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("the lock is out of date: run make lock", file=sys.stderr)
            return 1
        print("requirements/*.txt match pyproject.toml")
        return 0
    compile_locks(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
