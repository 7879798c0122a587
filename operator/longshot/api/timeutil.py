"""The one place that reads, writes and tells time.

``parse`` reads the API server's RFC 3339 strings (and passes datetimes through), ``rfc3339`` writes them
(whole seconds, ``Z``), ``micro`` writes a ``MicroTime`` (Leases), and ``utcnow`` is the real clock. Nothing in
``core`` calls ``utcnow``: deciders get ``now`` from the shell, whose single clock defaults to it.
"""

from __future__ import annotations

from datetime import UTC, datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    """The real wall clock, timezone-aware UTC (the shell's default clock)."""
    return datetime.now(UTC)


def parse(value: str | datetime | None) -> datetime | None:
    """A timezone-aware datetime from an RFC 3339 string (``Z`` or an offset) or a datetime; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def rfc3339(t: datetime) -> str:
    """``t`` as the API server writes times: UTC, whole seconds, ``Z``."""
    return t.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro(t: datetime) -> str:
    """A Kubernetes ``MicroTime``: RFC 3339 with exactly six fractional digits, UTC."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
