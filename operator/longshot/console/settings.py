"""The console's settings, from ``LONGSHOT_CONSOLE_*`` variables (the chart's ``console.*`` values)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from longshot.envsettings import EnvSettings


class ConsoleSettings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="LONGSHOT_CONSOLE_", env_ignore_empty=True)

    port: int = Field(default=8080, ge=0, le=65535)
    """The page, its script and its API (0: any free port, for tests)."""
    address: str = "0.0.0.0"
    namespaces: str = ""
    """Comma-separated namespaces to watch (empty: every namespace; the ServiceAccount then needs a ClusterRole)."""
    access_cache_seconds: float = Field(default=5.0, ge=0, le=300)
    """How long the API server's answer to "may this person list BuildRequests in this namespace" is reused (per
    token hash and namespace). A revoked right stops showing within this time."""
    identity_cache_seconds: float = Field(default=30.0, ge=0, le=600)
    """How long a token the API server accepted (SelfSubjectReview) is taken without asking again."""
    viewer_queue: int = Field(default=1000, ge=10, le=100_000)
    """Changes one viewer may have pending; a viewer past it is dropped and told to reload."""
    max_viewers: int = Field(default=200, ge=1, le=10_000)
    """Live streams open at once on this replica (more are answered 503)."""
    stream_seconds: float = Field(default=900.0, ge=10, le=86_400)
    """A live stream's longest life; the page then opens a new one (and its rights are looked at afresh)."""
    follow_seconds: float = Field(default=900.0, ge=10, le=86_400)
    """A followed transcript's longest life (the stream then ends with ``reload``; the page follows again)."""
    follow_queue: int = Field(default=1000, ge=10, le=100_000)
    """Lines of a followed log waiting for a slow viewer; past it the oldest are dropped (a ``gap`` event says
    how many)."""
    max_follows: int = Field(default=64, ge=1, le=1000)
    """Followed transcripts at once on this replica (each is a thread reading a Pod log; more are answered 503)."""
    max_connections: int = Field(default=512, ge=8, le=65_536)
    max_action_bytes: int = Field(default=64 * 1024, ge=1024, le=1 << 20)
    """Largest body of an action (an answer's text is at most 32 KiB)."""

    def namespace_list(self) -> list[str]:
        return [n.strip() for n in self.namespaces.split(",") if n.strip()]
