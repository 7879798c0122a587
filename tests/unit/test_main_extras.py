"""``python -m longshot COMMAND`` without the extra that COMMAND needs (a base or plugin install): one sentence
naming the extra and the pip command, exit 2, instead of a traceback. A missing module of Longshot's own is a bug,
and stays a traceback."""

from __future__ import annotations

import argparse

import pytest

import longshot.__main__ as main_module

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("command", "function", "extra"), [
    ("operator", "_operator", "operator"), ("gateway", "_gateway", "gateway"), ("agent", "_agent", "agent"),
    ("mcp", "_mcp", "agent")])
def test_a_command_whose_extra_is_missing_names_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                   command: str, function: str, extra: str) -> None:
    def missing(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'kopf'", name="kopf")

    monkeypatch.setattr(main_module, function, missing)
    assert main_module.main([command]) == 2
    assert capsys.readouterr().err == (f"longshot {command}: the package 'kopf' is not installed; it comes with the "
                                       f"extra {extra!r}: pip install 'longshot-operator[{extra}]'\n")


def test_a_missing_module_of_longshots_own_is_not_blamed_on_an_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'longshot.nothing'", name="longshot.nothing")

    monkeypatch.setattr(main_module, "_operator", broken)
    with pytest.raises(ModuleNotFoundError, match=r"longshot\.nothing"):
        main_module.main(["operator"])


def test_every_command_but_crds_has_an_extra() -> None:
    assert set(main_module.EXTRAS) == {"operator", "gateway", "agent", "mcp"}
    assert set(main_module.EXTRAS.values()) <= {"operator", "gateway", "agent"}
