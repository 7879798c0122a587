"""Test support shipped with the package: the real control plane and the one polling helper."""

from longshot.testing.controlplane import wait_until as wait_for

__all__ = ["wait_for"]
