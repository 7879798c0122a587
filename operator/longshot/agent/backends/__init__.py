"""Agent backends, interchangeable behind :class:`longshot.agent.backends.base.Backend`:
``openai``, ``anthropic``, ``command`` and ``scripted``."""
