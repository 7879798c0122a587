"""``longshot-gateway``: agent Pods reach git and the model through it, and never hold a credential.

See docs/security.md. Modules: :mod:`~longshot.gateway.server` (routes), :mod:`~longshot.gateway.identity`
(Pod-bound tokens), :mod:`~longshot.gateway.gitserve` (smart HTTP, mirrors, ref policy),
:mod:`~longshot.gateway.modelproxy` (model pass-through, metering, budget, 429 backoff),
:mod:`~longshot.gateway.status` (AgentTask progress writes), and the pure :mod:`~longshot.gateway.pktline`,
:mod:`~longshot.gateway.refpolicy`, :mod:`~longshot.gateway.modelroutes` (the model allowlist),
:mod:`~longshot.gateway.metering`, :mod:`~longshot.gateway.pricing`.
"""
