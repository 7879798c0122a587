"""Settings of ``longshot-gateway``, read once at start-up from ``LONGSHOT_GATEWAY_<NAME>`` (the chart sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

AUDIENCE = "longshot-gateway"
"""Audience of the agent Pods' projected ServiceAccount tokens; a token for another audience is refused."""
DEFAULT_OPENAI_URL = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_URL = "https://api.anthropic.com"


@dataclass(frozen=True)
class GatewaySettings:
    port: int = 8080
    """Port of every route (``/git``, ``/model``, ``/progress``, ``/healthz``, ``/metrics``)."""
    address: str = "0.0.0.0"
    namespace: str = "longshot-system"
    """The operator's namespace, where the price table ConfigMap lives."""
    audience: str = AUDIENCE
    prices_configmap: str = "longshot-prices"
    """ConfigMap (key ``prices.yaml``) with the price table; see ``longshot.gateway.pricing``."""
    prices_cache_seconds: float = 30.0
    mirror_dir: str = "/var/cache/longshot-gateway"
    """Where the per-repository git mirrors live (an emptyDir in the chart)."""
    allow_file_urls: bool = False
    """Serve ``file://`` repositories (tests and single-machine setups only: a build could otherwise name
    any path the gateway can read)."""
    token_cache_seconds: float = 30.0
    """How long a successful TokenReview is reused (the Pod itself is looked up on every request)."""
    usage_cache_seconds: float = 1.0
    """How long a build's task list (for its budget and backoff) is reused between model calls."""
    upstream_timeout_seconds: float = 600.0
    git_timeout_seconds: float = 600.0
    max_model_request_bytes: int = 64 * 1024 * 1024
    max_push_bytes: int = 256 * 1024 * 1024
    """Largest push (the request body of one ``git-receive-pack``, spooled to the mirror disk before it is
    forwarded); a larger one is refused with 413. Chart value ``gateway.maxPushBytes``."""
    max_fetch_request_bytes: int = 64 * 1024 * 1024
    default_backoff_seconds: float = 30.0
    """How long a build's calls to one model API are held after a 429 without ``Retry-After``."""
    max_backoff_seconds: float = 600.0
    progress_min_interval_seconds: float = 1.0
    """Progress messages of one task closer together than this are acknowledged but not written."""
    openai_url: str = DEFAULT_OPENAI_URL
    """Upstream of ``/model/openai/`` when a build sets no ``spec.agent.baseUrl``."""
    anthropic_url: str = DEFAULT_ANTHROPIC_URL
    """Upstream of ``/model/anthropic/`` when a build sets no ``spec.agent.baseUrl``."""
    # --- tenancy: disk bounds (issue 29, item 8) -------------------------------------------------------------
    mirror_max_bytes: int = 2 * 1024 * 1024 * 1024
    """Largest size of one mirror (one tenant's use of one repository): a fetch from the upstream stores at most
    what is left under it (``vcs.packlimit``) and fails with a reason naming this cap, and a mirror found over
    it is removed. 0: no cap. Chart value ``gateway.mirrorMaxBytes``."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        defaults = cls()
        for f in fields(cls):
            name = f"LONGSHOT_GATEWAY_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            kind = type(getattr(defaults, f.name))
            try:
                if kind is bool:
                    values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif kind in (int, float):
                    values[f.name] = kind(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**values)
