"""The gateway's own part of the ledger, with the real agent runner through the real gateway and a fake model API:
every proxied model call is recorded by the gateway (``source: gateway``: model, status, usage, duration), and a
credential the gateway knows (the repository's password) is redacted even though the agent never knew it."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from gateway_attempts import make_attempt
from gateway_fakes import Reply, openai_json
from test_gateway_agent import PASSWORD, build_spec, finish, forge, model, start_agent  # noqa: F401  (fixtures)

from longshot.core import ledger
from longshot_testing import wait_for

pytestmark = pytest.mark.integration


def stored(core_v1: Any, namespace: str, name: str) -> str | None:
    try:
        cm = core_v1.read_namespaced_config_map(name, namespace)
    except Exception:
        return None
    blob = (cm.binary_data or {}).get(ledger.TRANSCRIPT_KEY)
    return ledger.decompress(base64.b64decode(blob)).decode() if blob else None


def test_each_model_call_is_recorded_by_the_gateway_and_what_it_knows_is_redacted(
        build_spec, gateway, model, core_v1, custom, namespace, tmp_path):  # noqa: F811
    a = make_attempt(core_v1, custom, namespace, gateway.url, build_spec=build_spec)
    model.script(Reply(body=openai_json("gpt-test", (1000, 100), content=f"I found the password {PASSWORD}",
                                        tool=("write_file", {"path": "hello.txt", "content": "hello\n"}))),
                 Reply(body=openai_json("gpt-test", (1200, 50), tool=("finish", {"summary": "hello"}))))
    proc, root = start_agent(a, core_v1, tmp_path)
    code, out, _ = finish(proc, root)
    assert code == 0, out

    def recorded():
        text = stored(core_v1, namespace, "b1-t1-a1-ledger")
        if text is None:
            return None
        events = [json.loads(line) for line in text.splitlines()]
        calls = [e for e in events if e["type"] == "model_call"]
        return (text, events, calls) if len(calls) == 2 else None

    text, events, calls = wait_for(recorded, timeout=30, what="both model calls in the ledger entry")
    assert [(c["source"], c["status"], c["model"], c["inputTokens"], c["outputTokens"]) for c in calls] == [
        ("gateway", 200, "gpt-test", 1000, 100), ("gateway", 200, "gpt-test", 1200, 50)]
    assert all(c["durationSeconds"] >= 0 and c["api"] == "openai" for c in calls)
    assert [e for e in events if e["type"] == "handoff"]
    # the agent's own events are its claims; the model calls are the gateway's record
    assert {e["source"] for e in events if e["type"] != "model_call"} == {"agent"}
    assert PASSWORD not in text and "I found the password ***" in text
