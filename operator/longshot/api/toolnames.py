"""A persona's tool allowlist, matched by name (pure; shared by the operator's core and the agent runner, which may
not import the core).

An allowlist entry is a built-in tool name (``read_file``), an MCP tool ``SERVER.TOOL``, or every tool of an MCP
server ``SERVER.*``; names are compared as strings, never resolved. No allowlist (None) allows every tool. ``finish``
and ``ask`` are always allowed: without ``finish`` no attempt could end, and ``ask`` is governed by
``spec.agent.allowQuestions``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

ALWAYS_OFFERED: Final = ("finish", "ask")


def allowed(allowlist: Collection[str] | None, tool: str) -> bool:
    """Whether ``tool`` may be offered to the model under ``allowlist``."""
    if allowlist is None or tool in ALWAYS_OFFERED or tool in allowlist:
        return True
    server, dot, rest = tool.partition(".")
    return bool(dot and server and rest) and f"{server}.*" in allowlist
