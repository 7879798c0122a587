"""Real servers on loopback for the agent runner's tests: git (daemon and smart HTTP with Basic auth)
and fake model APIs (OpenAI-compatible and Anthropic) that replay scripted responses."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def task_input(url: str, *, task: str = "b1-t1", role: str = "worker", **fields: Any) -> dict[str, Any]:
    """A task input (wire form) for ``url``; the build is the task name's first dash-separated word."""
    from longshot.api import handoff

    build = task.split("-", 1)[0]
    data: dict[str, Any] = {
        "task": task, "build": build, "namespace": "default", "role": role,
        "description": fields.pop("description", "Add a farewell function"),
        "repository_url": url, "branch": fields.pop("branch", f"longshot/{build}/{task}"),
    }
    data.update(fields)
    return json.loads(handoff.TaskInput.model_validate(data).model_dump_json(by_alias=True))


def wait_for(predicate: Callable[[], Any], *, timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def git(*args: str, cwd: Path | None = None, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, text=True,
                            env={**os.environ, **GIT_ENV}, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
    return result.stdout


class Repos:
    """Bare repositories under one directory, seeded through a scratch clone."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / f"{name}.git"

    def create(self, name: str, files: dict[str, str], *, branch: str = "main") -> Path:
        bare = self.path(name)
        git("init", "--quiet", "--bare", "--initial-branch", branch, str(bare))
        self.commit(name, files, branch=branch, message="Initial commit", new=True)
        return bare

    def commit(self, name: str, files: dict[str, str | None], *, branch: str = "main", message: str = "change",
               start: str | None = None, new: bool = False) -> str:
        """Commit ``files`` (None deletes) on ``branch`` (created from ``start`` when given) and push."""
        work = self.root / f".work-{name}-{time.monotonic_ns()}"
        if new:
            git("init", "--quiet", "--initial-branch", branch, str(work))
            git("remote", "add", "origin", str(self.path(name)), cwd=work)
        else:
            git("clone", "--quiet", str(self.path(name)), str(work))
            git("checkout", "--quiet", "-B", branch, f"origin/{start or branch}", cwd=work)
        for rel, content in files.items():
            target = work / rel
            if content is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        git("add", "--all", cwd=work)
        git("commit", "--quiet", "-m", message, cwd=work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return git("rev-parse", "HEAD", cwd=work).strip()

    def refs(self, name: str) -> dict[str, str]:
        out = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=self.path(name))
        return dict(line.split(" ", 1) for line in out.splitlines())  # type: ignore[misc]

    def show(self, name: str, rev: str, path: str) -> str:
        return git("show", f"{rev}:{path}", cwd=self.path(name))

    def hook(self, name: str, hook: str, script: str) -> None:
        target = self.path(name) / "hooks" / hook
        target.write_text(script)
        target.chmod(0o755)


@dataclass
class GitDaemon:
    repos: Repos
    port: int
    process: subprocess.Popen[bytes]

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"

    def ls_remote(self, name: str) -> dict[str, str]:
        out = git("ls-remote", self.url(name))
        return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


@contextlib.contextmanager
def git_daemon(root: Path) -> Iterator[GitDaemon]:
    repos = Repos(root)
    port = free_port()
    proc = subprocess.Popen(
        ["git", "daemon", "--export-all", "--enable=receive-pack", f"--base-path={root}", f"--port={port}",
         "--reuseaddr", "--listen=127.0.0.1", "--informative-errors", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **GIT_ENV},
    )
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, what="git daemon to listen")
        assert proc.poll() is None, "git daemon exited at start"
        yield GitDaemon(repos, port, proc)
    finally:
        proc.kill()
        proc.wait()


# --- git smart HTTP, behind Basic auth ---------------------------------------------------------------

class _GitHTTPHandler(http.server.BaseHTTPRequestHandler):
    server: _GitHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        user = self._authorised()
        self.server.requests.append((self.command, self.path, user))
        if user is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {**os.environ, **GIT_ENV, "GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
               "REMOTE_USER": user, "REMOTE_ADDR": "127.0.0.1", "GATEWAY_INTERFACE": "CGI/1.1",
               "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
        out = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env, check=False).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        if not _:
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

    def _authorised(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if (user, password) in self.server.accounts else None

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


class _GitHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    accounts: set[tuple[str, str]]
    requests: list[tuple[str, str, str | None]]


@dataclass
class GitHTTP:
    repos: Repos
    port: int
    server: _GitHTTPServer

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"


@contextlib.contextmanager
def git_http(root: Path, accounts: set[tuple[str, str]]) -> Iterator[GitHTTP]:
    server = _GitHTTPServer(("127.0.0.1", 0), _GitHTTPHandler)
    server.root, server.accounts, server.requests = root, accounts, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield GitHTTP(Repos(root), server.server_address[1], server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- fake model APIs ---------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any


class _ModelHandler(http.server.BaseHTTPRequestHandler):
    server: _ModelServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        with self.server.lock:
            self.server.recorded.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            reply = self.server.replies.pop(0) if self.server.replies else Reply(
                500, {"error": {"message": "the fake model server ran out of scripted replies"}})
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _ModelServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    replies: list[Reply]
    recorded: list[Recorded]
    lock: threading.Lock


@dataclass
class ModelAPI:
    server: _ModelServer

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def requests(self) -> list[Recorded]:
        return self.server.recorded

    def script(self, *replies: Reply) -> None:
        with self.server.lock:
            self.server.replies.extend(replies)


@contextlib.contextmanager
def model_api() -> Iterator[ModelAPI]:
    server = _ModelServer(("127.0.0.1", 0), _ModelHandler)
    server.replies, server.recorded, server.lock = [], [], threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ModelAPI(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# reply builders

def openai_tools(*calls: tuple[str, Any], usage: tuple[int, int] = (100, 20), content: str | None = None) -> Reply:
    """A chat completion whose message calls tools; arguments given as dicts are JSON-encoded, strings
    are sent as they are (to send malformed JSON)."""
    tool_calls = [{"id": f"call_{i}_{name}", "type": "function",
                   "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
                  for i, (name, args) in enumerate(calls)]
    return Reply(body={"id": "chatcmpl-1", "object": "chat.completion", "choices": [{
        "index": 0, "finish_reason": "tool_calls",
        "message": {"role": "assistant", "content": content, "tool_calls": tool_calls}}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}})


def anthropic_tools(*calls: tuple[str, Any], usage: tuple[int, int] = (100, 20), text: str | None = None) -> Reply:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args}
                for i, (name, args) in enumerate(calls)]
    return Reply(body={"id": "msg_1", "type": "message", "role": "assistant", "content": content,
                       "stop_reason": "tool_use", "usage": {"input_tokens": usage[0], "output_tokens": usage[1]}})
