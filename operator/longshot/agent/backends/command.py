"""The command backend: run an external CLI agent (Claude Code, Codex, Aider, ...) in the checkout.

The template is a shell command line whose placeholders are replaced by shell-quoted values:
``{prompt}`` (system prompt and task prompt), ``{prompt_file}`` (the same text in a file: prefer it
for long prompts, a single argument is limited to 128 KiB), ``{model}``, ``{workdir}`` and
``{result_file}``. Examples: ``claude -p {prompt}``, ``codex exec {prompt}``,
``aider --yes --message-file {prompt_file}``.

In a Pod the CLI reaches models through longshot-gateway: it gets ``OPENAI_BASE_URL``,
``ANTHROPIC_BASE_URL``, ``LONGSHOT_GATEWAY_URL`` and, as ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY`` and
``LONGSHOT_API_KEY``, the Pod's token: a key only the gateway accepts, for this attempt only.

The CLI edits the workspace; the runner commits whatever diff it leaves. A planner or reviewer CLI
reports its result as a JSON object (``{"summary": ..., "tasks": [...]}`` or ``{"verdict": ...}``)
written to ``$LONGSHOT_RESULT_FILE`` or printed as the last JSON line of its output.

Token usage is taken from the output where the CLI prints it: Aider's ``Tokens: 1.6k sent, 7 received.``
lines are summed (a ``k`` is rounded to the hundred, as Aider prints it).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

from longshot.agent import errors, sandbox, tools
from longshot.agent.backends import base

PLACEHOLDER = re.compile(r"\{(prompt|prompt_file|model|workdir|result_file)\}")
AIDER_TOKENS = re.compile(r"^Tokens: ([\d.]+)(k?) sent, ([\d.]+)(k?) received", re.MULTILINE)


def render(template: str, values: dict[str, str]) -> str:
    """The command line with every known placeholder replaced by its shell-quoted value."""
    return PLACEHOLDER.sub(lambda m: shlex.quote(values[m.group(1)]), template)


def usage_from_output(output: str) -> tuple[int, int]:
    """``(input, output)`` tokens the CLI reported in its output (Aider's ``Tokens:`` lines); 0 when none."""
    sent = received = 0
    for m in AIDER_TOKENS.finditer(output):
        sent += round(float(m.group(1)) * (1000 if m.group(2) else 1))
        received += round(float(m.group(3)) * (1000 if m.group(4) else 1))
    return sent, received


def last_json_object(output: str) -> dict[str, Any] | None:
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


class CommandBackend(base.Backend):
    name = "command"

    def __init__(self, *, template: str, model: str | None = None, timeout: float = 3600.0,
                 output_cap: int = sandbox.DEFAULT_OUTPUT_CAP,
                 env_source: Callable[[], dict[str, str]] | None = None) -> None:
        if not template or not template.strip():
            raise errors.ConfigError("the command backend needs spec.agent.command (e.g. 'claude -p {prompt}')")
        self.template = template
        self.model = model or ""
        self.timeout = timeout
        self.output_cap = output_cap
        self.env_source = env_source
        """Extra variables read when the CLI starts: the gateway's base URLs and this attempt's key."""

    def run(self, session: base.Session) -> tools.Finish:
        prompt = f"{session.system_prompt}\n\n{session.prompt}"
        prompt_file = session.scratch / "prompt.md"
        prompt_file.write_text(prompt)
        result_file = session.scratch / "result.json"
        result_file.unlink(missing_ok=True)
        command = render(self.template, {"prompt": prompt, "prompt_file": str(prompt_file), "model": self.model,
                                         "workdir": str(session.workdir), "result_file": str(result_file)})
        env = dict(session.toolbox.sandbox.env)
        env.update({"LONGSHOT_RESULT_FILE": str(result_file), "LONGSHOT_ROLE": session.role,
                    "LONGSHOT_PROMPT_FILE": str(prompt_file)})
        if self.env_source is not None:
            env.update(self.env_source())  # the gateway: its URLs and this attempt's key, over the user's
        elif session.api_key:
            for name in ("LONGSHOT_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
                env.setdefault(name, session.api_key)
        session.events.log("running command agent", command=sandbox.truncate(self.template, 300))
        result = sandbox.run(["/bin/sh", "-c", command], cwd=session.workdir, env=env, timeout=self.timeout,
                             output_cap=self.output_cap)
        output = session.events.redactor.text(result.output)
        session.events.emit("tool_call", tool="command", ok=result.exit_code == 0,
                            exit_code=result.exit_code, result=sandbox.truncate(output, 2000))
        tokens = usage_from_output(output)
        if tokens != (0, 0):
            session.add_usage(*tokens)
        if result.timed_out:
            raise errors.AgentTimeout(f"the command agent did not finish within {self.timeout:g}s and was killed")
        if result.exit_code != 0:
            raise errors.AgentError(
                f"the command agent exited with code {result.exit_code}: {sandbox.truncate(output, 1500)}"
            )
        payload = _result(result_file) or (last_json_object(output) if session.role in ("planner", "reviewer")
                                           else None) or {}
        payload.setdefault("summary", sandbox.truncate(output.strip(), 4000))
        answer = session.toolbox.call("finish", payload)
        if session.toolbox.finished is None:
            raise errors.AgentError(f"the command agent's result is invalid: {answer.content}")
        return session.toolbox.finished


def _result(path) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise errors.AgentError(f"the command agent's result file is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise errors.AgentError("the command agent's result file must hold a JSON object")
    return value
