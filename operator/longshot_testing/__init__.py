"""Test support for the tiers, benchmarks and the demo: the real control plane, the local cluster and the one
polling helper. It lives beside the product package and is not shipped: the wheel and the images leave it out
(``[tool.setuptools.packages.find]`` in pyproject.toml, ``hack/images.sh``), and the product never imports it
(.importlinter's test-support-not-shipped contract). It runs from a checkout, with ``operator/`` on the path."""

from longshot_testing.controlplane import wait_until as wait_for

__all__ = ["wait_for"]
