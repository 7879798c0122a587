"""The shell's import contracts name every module of ``longshot.controllers`` (.importlinter): the layers contract
is exhaustive (import-linter itself fails on a module it does not list), and the contract that keeps the
Kubernetes client out of the shell lists every module but the entry points, which register kopf's handlers."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

import longshot.controllers

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CONTROLLERS = Path(longshot.controllers.__file__).parent
ENTRY_POINTS = {"startup", "handlers"}


def contract(name: str) -> configparser.SectionProxy:
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    return config[f"importlinter:contract:{name}"]


def modules() -> set[str]:
    found = {p.stem for p in CONTROLLERS.glob("*.py") if p.stem != "__init__"}
    found |= {p.name for p in CONTROLLERS.iterdir() if (p / "__init__.py").is_file()}
    assert {"manager", "builds", "executor"} <= found  # the reader works
    return found


def test_the_shell_layers_contract_is_exhaustive_over_the_controllers() -> None:
    layers = contract("shell-layers")
    assert layers["containers"].split() == ["longshot.controllers"]
    assert layers.getboolean("exhaustive")


def test_the_client_contract_lists_every_controllers_module_but_the_entry_points() -> None:
    listed = {m.removeprefix("longshot.controllers.") for m in contract("client-in-runtime")["source_modules"].split()}
    missing = modules() - ENTRY_POINTS - listed
    assert not missing, f"list {sorted(missing)} (longshot.controllers.*) in .importlinter's client-in-runtime"
    assert not listed - modules(), f"client-in-runtime lists modules that do not exist: {sorted(listed - modules())}"
