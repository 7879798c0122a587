"""kopf handlers, one module per resource. Importing this package registers all of them.

Handlers are thin: they read the world, ask ``longshot.core`` what to do, carry out the effects and
write the status once.
"""

from longshot.controllers import agenttask, buildrequest, mergejob, startup

__all__ = ["agenttask", "buildrequest", "mergejob", "startup"]
