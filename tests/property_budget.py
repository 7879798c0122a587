"""How many examples a property test tries, by Hypothesis profile (tests/conftest.py registers them).

A test that wants a deep search writes ``@settings(max_examples=examples(600), deadline=None)``: under the "ci"
profile (HYPOTHESIS_PROFILE=ci, which .ci/run sets) it tries its 600, under the light default a tenth of them, and
never fewer than the profile's own count. A test's own figure would otherwise win over every profile, and the
default unit tier would pay for CI's depth on every run.
"""

from __future__ import annotations

import os

from hypothesis import settings

SHARE = 10
"""The default profile tries one example in SHARE of a test's CI figure: the unit tier's budget is one minute."""


def examples(ci: int) -> int:
    """``max_examples`` for a test that tries ``ci`` examples in CI."""
    if os.environ.get("HYPOTHESIS_PROFILE") == "ci":
        return ci
    return max(settings.default.max_examples, ci // SHARE)
