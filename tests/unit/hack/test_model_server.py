"""``hack/model_server.py``, the real-model tier's OpenAI-compatible server, without a model: the grammars it builds
from tool schemas (checked by a small GBNF recogniser written here, so that a grammar that accepts a malformed call,
or refuses a good one, fails), the conversation it renders, the requests it refuses (naming the field), and its
HTTP surface with a fake engine behind the same interface as llama.cpp's. The real engine runs in ``make test-llm``
and ``make e2e-llm``."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

import hack_modules
from longshot.agent.backends import openai

pytestmark = pytest.mark.unit

ms = hack_modules.load("model_server")


# --- a small GBNF recogniser (the subset the server writes) ---------------------------------------------------------

@dataclass
class Node:
    kind: str  # lit, cls, ref, alt
    value: Any
    low: int = 1
    high: int | None = 1


class GBNF:
    def __init__(self, text: str):
        self.rules: dict[str, Node] = {}
        for line in text.splitlines():
            if line.strip():
                name, expr = line.split(" ::= ", 1)
                self.src, self.i = expr, 0
                self.rules[name.strip()] = self._alt()
                assert self.i == len(self.src), (name, expr, self.i)

    def _ws(self) -> None:
        while self.i < len(self.src) and self.src[self.i] == " ":
            self.i += 1

    def _alt(self) -> Node:
        options = [self._seq()]
        while self.i < len(self.src) and self.src[self.i] == "|":
            self.i += 1
            options.append(self._seq())
        return Node("alt", options)

    def _seq(self) -> list[Node]:
        items = []
        while True:
            self._ws()
            if self.i >= len(self.src) or self.src[self.i] in "|)":
                return items
            items.append(self._quant(self._atom()))

    def _char(self) -> str:
        ch = self.src[self.i]
        self.i += 1
        if ch != "\\":
            return ch
        esc = self.src[self.i]
        self.i += 1
        assert esc in 'xuUtrn\\"[]', f"llama.cpp's GBNF parser knows no escape \\{esc}"
        if esc == "x":
            code = self.src[self.i:self.i + 2]
            self.i += 2
            return chr(int(code, 16))
        if esc == "u":
            code = self.src[self.i:self.i + 4]
            self.i += 4
            return chr(int(code, 16))
        return {"n": "\n", "t": "\t", "r": "\r"}.get(esc, esc)

    def _atom(self) -> Node:
        ch = self.src[self.i]
        if ch == '"':
            self.i += 1
            out = []
            while self.src[self.i] != '"':
                out.append(self._char())
            self.i += 1
            return Node("lit", "".join(out))
        if ch == "[":
            self.i += 1
            negated = self.src[self.i] == "^"
            if negated:
                self.i += 1
            ranges = []
            while self.src[self.i] != "]":
                lo = self._char()
                hi = lo
                if self.src[self.i] == "-" and self.src[self.i + 1] != "]":
                    self.i += 1
                    hi = self._char()
                ranges.append((lo, hi))
            self.i += 1
            return Node("cls", (negated, ranges))
        if ch == "(":
            self.i += 1
            inner = self._alt()
            assert self.src[self.i] == ")"
            self.i += 1
            return inner
        m = re.compile(r"[a-zA-Z0-9-]+").match(self.src, self.i)
        assert m, self.src[self.i:]
        self.i = m.end()
        return Node("ref", m.group())

    def _quant(self, node: Node) -> Node:
        if self.i >= len(self.src):
            return node
        ch = self.src[self.i]
        bounds = {"?": (0, 1), "*": (0, None), "+": (1, None)}.get(ch)
        if bounds:
            self.i += 1
        elif ch == "{":
            m = re.compile(r"\{(\d+)(,(\d*))?\}").match(self.src, self.i)
            assert m
            self.i = m.end()
            low = int(m.group(1))
            bounds = (low, low) if m.group(2) is None else (low, int(m.group(3)) if m.group(3) else None)
        else:
            return node
        return Node("alt", [[node]], bounds[0], bounds[1])

    def _one(self, node: Node, s: str, i: int) -> Iterator[int]:
        if node.kind == "lit":
            if s.startswith(node.value, i):
                yield i + len(node.value)
        elif node.kind == "cls":
            negated, ranges = node.value
            if i < len(s) and any(lo <= s[i] <= hi for lo, hi in ranges) != negated:
                yield i + 1
        elif node.kind == "ref":
            yield from self._match(self.rules[node.value], s, i)
        else:
            for seq in node.value:
                yield from self._seq_match(seq, s, i)

    def _seq_match(self, seq: list[Node], s: str, i: int) -> Iterator[int]:
        if not seq:
            yield i
            return
        for j in self._match(seq[0], s, i):
            yield from self._seq_match(seq[1:], s, j)

    def _match(self, node: Node, s: str, i: int, count: int = 0) -> Iterator[int]:
        if node.low == 1 and node.high == 1:
            yield from self._one(node, s, i)
            return
        if node.high is None or count < node.high:
            for j in self._one(Node(node.kind, node.value), s, i):
                if j > i:
                    yield from self._match(node, s, j, count + 1)
        if count >= node.low:
            yield i

    def accepts(self, s: str) -> bool:
        return any(j == len(s) for j in self._match(self.rules["root"], s, 0))


def call(name: str, arguments: Any) -> str:
    return json.dumps({"name": name, "arguments": arguments})


def tools(role: str) -> list[Any]:
    return [ms.Tool(t["function"]["name"], t["function"]["description"], t["function"]["parameters"])
            for t in openai.tool_definitions(role)]


# --- grammars --------------------------------------------------------------------------------------------------------

def test_the_grammar_for_the_workers_tools_accepts_their_calls_and_nothing_else():
    g = GBNF(ms.tool_call_grammar(tools("worker")))
    assert g.accepts(call("write_file", {"path": "hello.txt", "content": "hello"}))
    assert g.accepts('{ "name": "read_file" , "arguments": { "path": "a.py" } }')  # the spaces the model writes
    assert g.accepts(call("write_file", {"path": "a", "content": "line one\nline two \u00e9 \"quoted\""}))
    assert g.accepts(call("finish", {"summary": "done"}))
    assert not g.accepts(call("delete_everything", {"path": "/"}))  # not a tool
    assert not g.accepts(call("write_file", {"path": "hello.txt"}))  # content is required
    assert not g.accepts(call("read_file", {"path": 7}))  # a string
    assert not g.accepts('{"name": "finish", "arguments": {"summary": "raw\nnewline"}}')  # invalid JSON
    assert not g.accepts('{"name": "finish"}')
    assert not g.accepts("I will write the file now.")


def test_the_planners_task_names_must_be_dns_labels_and_required_fields_are_there():
    g = GBNF(ms.tool_call_grammar([t for t in tools("planner") if t.name == "finish"]))
    task = {"name": "add-hello", "description": "create hello.txt"}
    assert g.accepts(call("finish", {"summary": "one task", "tasks": [task]}))
    assert g.accepts(call("finish", {"summary": "s", "tasks": [{**task, "scope": ["hello.txt"], "priority": 3}]}))
    assert g.accepts(call("finish", {"summary": "nothing to do", "tasks": [], "done": True}))
    assert not g.accepts(call("finish", {"summary": "s", "tasks": [{**task, "name": "Add Hello"}]}))
    assert not g.accepts(call("finish", {"summary": "s", "tasks": [{**task, "name": "-hello"}]}))
    assert not g.accepts(call("finish", {"summary": "s", "tasks": [{**task, "name": "a" * 41}]}))
    assert not g.accepts(call("finish", {"summary": "s", "tasks": [{"name": "x"}]}))  # description required
    assert not g.accepts(call("finish", {"summary": "s"}))  # tasks required


def test_one_forced_tool_makes_the_only_name_the_grammar_accepts():
    only = [t for t in tools("worker") if t.name == "finish"]
    g = GBNF(ms.tool_call_grammar(only))
    assert g.accepts(call("finish", {"summary": "x"}))
    assert not g.accepts(call("write_file", {"path": "a", "content": "b"}))


@pytest.mark.parametrize(("schema", "good", "bad"), [
    ({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}},
     [{}, {"a": "x"}, {"b": -3}, {"a": "x", "b": 2}], [{"a": 1}, {"b": "2"}]),
    ({"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}, "minItems": 1,
                                              "maxItems": 2}}, "required": ["xs"]},
     [{"xs": [1]}, {"xs": [1, 2]}], [{"xs": []}, {"xs": [1, 2, 3]}]),
    ({"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}}}, "required": ["xs"]},
     [{"xs": []}, {"xs": list(range(16))}], [{"xs": list(range(17))}]),  # unbounded: MAX_ITEMS
    ({"type": "object", "properties": {"mode": {"enum": ["fast", "slow"]}, "on": {"type": "boolean"}},
      "required": ["mode"]},
     [{"mode": "fast"}, {"mode": "slow", "on": False}], [{"mode": "medium"}, {"on": True}]),
    ({"type": "object", "properties": {"any": {}}, "required": ["any"]},
     [{"any": 1}, {"any": {"k": [1, "two", None, 2.5e3]}}], [{}]),
    ({"type": "object", "properties": {"v": {"type": ["string", "null"]}}, "required": ["v"]},
     [{"v": "x"}, {"v": None}], [{"v": 1}]),
])
def test_schema_keywords(schema, good, bad):
    g = GBNF(ms.tool_call_grammar([ms.Tool("t", "", schema)]))
    for args in good:
        assert g.accepts(call("t", args)), args
    for args in bad:
        assert not g.accepts(call("t", args)), args


@pytest.mark.parametrize(("pattern", "good", "bad"), [
    (r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$", ["a", "fix-login", "x1"], ["", "-a", "a-", "A", "a b"]),
    (r"^v\d+\.\d+$", ["v1.2", "v10.0"], ["v1", "1.2", "v1x2"]),
    (r"(?:ab|cd)+", ["ab", "abcd"], ["", "abc"]),
    (r"^[^/]+$", ["a.txt", "x y"], ["a/b", ""]),
    (r"^\w+\s\w+$", ["hello world"], ["hello  world"]),
    (r"^[a\-z^]+$", ["a-z^", "^"], ["b"]),
    (r"^[\^x]$", ["^", "x"], ["y"]),
    (r"^[^\-]+$", ["abc"], ["a-b"]),
])
def test_string_patterns_are_enforced(pattern, good, bad):
    g = GBNF(ms.tool_call_grammar([ms.Tool("t", "", {"type": "object", "properties": {"s": {
        "type": "string", "pattern": pattern}}, "required": ["s"]})]))
    for s in good:
        assert g.accepts(call("t", {"s": s})), s
    for s in bad:
        assert not g.accepts(call("t", {"s": s})), s


@pytest.mark.parametrize("pattern", [r"(?=a)b", r"(a)\1", "a{1,5000}", "x" * 600, "[a-z"])
def test_a_pattern_the_converter_cannot_translate_leaves_any_string(pattern):
    with pytest.raises(ms.Unsupported):
        ms.regex_to_gbnf(pattern)
    g = GBNF(ms.tool_call_grammar([ms.Tool("t", "", {"type": "object", "properties": {"s": {
        "type": "string", "pattern": pattern}}, "required": ["s"]})]))
    assert g.accepts(call("t", {"s": "anything at all"}))


def test_a_schema_with_too_many_rules_is_refused_naming_tools():
    props = {f"p{i}": {"enum": [i]} for i in range(ms.MAX_RULES + 10)}
    with pytest.raises(ms.BadRequest) as e:
        ms.tool_call_grammar([ms.Tool("t", "", {"type": "object", "properties": props})])
    assert e.value.param == "tools"


def test_deep_schemas_are_bounded():
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(50):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    grammar = ms.tool_call_grammar([ms.Tool("t", "", schema)])
    assert len(grammar.splitlines()) < 60  # past MAX_DEPTH: any value
    deeper = schema
    for _ in range(2000):  # past Python's recursion limit, were the prompt's summary unbounded
        deeper = {"type": "array", "items": deeper}
    prompt = ms.tools_prompt([ms.Tool("t", "", deeper)])
    assert "list of list of" in prompt and "any" in prompt


# --- requests and conversations --------------------------------------------------------------------------------------

WORKER_TOOLS = openai.tool_definitions("worker")


def test_the_conversation_renders_tool_calls_and_results_and_puts_the_tools_last():
    req = ms.parse_request({"model": "m", "tools": WORKER_TOOLS, "tool_choice": "auto", "messages": [
        {"role": "system", "content": "You are a worker."},
        {"role": "user", "content": "Create hello.txt."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "write_file", "arguments": json.dumps({"path": "hello.txt", "content": "hello"})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "wrote 5 bytes"},
        {"role": "user", "content": [{"type": "text", "text": "Now finish."}]},
    ]})
    roles = [r for r, _ in req.turns]
    assert roles == ["system", "user", "assistant", "user"]
    assert req.turns[0][1] == "You are a worker."
    assert json.loads(req.turns[2][1]) == {"name": "write_file", "arguments": {"path": "hello.txt",
                                                                               "content": "hello"}}
    last = req.turns[3][1]
    assert last.startswith("Result of write_file:\nwrote 5 bytes\n\nNow finish.")
    assert "Answer with exactly one JSON object" in last and "- finish{summary: string" in last
    assert [t.name for t in req.tools] == [t["function"]["name"] for t in WORKER_TOOLS]


def test_tool_choice_none_and_no_tools_mean_text():
    for body in ({"messages": [{"role": "user", "content": "hi"}]},
                 {"messages": [{"role": "user", "content": "hi"}], "tools": WORKER_TOOLS, "tool_choice": "none"}):
        req = ms.parse_request(body)
        assert req.tools == [] and req.turns == [("user", "hi")]


def test_a_conversation_that_starts_or_ends_with_the_assistant_still_alternates():
    req = ms.parse_request({"messages": [{"role": "assistant", "content": "Hello."}]})
    assert req.turns == [("user", "(start)"), ("assistant", "Hello."), ("user", "Go on.")]


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "narrator", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages.0.content"),
    ({"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "x"}]}]}, "messages.0.tool_calls"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools.0"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"function": {"name": "a b"}}]}, "tools.0"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": WORKER_TOOLS,
      "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
])
def test_bad_requests_name_the_field(body, param):
    with pytest.raises(ms.BadRequest) as e:
        ms.parse_request(body)
    assert e.value.param == param
    assert e.value.body()["error"]["type"] == "invalid_request_error"


# --- completions with a fake engine ----------------------------------------------------------------------------------

@dataclass
class FakeEngine:
    """Answers each generate() with the next scripted text; records what it was asked; notes overlapping calls."""

    answers: list[str]
    n_ctx: int = 4096
    calls: list[dict[str, Any]] = field(default_factory=list)
    busy: bool = False
    overlapped: bool = False
    delay: float = 0.0

    def generate(self, turns, *, grammar, max_tokens, temperature, seed, stop):  # type: ignore[no-untyped-def]
        if self.busy:
            self.overlapped = True
        self.busy = True
        try:
            time.sleep(self.delay)  # work, so that overlapping requests would show (not synchronisation)
            self.calls.append({"turns": turns, "grammar": grammar, "max_tokens": max_tokens,
                               "temperature": temperature, "seed": seed, "stop": stop})
            text = self.answers.pop(0)
            length = len(text.split())
            return ms.Generation(text, 10, length, "length" if length >= max_tokens else "stop")
        finally:
            self.busy = False


def test_a_complete_call_is_returned_as_an_openai_tool_call():
    engine = FakeEngine([call("read_file", {"path": "a.py"})])
    req = ms.parse_request({"messages": [{"role": "user", "content": "read"}], "tools": WORKER_TOOLS})
    answer = ms.complete(engine, req, alias="gemma", default_max_tokens=512, default_temperature=0.3)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (tc,) = choice["message"]["tool_calls"]
    assert tc["type"] == "function" and tc["id"].startswith("call_")
    assert tc["function"]["name"] == "read_file" and json.loads(tc["function"]["arguments"]) == {"path": "a.py"}
    words = len(call("read_file", {"path": "a.py"}).split())  # the fake's token count
    assert answer["usage"] == {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words}
    assert answer["model"] == "gemma"  # the request named none
    assert engine.calls[0]["grammar"].startswith("root ::= call-")
    assert engine.calls[0]["max_tokens"] == 512 and engine.calls[0]["temperature"] == 0.3
    # the backend reads it as one call
    turn = openai.parse_turn(answer, 1)
    assert [(c.name, json.loads(c.arguments)) for c in turn.calls] == [("read_file", {"path": "a.py"})]


def test_a_call_cut_at_max_tokens_is_text_with_finish_reason_length():
    engine = FakeEngine(['{"name": "write_file", "arguments": {"path": "a", "content": "lo ng'])
    req = ms.parse_request({"messages": [{"role": "user", "content": "w"}], "tools": WORKER_TOOLS, "max_tokens": 3})
    answer = ms.complete(engine, req, alias="g", default_max_tokens=512, default_temperature=0.3)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "length" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"].startswith('{"name"')
    assert engine.calls[0]["max_tokens"] == 3


def test_without_tools_the_answer_is_text_under_no_grammar():
    engine = FakeEngine(["Hello there."])
    req = ms.parse_request({"model": "x", "messages": [{"role": "user", "content": "hi"}], "temperature": 0,
                            "seed": 7, "stop": "\n\n"})
    answer = ms.complete(engine, req, alias="g", default_max_tokens=512, default_temperature=0.3)
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "Hello there."}
    assert answer["choices"][0]["finish_reason"] == "stop" and answer["model"] == "x"
    assert engine.calls[0]["grammar"] is None and engine.calls[0]["temperature"] == 0
    assert engine.calls[0]["seed"] == 7 and engine.calls[0]["stop"] == ["\n\n"]


def test_prose_under_a_tool_grammar_means_the_grammar_was_not_applied_a_500_not_a_silent_answer():
    engine = FakeEngine(["I think I will read the file."])
    req = ms.parse_request({"messages": [{"role": "user", "content": "r"}], "tools": WORKER_TOOLS})
    with pytest.raises(ms.BadRequest) as e:
        ms.complete(engine, req, alias="g", default_max_tokens=512, default_temperature=0.3)
    assert e.value.status == 500 and e.value.body()["error"]["type"] == "server_error"


@pytest.mark.parametrize(("tokens", "loops"), [
    (list(range(40)), False),
    ([1, 2, 3] * 8, True),                    # a period of 3, 8 times
    ([9] * 7 + [5] * 9, True),                # one token over and over
    (list(range(16)) + [1, 2] * 4, True),
    ([7, 8, 9, 10] * 3 + [1, 2, 3, 4], False),  # 3 repeats, then something else
    ([1, 2, 3] * 8 + [4], False),             # checked every 8 tokens only
])
def test_a_looping_answer_is_recognised(tokens, loops):
    assert ms.looping(tokens) is loops


# --- HTTP ---------------------------------------------------------------------------------------------------

@pytest.fixture
def serve():
    servers = []

    def start(engine: FakeEngine, **kw: Any) -> str:
        server = ms.Server(("127.0.0.1", 0), engine, alias="gemma-3-270m", max_body=kw.get("max_body", 1 << 20),
                           max_tokens=256, temperature=0.3, max_tokens_cap=kw.get("cap", 4096),
                           max_waiting=kw.get("waiting", 16))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def post(url: str, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_http_surface(serve):
    base = serve(FakeEngine([call("finish", {"summary": "ok"})]))
    with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
        assert json.loads(r.read())["data"][0]["id"] == "gemma-3-270m"
    with urllib.request.urlopen(base + "/health", timeout=10) as r:
        assert r.status == 200
    status, body = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                        "tools": WORKER_TOOLS})
    assert status == 200 and body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "finish"
    status, body = post(base + "/v1/chat/completions", b"{not json")
    assert status == 400 and "not JSON" in body["error"]["message"]
    status, body = post(base + "/v1/chat/completions", {"messages": [{"role": "bot", "content": "x"}]})
    assert status == 400 and body["error"]["param"] == "messages.0.role"
    status, body = post(base + "/v1/embeddings", {"input": "x"})
    assert status == 404


def test_a_body_nested_past_the_parsers_depth_is_a_400(serve):
    engine = FakeEngine([])
    base = serve(engine)
    status, body = post(base + "/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "not JSON" in body["error"]["message"]
    assert engine.calls == []


def test_a_body_over_the_limit_is_refused_before_it_is_read(serve):
    engine = FakeEngine([])
    base = serve(engine, max_body=1000)
    status, body = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 5000}]})
    assert status == 413 and "at most 1000 bytes" in body["error"]["message"]
    assert engine.calls == []


def test_a_prompt_over_the_context_is_a_400_context_length_exceeded(serve):
    class Full(FakeEngine):
        def generate(self, turns, **kw):  # type: ignore[no-untyped-def]
            raise ms.BadRequest("This model's maximum context length is 4096 tokens; the messages are 9000 tokens",
                                param="messages", code="context_length_exceeded")

    base = serve(Full([]))
    status, body = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    # the backend reads it as the conversation outgrowing the context (an agent error, not retried)
    from longshot.agent.backends import http
    failure = http.invalid_request("OpenAI-compatible API", base, status, body["error"]["message"])
    assert "outgrew the model's context window" in str(failure)


def test_completions_run_one_at_a_time(serve):
    engine = FakeEngine(["a", "b", "c", "d"], delay=0.05)
    base = serve(engine)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(
        post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})[0])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [200] * 4 and len(engine.calls) == 4
    assert not engine.overlapped


def test_max_tokens_is_capped_whatever_the_request_asks(serve):
    engine = FakeEngine(["x"])
    base = serve(engine, cap=100)
    status, _ = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                     "max_tokens": 1_000_000})
    assert status == 200 and engine.calls[0]["max_tokens"] == 100


def test_requests_past_the_waiting_bound_get_a_503(serve):
    entered, gate = threading.Event(), threading.Event()

    class Slow(FakeEngine):
        def generate(self, turns, **kw):  # type: ignore[no-untyped-def]
            entered.set()
            gate.wait(30)
            return super().generate(turns, **kw)

    base = serve(Slow(["a"]), waiting=1)
    first: list[int] = []
    t = threading.Thread(target=lambda: first.append(
        post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})[0]))
    t.start()
    try:
        assert entered.wait(30)  # the first request holds the only waiting place while the model runs
        status, body = post(base + "/v1/chat/completions", {"messages": [{"role": "user", "content": "y"}]})
        assert status == 503 and "busy" in body["error"]["message"]
    finally:
        gate.set()
        t.join(30)
    assert first == [200]
