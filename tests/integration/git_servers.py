"""Real git servers on loopback, shared by the agent runner's and the merge queue's tests: ``git daemon``,
git smart HTTP (``git http-backend`` as CGI) behind Basic or header auth, port helpers and a ``git`` runner.
No mock of git anywhere. Each suite keeps its own identity and repository helpers on top of these."""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from longshot_testing import wait_for
from longshot_testing.controlplane import free_port

__all__ = ["Git", "GitDaemon", "GitHTTPServer", "SlowGitHTTPServer", "basic_auth", "free_port", "git_daemon",
           "git_http", "port_open", "slow_git_http"]


def port_open(port: int) -> bool:
    """True once something accepts connections on ``127.0.0.1:port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@dataclass(frozen=True)
class Git:
    """Runs git the way one suite does: in ``os.environ`` plus ``identity`` (with ``isolated``, the caller's own
    GIT_* variables are dropped first), with ``options`` before every command; returns stdout (stripped when
    ``strip``) and raises AssertionError with git's stderr on failure unless ``check=False``."""

    identity: Mapping[str, str]
    isolated: bool = False
    options: tuple[str, ...] = ()
    strip: bool = False

    @property
    def env(self) -> dict[str, str]:
        """The environment git runs in, read from ``os.environ`` now."""
        inherited = {k: v for k, v in os.environ.items() if not (self.isolated and k.startswith("GIT_"))}
        return inherited | dict(self.identity)

    def __call__(self, *args: str, cwd: Path | None = None, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(["git", *self.options, *args], cwd=cwd, input=input, capture_output=True, text=True,
                                env=self.env, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip() if self.strip else result.stdout


# --- git daemon --------------------------------------------------------------------------------------

@dataclass
class GitDaemon:
    """``git daemon`` exporting every repository under ``root`` (read and push) on ``127.0.0.1:port``."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"


@contextlib.contextmanager
def git_daemon(root: Path, *, git: Git, timeout: float) -> Iterator[GitDaemon]:
    """Run ``git daemon`` over ``root`` (in ``git``'s environment) until the block ends; wait up to ``timeout``
    seconds for it to listen."""
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", "--enable=receive-pack", f"--base-path={root}", f"--port={port}",
         "--reuseaddr", "--listen=127.0.0.1", "--informative-errors", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=git.env, start_new_session=True,
    )
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, timeout, "git daemon to listen")
        assert proc.poll() is None, "git daemon exited at start"
        yield GitDaemon(root, port, proc)
    finally:
        # the daemon forks a child per connection: stop the whole process group, not only the parent
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- git smart HTTP, behind Basic or header auth -----------------------------------------------------

def basic_auth(user: str, password: str) -> str:
    """The Authorization header value git sends for ``user``/``password``."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class _GitHTTPHandler(http.server.BaseHTTPRequestHandler):
    server: GitHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        auth = self.headers.get("Authorization", "")
        user = self.server.users.get(auth)
        self.server.auth_headers.append(auth)
        self.server.requests.append((self.command, self.path, user))
        if user is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self._body()
        env = self.server.git.env | {
            "GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user, "REMOTE_ADDR": "127.0.0.1", "GATEWAY_INTERFACE": "CGI/1.1",
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
        out = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env, check=False).stdout
        head, sep, payload = out.partition(b"\r\n\r\n")
        if not sep:
            head, _, payload = out.partition(b"\n\n")
        headers = [line.split(":", 1) for line in head.decode().splitlines() if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class GitHTTPServer(http.server.ThreadingHTTPServer):
    """git smart HTTP serving the bare repositories under ``root``. A request is let in when its Authorization
    header is Basic for one of ``accounts`` (user, password) or exactly one of ``headers`` (a value such as
    ``Bearer <token>``, as git's ``http.extraHeader`` sends it, mapped to the user it stands for); else 401.
    Records every request's raw Authorization header (``auth_headers``, "" when none) and its
    (method, path, user) with user None when refused (``requests``)."""

    daemon_threads = True

    def __init__(self, root: Path, *, git: Git, accounts: Iterable[tuple[str, str]] = (),
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _GitHTTPHandler)
        self.root = root
        self.git = git
        self.users: dict[str, str] = {basic_auth(u, p): u for u, p in accounts} | dict(headers or {})
        self.auth_headers: list[str] = []
        self.requests: list[tuple[str, str, str | None]] = []

    @property
    def accepted(self) -> set[str]:
        """Every Authorization header value that is let in."""
        return set(self.users)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"


@contextlib.contextmanager
def git_http(root: Path, *, git: Git, accounts: Iterable[tuple[str, str]] = (),
             headers: Mapping[str, str] | None = None) -> Iterator[GitHTTPServer]:
    """Serve ``root`` over smart HTTP (see GitHTTPServer) until the block ends."""
    with _serving(GitHTTPServer(root, git=git, accounts=accounts, headers=headers)) as server:
        yield server


class _SlowHandler(_GitHTTPHandler):
    server: SlowGitHTTPServer

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.in_flight += 1
            self.server.seen += 1
        try:
            time.sleep(self.server.delay)  # the server is slow: what the tests are about, not a synchronisation
            self._cgi()
        finally:
            with self.server.lock:
                self.server.in_flight -= 1
                self.server.answered += 1


class SlowGitHTTPServer(GitHTTPServer):
    """git smart HTTP with no authentication whose ref advertisement (``GET .../info/refs``, the first request of
    ``git ls-remote``, fetch and push) comes ``delay`` seconds late; counts the advertisements being served now
    (``in_flight``), ever (``seen``) and answered (``answered``)."""

    def __init__(self, root: Path, *, git: Git, delay: float) -> None:
        super().__init__(root, git=git, headers={"": "anonymous"})
        self.RequestHandlerClass = _SlowHandler
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.seen = 0
        self.answered = 0


@contextlib.contextmanager
def slow_git_http(root: Path, *, git: Git, delay: float) -> Iterator[SlowGitHTTPServer]:
    """Serve ``root`` over smart HTTP ``delay`` seconds late (see SlowGitHTTPServer) until the block ends."""
    with _serving(SlowGitHTTPServer(root, git=git, delay=delay)) as server:
        yield server


S = TypeVar("S", bound=GitHTTPServer)


@contextlib.contextmanager
def _serving(server: S) -> Iterator[S]:
    """Run ``server`` on a thread of its own until the block ends, then shut it down."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
