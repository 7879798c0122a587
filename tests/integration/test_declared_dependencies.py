"""Every module the operator imports is declared in pyproject.toml, and every declared dependency is imported:
deptry (configured in ``[tool.deptry]``), the check ``make lint`` runs, over ``operator/``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _deptry() -> str:
    found = Path(sys.executable).parent / "deptry"
    path = str(found) if found.exists() else shutil.which("deptry")
    assert path, "deptry is missing: it is in the lint extra (pip install '.[lint]')"
    return path


def test_deptry_finds_no_undeclared_or_unused_dependency() -> None:
    result = subprocess.run([_deptry(), "--no-ansi", "operator"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_deptry_reports_an_import_that_arrives_only_through_another_package(tmp_path: Path) -> None:
    # what it said of aiohttp before it was declared: imported by the gateway, installed only because kopf needs it
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "0"\ndependencies = ["kopf"]\n'
                                             '[tool.deptry]\nknown_first_party = ["x"]\n')
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "__init__.py").write_text("import aiohttp\nimport kopf\n")
    result = subprocess.run([_deptry(), "--no-ansi", "x"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "DEP003 'aiohttp' imported but it is a transitive dependency" in result.stdout + result.stderr
