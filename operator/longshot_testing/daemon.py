"""What the local cluster's small reconcile daemons (``netpolicy``, ``serviceproxy``) share: an API client from a
kubeconfig, and a stop flag set by SIGTERM or SIGINT."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes


def api_client(kubeconfig: Path) -> Any:
    """A ``kubernetes.client.ApiClient`` for ``kubeconfig``."""
    new_client: Any = kubernetes.config.new_client_from_config
    return new_client(config_file=str(kubeconfig))


def stop_on_term() -> Callable[[], bool]:
    """Install SIGTERM and SIGINT handlers; the returned function says whether either has arrived."""
    stopped = False

    def on_term(*_: Any) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return lambda: stopped
