"""A small git forge for the local cluster: git smart HTTP (``git http-backend``) that needs a credential.

Like a real forge, every request (clone, fetch and push) must carry HTTP Basic credentials from the
credentials file (``user:password`` lines); anything else gets 401. The local cluster runs it on the bridge
address in place of an anonymous ``git daemon``, so a Pod that is not given the credential (an agent:
only the gateway is) cannot push at all. Repositories are the bare ``<name>.git`` directories under
``--root``.

::

    python -m longshot_testing.forge --root DIR --host 10.244.0.1 --port 3000 --credentials FILE

Nothing here imports the rest of Longshot.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hmac
import http.server
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from longshot.vcs import gitexec

CHUNK = 64 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    server: Forge
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _user(self) -> str | None:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        expected = self.server.accounts.get(user)
        return user if expected is not None and hmac.compare_digest(expected, password) else None

    def _serve(self) -> None:
        user = self._user()
        if user is None:
            body = b"authentication required\n"
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="longshot-forge"')
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        path, _, query = self.path.partition("?")
        if ".." in path.split("/"):
            self.send_error(400)
            return
        body = self._body()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.server.root),
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "REMOTE_USER": user, "REMOTE_ADDR": self.client_address[0], "GATEWAY_INTERFACE": "CGI/1.1",
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
        out = subprocess.run(list(gitexec.http_backend()), input=body, capture_output=True, env=env, check=False).stdout
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, _, payload = out.partition(b"\n\n")
        headers = [line.split(":", 1) for line in head.decode(errors="replace").splitlines() if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in ("status", "content-length"):
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class Forge(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    """The listen backlog (socketserver's default is 5): with a fleet's pushes, fetches and the merge queue's git at
    once, connections past 5 waiting to be accepted were dropped and their clients tried again a second later."""

    def __init__(self, root: Path, host: str, port: int, accounts: dict[str, str]) -> None:
        super().__init__((host, port), _Handler)
        self.root = root
        self.accounts = accounts


def read_accounts(path: Path) -> dict[str, str]:
    accounts = {}
    for line in path.read_text().splitlines():
        user, sep, password = line.strip().partition(":")
        if sep and user and password:
            accounts[user] = password
    return accounts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longshot_testing.forge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--credentials", type=Path, required=True, help="file of user:password lines")
    args = parser.parse_args(argv)
    accounts = read_accounts(args.credentials)
    if not accounts:
        print(f"no credentials in {args.credentials}", file=sys.stderr)
        return 2
    forge = Forge(args.root, args.host, args.port, accounts)
    print(f"forge serving {args.root} on http://{args.host}:{forge.server_address[1]}/", file=sys.stderr, flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        forge.serve_forever(poll_interval=0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
