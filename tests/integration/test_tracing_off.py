"""``longshot.tracing`` when off, in a fresh interpreter: one shared no-op span, and no OpenTelemetry SDK imported
(the spans themselves: tests/unit/controllers/test_tracing_spans.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_off_is_one_shared_no_op_and_imports_no_sdk():
    code = ("import sys\nfrom longshot import tracing\n"
            "a = tracing.span('x', {'k': 1})\nb = tracing.span('y')\nassert a is b\n"
            "with a as s:\n    s.set('k', 2); s.error('e')\n"
            "tracing.emit(tracing.record('z', tracing.build_span('u'), None, __import__('datetime').datetime.now(),"
            " __import__('datetime').datetime.now()))\n"
            "assert tracing.current_traceparent() is None and tracing.inject({}) == {}\n"
            "assert tracing.setup_from_env(tracing.OPERATOR, {}) is False\n"
            "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
