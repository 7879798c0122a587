"""Real git servers for the merge-queue tests: bare repositories in a temporary directory (``file://``)
and ``git daemon`` on loopback. No mock of git anywhere."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Agent", "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "Agent", "GIT_COMMITTER_EMAIL": "agent@example.com",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}


def git(*args: str, cwd: Path | None = None, input: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    proc = subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=env, input=input,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


@dataclass
class Server:
    """One bare repository (the git server's copy) and a scratch clone to make commits with."""

    bare: Path
    work: Path
    url: str

    def commit(self, branch: str, files: dict[str, str | None], *, start: str = "main",
               message: str = "change", author: str = "Agent <agent@example.com>") -> str:
        """Commit ``files`` (None deletes) on ``branch`` (created from ``start`` if new) and push it."""
        git("fetch", "--quiet", "origin", cwd=self.work)
        exists = bool(git("ls-remote", "--heads", "origin", branch, cwd=self.work))
        git("checkout", "--quiet", "-B", branch, f"origin/{branch if exists else start}", cwd=self.work)
        for rel, content in files.items():
            path = self.work / rel
            if content is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        git("add", "--all", cwd=self.work)
        git("commit", "--quiet", f"--author={author}", "-m", message, cwd=self.work)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return self.head(branch)

    def head(self, branch: str = "main") -> str:
        return git("rev-parse", f"refs/heads/{branch}", cwd=self.bare)

    def parents(self, rev: str) -> list[str]:
        return git("rev-list", "--parents", "-n1", rev, cwd=self.bare).split()[1:]

    def message(self, rev: str) -> str:
        return git("log", "-1", "--format=%B", rev, cwd=self.bare)

    def author(self, rev: str) -> str:
        return git("log", "-1", "--format=%an <%ae>", rev, cwd=self.bare)

    def first_parent_log(self, rev: str = "main") -> list[str]:
        return git("rev-list", "--first-parent", rev, cwd=self.bare).split()

    def show(self, rev: str, path: str) -> str:
        return git("show", f"{rev}:{path}", cwd=self.bare)

    def is_ancestor(self, a: str, b: str) -> bool:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
        return subprocess.run(["git", "merge-base", "--is-ancestor", a, b], cwd=self.bare, env=env,
                              check=False).returncode == 0


def make_server(root: Path, name: str, url: str | None = None) -> Server:
    bare = root / f"{name}.git"
    git("init", "--quiet", "--bare", str(bare))
    work = root / f"{name}.work"
    git("clone", "--quiet", str(bare), str(work))
    server = Server(bare, work, url or f"file://{bare}")
    (work / "README.md").write_text("# app\n")
    (work / "app.py").write_text("def greet():\n    return 'hi'\n")
    git("add", "--all", cwd=work)
    git("commit", "--quiet", "-m", "Initial commit", cwd=work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)
    return server


@dataclass
class Daemon:
    root: Path
    port: int

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}.git"


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0




class _GitHTTPHandler(http.server.BaseHTTPRequestHandler):
    """git smart HTTP (``git http-backend`` as CGI) behind Basic or Bearer auth."""

    server: GitHTTPServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def _cgi(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.server.auth_headers.append(auth)
        if auth not in self.server.accepted:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV | {
            "GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
            "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_USER": "bot",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "REMOTE_ADDR": "127.0.0.1"}
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


class GitHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, accepted: set[str]) -> None:
        super().__init__(("127.0.0.1", 0), _GitHTTPHandler)
        self.root = root
        self.accepted = accepted
        self.auth_headers: list[str] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}.git"
