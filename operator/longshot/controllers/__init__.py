"""kopf handlers. Importing this package registers all of them.

The handlers only observe: they feed every BuildRequest, AgentTask, MergeJob and agent Pod event into
the engine (``controllers/engine.py``), which decides with ``longshot.core`` and acts.
"""

from longshot.controllers import observers, startup

__all__ = ["observers", "startup"]
