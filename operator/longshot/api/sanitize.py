"""Agent-controlled text made safe to show: for logs, conditions, handoff summaries and Events. Pure.

What an agent writes (a handoff's summary and reasons, a failure message, a pushed ref name, a progress line)
reaches people through ``kubectl describe``, ``kubectl get -o yaml``, terminals tailing logs and log collectors
that split on newlines. Left as is, such text can

* forge a log line (a newline in a pushed ref name: ``refs/heads/x\\n2026-01-01 INFO ...``);
* rewrite a terminal (ANSI escape sequences: move the cursor, clear the screen, set the window title, hide
  text, OSC 8 hyperlinks);
* reorder what is shown (unicode bidirectional overrides, the "Trojan Source" trick).

:func:`clean` removes all of these: C0 controls (but ``\\n`` and ``\\t`` where a multi-line text keeps them),
DEL, C1 controls, whole ANSI escape sequences (CSI, OSC, and the two-character ones), and the bidi embedding,
override and isolate characters. It runs in linear time (escape sequences by one ``re.sub`` over alternatives
without nested repetition, after runs of escape introducers are collapsed; single characters by
``str.translate``) and never raises. :func:`strip_userinfo` removes ``user:token@`` from a URL.
"""

from __future__ import annotations

import re
from typing import Final

_ESCAPES: Final = (
    r"\x1b\[[0-?]*[ -/]*[@-~]?"              # CSI: ESC [ parameters intermediates final
    r"|\x9b[0-?]*[ -/]*[@-~]?"               # 8-bit CSI
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC ... BEL or ST (a window title, a hyperlink)
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"    # 8-bit OSC
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"        # DCS, SOS, PM, APC ... ST
    r"|\x1b[ -/]*[0-~]?"                     # any other escape (ESC c, ESC ( B, ...)
)
_BIDI: Final = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""The arabic letter mark, LRM/RLM, embeddings and overrides (LRE RLE PDF LRO RLO), isolates (LRI RLI FSI PDI)."""
_SEQUENCE: Final = re.compile(_ESCAPES)
_RUNS: Final = re.compile(r"[\x1b\x9b\x9d]{2,}")
_CONTROLS: Final = [*range(0x00, 0x20), *range(0x7F, 0xA0), *map(ord, _BIDI)]
_MULTI_LINE: Final = {c: None for c in _CONTROLS if chr(c) not in "\n\t"}
_ONE_LINE: Final = dict.fromkeys(_CONTROLS)
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@]*@")


def clean(text: str, *, multi_line: bool = True) -> str:
    """``text`` without control characters, escape sequences and bidi overrides.

    ``multi_line`` keeps ``\\n`` and ``\\t`` (a summary, a reason); with ``multi_line=False`` (a log field, a
    ref name, a condition's one-line message) every control character goes, newlines included."""
    if not isinstance(text, str):  # the callers are typed; agent data that is not text is shown as its repr
        text = repr(text)
    if "\x1b" in text or "\x9b" in text or "\x9d" in text:
        # a run of escape introducers is one (each would be a match of its own), then whole sequences go
        text = _SEQUENCE.sub("", _RUNS.sub(lambda m: m.group(0)[-1], text))
    return text.translate(_MULTI_LINE if multi_line else _ONE_LINE)


def one_line(text: str) -> str:
    """``text`` for one line of a log: :func:`clean` with newlines and tabs removed as well."""
    return clean(text, multi_line=False)


def strip_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (a token in a repository URL must not be copied anywhere)."""
    return _USERINFO.sub(r"\1", url)
