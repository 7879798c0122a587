"""A kubelet's log endpoint, for ``kubectl longshot logs -f`` on the real API server: the integration tier runs no
kubelet, so this serves ``/containerLogs/<namespace>/<pod>/<container>`` for one Node it registers (its address
127.0.0.1 and this server's port), over TLS with the API server's own certificate (signed by the tier's CA, which
the tier's API server trusts for kubelets: conftest's ``--kubelet-certificate-authority``). The API server proxies
``pods/log`` here as it would to a kubelet; the test writes the log a line at a time and ends it.
"""

from __future__ import annotations

import queue
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes


class LogKubelet:
    """``with LogKubelet(core, pki, node) as k``: ``k.write(line)`` appends to the followed log, ``k.end()`` ends it;
    ``k.requests`` are the paths the API server asked for."""

    def __init__(self, core: kubernetes.client.CoreV1Api, pki: Path, node: str) -> None:
        self.core, self.node = core, node
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if not self.path.startswith("/containerLogs/"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()  # HTTP/1.0: the log ends when the connection closes
                while (line := outer.lines.get(timeout=60)) is not None:
                    self.wfile.write(line.encode())
                    self.wfile.flush()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki / "apiserver.crt", pki / "apiserver.key")
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def write(self, line: str) -> None:
        self.lines.put(line)

    def end(self) -> None:
        self.lines.put(None)

    def __enter__(self) -> LogKubelet:
        self.thread.start()
        self.core.create_node({"metadata": {"name": self.node}})
        self.core.patch_node_status(self.node, {"status": {
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}}}})
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()
        self.server.shutdown()
        self.server.server_close()
        try:
            self.core.delete_node(self.node)
        except kubernetes.client.ApiException as e:
            if e.status != 404:
                raise


def restricted_pod(name: str, node: str) -> dict[str, Any]:
    """An agent Pod as far as ``pods/log`` cares (bound to ``node``; the namespace's Pod Security is restricted)."""
    return {"metadata": {"name": name}, "spec": {
        "nodeName": node, "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                              "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "agent", "image": "example.test/agent:1", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}
