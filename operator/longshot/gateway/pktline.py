"""git's pkt-line framing, as much of it as the gateway needs: read a receive-pack request's command list
with limits, and write a receive-pack answer (report-status, optionally inside side-band-64k).
(Requests refused before git speaks, such as a wrong build in the URL, get a ``text/plain`` body, which
git prints as ``remote: ...`` lines.)

A push request (protocol v0/v1; git has no v2 push) starts with::

    *PKT-LINE("shallow" SP oid)                       (pushes from a shallow clone)
    PKT-LINE(old SP new SP ref NUL capabilities)       (the first command carries the capabilities)
    *PKT-LINE(old SP new SP ref)
    flush-pkt
    [push options, a packfile: passed on to git untouched]

:func:`parse_commands` reads exactly that prefix from a buffer and says how many bytes it used, so the
gateway can check the commands before a single byte reaches ``git receive-pack``, and forward the bytes
unchanged when they pass. Everything is bounded: a pkt-line is at most 65520 bytes (git's own limit), and
:class:`Limits` caps the number of commands and the size of the whole command list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

MAX_PKT_LEN = 65520
"""git's ``LARGE_PACKET_MAX``: the longest pkt-line, its 4-byte header included."""
FLUSH = b"0000"
ZERO_OIDS = frozenset({"0" * 40, "0" * 64})
_OID = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_SIDEBAND_MAX = 65515  # side-band-64k: 65520 minus the header and the band byte


class ProtocolError(ValueError):
    """The request is not a well-formed push command list; the message says what is wrong."""


@dataclass(frozen=True)
class Limits:
    max_commands: int = 100
    """Ref updates in one push."""
    max_bytes: int = 256 * 1024
    """Size of the whole command list (shallow lines, commands, flush)."""


@dataclass(frozen=True)
class Command:
    old: str
    new: str
    ref: str

    @property
    def is_delete(self) -> bool:
        return self.new in ZERO_OIDS

    @property
    def is_create(self) -> bool:
        return self.old in ZERO_OIDS


@dataclass(frozen=True)
class Commands:
    commands: tuple[Command, ...]
    capabilities: frozenset[str]
    shallow: tuple[str, ...] = ()
    consumed: int = 0
    """Bytes of the buffer the command list used (up to and including its flush-pkt)."""
    raw: bytes = field(default=b"", repr=False)
    """Those bytes, to be forwarded unchanged."""

    @property
    def sideband(self) -> bool:
        return "side-band-64k" in self.capabilities or "side-band" in self.capabilities

    @property
    def report_status(self) -> bool:
        return "report-status" in self.capabilities or "report-status-v2" in self.capabilities


def pkt(data: bytes | str) -> bytes:
    """One pkt-line holding ``data``."""
    payload = data.encode() if isinstance(data, str) else data
    if len(payload) + 4 > MAX_PKT_LEN:
        raise ValueError(f"a pkt-line holds at most {MAX_PKT_LEN - 4} bytes, not {len(payload)}")
    return f"{len(payload) + 4:04x}".encode() + payload


def _header(buf: bytes | bytearray, pos: int) -> int | None:
    """The length in the pkt-line header at ``pos`` (0 for flush), None when the header is incomplete."""
    if len(buf) < pos + 4:
        return None
    raw = bytes(buf[pos:pos + 4])
    try:
        size = int(raw, 16)
    except ValueError:
        raise ProtocolError(f"not a pkt-line: {raw!r}") from None
    if size in (1, 2, 3):
        raise ProtocolError(f"unexpected special packet {raw.decode()} in a push command list")
    if size > MAX_PKT_LEN:
        raise ProtocolError(f"pkt-line length {size} out of range")
    return size


def parse_commands(buf: bytes | bytearray, limits: Limits = Limits()) -> Commands | None:
    """The command list at the start of ``buf``, or None when ``buf`` ends before its flush-pkt.

    Raises :class:`ProtocolError` on malformed input and on input beyond ``limits`` (even before the
    flush-pkt arrives, so a caller never buffers more than ``limits.max_bytes``)."""
    pos = 0
    commands: list[Command] = []
    shallow: list[str] = []
    capabilities: frozenset[str] = frozenset()
    while True:
        if pos > limits.max_bytes:
            raise ProtocolError(f"the push command list is larger than {limits.max_bytes} bytes")
        size = _header(buf, pos)
        if size is None:
            if len(buf) > limits.max_bytes:
                raise ProtocolError(f"the push command list is larger than {limits.max_bytes} bytes")
            return None
        if size == 0:
            pos += 4
            break
        if len(buf) < pos + size:
            if pos + size > limits.max_bytes:
                raise ProtocolError(f"the push command list is larger than {limits.max_bytes} bytes")
            return None
        line = bytes(buf[pos + 4:pos + size])
        pos += size
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.startswith(b"shallow "):
            if commands:
                raise ProtocolError("a shallow line after the first command")
            oid = line[8:].decode(errors="replace")
            if not _OID.match(oid):
                raise ProtocolError(f"invalid object id in a shallow line: {oid[:80]!r}")
            shallow.append(oid)
            if len(shallow) > limits.max_commands * 10:
                raise ProtocolError("too many shallow lines")
            continue
        if line.startswith(b"push-cert"):
            raise ProtocolError("signed pushes (push certificates) are not supported through the gateway")
        if not commands:
            line, _, caps = line.partition(b"\0")
            capabilities = frozenset(caps.decode(errors="replace").split())
        elif b"\0" in line:
            raise ProtocolError("a NUL byte in a push command after the first")
        commands.append(_command(line))
        if len(commands) > limits.max_commands:
            raise ProtocolError(f"more than {limits.max_commands} ref updates in one push")
    if not commands:
        raise ProtocolError("a push without commands")
    return Commands(tuple(commands), capabilities, tuple(shallow), pos, bytes(buf[:pos]))


def _command(line: bytes) -> Command:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("a push command that is not UTF-8") from None
    parts = text.split(" ")
    if len(parts) != 3:
        raise ProtocolError(f"malformed push command {text[:200]!r}: expected '<old> <new> <ref>'")
    old, new, ref = parts
    for oid in (old, new):
        if not _OID.match(oid):
            raise ProtocolError(f"invalid object id {oid[:80]!r} in a push command")
    return Command(old, new, ref)


def report(results: Sequence[tuple[str, str | None]], *, sideband: bool, messages: Sequence[str] = (),
           unpack: str = "ok") -> bytes:
    """A receive-pack answer: ``unpack <unpack>``, then ``ok <ref>`` or ``ng <ref> <reason>`` per result.

    With ``sideband`` the report travels on band 1 and ``messages`` on band 2 (git prints them as
    ``remote: ...``); without, ``messages`` are dropped (the protocol has nowhere to put them)."""
    inner = pkt(f"unpack {unpack}\n")
    for ref, reason in results:
        inner += pkt(f"ok {ref}\n") if reason is None else pkt(f"ng {ref} {_one_line(reason)}\n")
    inner += FLUSH
    if not sideband:
        return inner
    out = b"".join(pkt(b"\x02" + (m.rstrip("\n") + "\n").encode()[:_SIDEBAND_MAX]) for m in messages)
    for i in range(0, len(inner), _SIDEBAND_MAX):
        out += pkt(b"\x01" + inner[i:i + _SIDEBAND_MAX])
    return out + FLUSH


def _one_line(text: str) -> str:
    return " ".join(text.split())[:1000]
