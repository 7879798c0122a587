"""kopf handlers and the shell around ``longshot.core``. Importing this package registers the handlers.

Layers (``.importlinter`` checks them): ``startup`` and ``handlers`` (kopf) -> ``manager`` (the loop) ->
the per-kind reconcilers ``tasks``, ``builds``, ``queue`` (the merge queue), ``dispatch`` -> ``executor``,
``context``, ``cache``, ``workqueue``, ``leadership``. No module imports its caller.
"""

from longshot.controllers import handlers, startup

__all__ = ["handlers", "startup"]
