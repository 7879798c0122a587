"""The e2e tier's trace collector is a real one every time: ``otlp.collector(require_jaeger=True)`` never falls back
to the project's own OTLP receiver unless a person asks for it (issue 52, item 4)."""

from __future__ import annotations

import pytest

from longshot_testing import otlp


def test_a_required_jaeger_that_cannot_be_had_is_an_error_not_a_fallback(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))  # no Go toolchain: Jaeger cannot be built here
    monkeypatch.setenv("LONGSHOT_TOOLS", str(tmp_path / "tools"))
    monkeypatch.delenv("LONGSHOT_TRACING_COLLECTOR", raising=False)
    with pytest.raises(otlp.CollectorUnavailable, match=r"no Go toolchain.*make collector"), \
            otlp.collector(require_jaeger=True):
        pass


def test_without_the_requirement_the_receiver_says_why_it_is_not_jaeger(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("LONGSHOT_TRACING_COLLECTOR", raising=False)
    with otlp.collector() as c:
        assert (c.kind, getattr(c, "why", "")) == ("otlp-receiver", "no Go toolchain to build Jaeger")


def test_a_person_may_still_ask_for_the_receiver(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LONGSHOT_TRACING_COLLECTOR", "receiver")
    with otlp.collector(require_jaeger=True) as c:
        assert c.kind == "otlp-receiver"
