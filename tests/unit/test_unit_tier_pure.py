"""The unit tier stays pure: no module under tests/unit imports what starts processes or makes git repositories
(subprocess, GitPython, multiprocessing, the integration tier's servers, the test clusters) or calls os' process
functions. Such a test belongs in tests/integration. tests/conftest.py also fails a unit test that starts a process
at run time, whatever module it goes through."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

UNIT = Path(__file__).resolve().parent

FORBIDDEN_MODULES = {
    "subprocess": "starts processes",
    "multiprocessing": "starts processes",
    "concurrent.futures.process": "starts processes",
    "pty": "starts processes",
    "pexpect": "starts processes",
    "git": "GitPython runs git",
    "sample_repo": "makes git repositories (tests/integration)",
    "git_servers": "starts git servers (tests/integration)",
    "process_kubelet": "runs Pods as processes (tests/integration)",
    "longshot_testing.controlplane": "starts etcd and kube-apiserver",
    "longshot_testing.cluster": "starts a local cluster",
}
FORBIDDEN_CALLS = {
    ("os", "system"), ("os", "popen"), ("os", "fork"), ("os", "forkpty"), ("os", "posix_spawn"),
    ("os", "posix_spawnp"), ("os", "execv"), ("os", "execve"), ("os", "execvp"), ("os", "execvpe"),
    ("os", "spawnv"), ("os", "spawnve"), ("os", "spawnvp"), ("os", "spawnvpe"),
    ("asyncio", "create_subprocess_exec"), ("asyncio", "create_subprocess_shell"),
}


def _forbidden(module: str) -> str | None:
    for name, why in FORBIDDEN_MODULES.items():
        if module == name or module.startswith(name + "."):
            return why
    return None


def offences(source: str, filename: str = "<test>") -> list[str]:
    """What in one module's source makes it impure: ``line: what (why)``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in FORBIDDEN_CALLS):
            found.append(f"{node.lineno}: {node.func.value.id}.{node.func.attr}() (starts processes)")
            continue
        else:
            continue
        for name in names:
            why = _forbidden(name)
            if why:
                found.append(f"{node.lineno}: imports {name} ({why})")
                break
    return found


def test_no_unit_module_imports_what_starts_processes() -> None:
    impure = {}
    for path in sorted(UNIT.rglob("*.py")):
        found = offences(path.read_text(), str(path))
        if found:
            impure[path.relative_to(UNIT).as_posix()] = found
    assert not impure, f"unit test modules that start processes or make git repositories (move them to " \
                       f"tests/integration, keeping their basename unique): {impure}"


@pytest.mark.parametrize("source", [
    "import subprocess",
    "import os, subprocess as sp",
    "from subprocess import run",
    "import git",
    "from git import Repo",
    "from multiprocessing.pool import Pool",
    "import sample_repo",
    "from longshot_testing import controlplane",
    "from longshot_testing.cluster import LocalCluster",
    "import os\nos.system('true')",
    "import asyncio\nasync def f():\n    await asyncio.create_subprocess_exec('git')",
])
def test_the_check_finds_each_kind_of_impurity(source: str) -> None:
    assert offences(source)


@pytest.mark.parametrize("source", [
    "import os\nos.environ.get('X')",
    "from longshot_testing import secret_samples",
    "from longshot.vcs import refs",
    "import gitdb_free_name",
    "'subprocess.run is only named in a string'",
])
def test_the_check_passes_pure_modules(source: str) -> None:
    assert not offences(source)
