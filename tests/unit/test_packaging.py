"""What the wheel (and so every image, which installs it) holds: the product, not the test support."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import setuptools

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_the_test_clusters_are_not_packaged_and_the_product_is():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = set(setuptools.find_packages(where=str(ROOT / find["where"][0]), exclude=find.get("exclude", ())))
    assert (ROOT / find["where"][0] / "longshot_testing" / "__init__.py").is_file()  # beside the product, on disk
    assert not {p for p in packages if p == "longshot_testing" or p.startswith("longshot_testing.")}
    assert not {p for p in packages if p.startswith("longshot.testing")}
    assert {"longshot", "longshot.api", "longshot.core", "longshot.controllers", "longshot.gateway", "longshot.runtime",
            "longshot.vcs", "longshot.agent"} <= packages
