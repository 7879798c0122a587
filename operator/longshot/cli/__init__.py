"""``kubectl longshot``: the kubectl plugin for people in the loop (``longshot.cli.main``).

A thin client: it reads and patches Longshot's resources through the Kubernetes API with the user's own kubeconfig
and RBAC, and decides nothing the operator decides. ``view`` is pure (it shapes what was read, for ``tree``).
"""
