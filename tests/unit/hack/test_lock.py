"""The dependency lock (requirements/*.txt, ``make lock``: hack/lock.py) and the install extras: the lock matches
pyproject.toml (the offline check ``make lint`` runs), the images install their lock with hashes on a base pinned by
digest, every runtime dependency has an upper bound, and each program's imports (every module it can reach, lazy
imports included) are installed by its extra's lock."""

from __future__ import annotations

import re
import shutil
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import grimp
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import hack_modules

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
lock = hack_modules.load("lock")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def copy_root(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    return tmp_path


def test_the_locks_match_pyproject() -> None:
    assert lock.check(ROOT) == []
    assert lock.main(["--check"]) == 0


def test_a_changed_bound_or_a_new_dependency_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    root = copy_root(tmp_path)
    text = (root / "pyproject.toml").read_text()
    assert '"kopf>=1.37,<2",' in text
    (root / "pyproject.toml").write_text(text.replace('"kopf>=1.37,<2",', '"kopf>=1.37,<1.40",\n    "rich>=13",', 1))
    problems = lock.check(root)
    assert "requirements/operator.txt was compiled from other requirements than pyproject.toml's (extras operator, " \
           "gateway)" in problems
    assert any(re.fullmatch(r"requirements/operator\.txt pins kopf==[\d.]+, outside kopf<1\.40,>=1\.37", p)
               for p in problems), problems
    assert "requirements/operator.txt has no pin for rich" in problems
    assert not [p for p in problems if "agent.txt" in p or "plugin.txt" in p]  # not their extras
    assert lock.main(["--check", "--root", str(root)]) == 1
    assert "the lock is out of date: run make lock" in capsys.readouterr().err


def test_a_lock_without_hashes_fails_the_check(tmp_path: Path) -> None:
    root = copy_root(tmp_path)
    plugin = root / "requirements" / "plugin.txt"
    plugin.write_text("".join(line.rstrip(" \\") + "\n" for line in plugin.read_text().splitlines()
                              if "--hash=" not in line))
    assert lock.check(root) == ["requirements/plugin.txt has no hashes"]


def test_the_extras_expand_the_self_reference_and_the_plugin_is_small() -> None:
    def names(extras: tuple[str, ...]) -> set[str]:
        return {canonicalize_name(r.name) for r in lock.requirements(PROJECT, extras)}

    everything = names(("all",))
    assert names(("plugin", "operator", "gateway", "agent")) == everything
    assert {"kopf", "kubernetes", "mcp", "gitpython", "pydantic"} <= everything
    assert names(("plugin",)) == {"pydantic", "pyyaml", "google-re2", "kubernetes", "urllib3"}
    assert "longshot-operator" not in everything


def test_every_runtime_dependency_has_an_upper_bound() -> None:
    runtime = [Requirement(r) for r in PROJECT["dependencies"]]
    runtime += [Requirement(r) for extra in ("plugin", "operator", "gateway", "agent")
                for r in PROJECT["optional-dependencies"][extra]]
    unbounded = {r.name for r in runtime if not any(s.operator in {"<", "<=", "==", "~="} for s in r.specifier)}
    assert unbounded == {"tzdata"}  # data in calendar versions: no major to break


def test_the_images_install_their_lock_with_hashes_on_a_base_pinned_by_digest() -> None:
    for name in ("operator", "agent"):
        dockerfile = (ROOT / "images" / name / "Dockerfile").read_text()
        assert f"COPY pyproject.toml README.md requirements/{name}.txt ./" in dockerfile
        assert f"pip install --quiet --require-hashes -r {name}.txt" in dockerfile
        assert "pip install --quiet --no-deps ." in dockerfile
    images_sh = (ROOT / "hack" / "images.sh").read_text()
    assert 'cp "$ROOT/requirements/$name.txt" "$work/requirements/"' in images_sh
    assert '"requirements/$1.txt"' in images_sh  # the lock is part of the image's cache key
    for dockerfile in sorted((ROOT / "images").glob("*/Dockerfile")):
        for base in re.findall(r"^ARG BASE_IMAGE=(\S+)$", dockerfile.read_text(), re.M):
            assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), (dockerfile, base)
        assert not re.findall(r"^FROM (?!\$\{BASE_IMAGE\})", dockerfile.read_text(), re.M), dockerfile


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("longshot", include_external_packages=True)


def reachable(graph: grimp.ImportGraph, *entries: str) -> set[str]:
    """The third-party top-level modules importing ``entries`` can reach, lazy imports in functions included."""
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        if module.startswith("longshot"):
            todo.extend(graph.find_modules_directly_imported_by(module))
    return {m for m in seen if not m.startswith("longshot")}


@pytest.mark.parametrize(("lockfile", "entries"), [
    ("plugin", ("longshot.cli.main",)),
    ("agent", ("longshot.agent.runner", "longshot.agent.mcpserver")),
    ("operator", ("longshot.operator_main", "longshot.gateway.server", "longshot.gateway.settings")),
])
def test_each_programs_imports_are_installed_by_its_lock(graph: grimp.ImportGraph, lockfile: str,
                                                         entries: tuple[str, ...]) -> None:
    locked = set(lock.pins((ROOT / "requirements" / f"{lockfile}.txt").read_text()))
    providers = packages_distributions()
    missing = {}
    for module in reachable(graph, *entries):
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if dists and not dists & locked:  # a third-party module (the standard library has no distribution)
            missing[module] = sorted(dists)
    assert missing == {}


def test_the_debootstrap_base_lock_is_of_what_images_sh_builds() -> None:
    images_sh = (ROOT / "hack" / "images.sh").read_text()
    suite = re.search(r"^SUITE=(\S+)$", images_sh, re.M)
    packages = re.search(r'^BASE_PACKAGES="([^"]+)"$', images_sh, re.M)
    assert suite and packages
    base_lock = (ROOT / "images" / "base" / "base.lock").read_text()
    fields = dict(line.split(": ", 1) for line in base_lock.splitlines() if line and not line.startswith(
        ("#", "package: ")))
    assert fields["suite"] == suite[1] and fields["include"] == packages[1]
    assert re.fullmatch(r"[0-9a-f]{64}", fields["rootfs-sha256"])
    assert re.match(r"\d+\.\d+ ", fields["release"])  # the point release: 12.15 ...
    pinned = dict(line[len("package: "):].split("=", 1) for line in base_lock.splitlines()
                  if line.startswith("package: "))
    assert {"python3", "python3-venv", "git", "make", "ca-certificates", "openssh-client"} <= set(pinned)
    assert all(pinned.values())
