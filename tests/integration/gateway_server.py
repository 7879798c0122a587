"""The real longshot-gateway, in-process on a thread of its own (its own event loop), for the integration tier.

It talks to the test control plane with the admin kubeconfig; the chart's RBAC for it is checked by test_rbac. Its
watch cache watches the test's namespace only (``watch_namespaces``). ``allow_file_urls`` is on: the tier's
repositories are file:// URLs. The egress policy lists loopback (``egress_allowed_cidrs``): the tier's git, model
and tracker servers listen there.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import kubernetes

from longshot.gateway import cluster as gcluster
from longshot.gateway import server
from longshot.gateway.settings import GatewaySettings


class GatewayThread:
    def __init__(self, kubeconfig: Path, settings: GatewaySettings) -> None:
        self.kubeconfig = kubeconfig
        self.settings = settings
        self.port = 0
        self.gateway: server.Gateway | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="longshot-gateway", daemon=True)

    @property
    def url(self) -> str:
        """The agents' port."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """The metrics and probe port (``/metrics``, ``/healthz``, ``/readyz``)."""
        assert self.gateway is not None and self.gateway.metrics_port
        return f"http://127.0.0.1:{self.gateway.metrics_port}"

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        assert self.port, "the gateway did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # surfaced by __enter__
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        client = kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig))
        self.gateway = server.Gateway(gcluster.Cluster(client), self.settings)
        runner, self.port = await server.serve(self.gateway, "127.0.0.1", self.settings.port,
                                               self.settings.metrics_port)
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()
            client.close()


def settings_for(namespace: str, workdir: Path, **overrides: Any) -> GatewaySettings:
    base = GatewaySettings(port=0, metrics_port=0, namespace=namespace, mirror_dir=str(workdir / "gateway-mirrors"),
                           allow_file_urls=True, token_cache_seconds=1.0, usage_cache_seconds=0.0,
                           progress_min_interval_seconds=0.0, heartbeat_write_seconds=0.0,
                           default_backoff_seconds=5.0,
                           identity_cache_seconds=1.0, egress_allowed_cidrs="127.0.0.0/8,::1/128",
                           watch_namespaces=namespace, mirror_max_age_seconds=0.0)
    return base.replace(**overrides)
