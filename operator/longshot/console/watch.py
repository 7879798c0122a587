"""The console's one watch per kind (BuildRequest, AgentTask, MergeJob), with its own ServiceAccount (list and
watch of those three, nothing else), shared by every viewer: the API server sees three watches per console
process whatever the number of people looking.

The loop is :class:`~longshot.runtime.listwatch.ListWatch`: each kind has a thread that lists (every namespace, or
each of ``namespaces``), hands the items to ``on_list``, then watches from the list's resourceVersion and hands each
event to ``on_event``; a watch the API server ends is resumed from the last resourceVersion, an expired one (410)
starts again with a list at once, any other error after a short pause. The callbacks are called in the thread: the
server passes them on to its event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import kubernetes

from longshot.api import common
from longshot.core import console as core
from longshot.runtime import listwatch

OnList = listwatch.OnList
OnEvent = listwatch.OnEvent
WATCH_SECONDS = 240
"""One watch request's length (the API server ends it; the thread resumes from the last resourceVersion)."""
RETRY_SECONDS = 2.0


class Watches(listwatch.ListWatch):
    def __init__(self, client: kubernetes.client.ApiClient, on_list: OnList, on_event: OnEvent, *,
                 namespaces: Sequence[str] = ()) -> None:
        self.client = client
        self.custom = kubernetes.client.CustomObjectsApi(client)
        super().__init__(self._call, kinds=core.KINDS, namespaces=namespaces, on_list=on_list, on_event=on_event,
                         name="console-watch", watch_seconds=WATCH_SECONDS, retry_seconds=RETRY_SECONDS,
                         refused_hint="the live view lacks that kind (grant the console's ServiceAccount list and "
                                      "watch, as the chart does)")

    def _call(self, kind: str, ns: str, **kwargs: Any) -> Any:
        plural = core.PLURALS[kind]
        if ns:
            return self.custom.list_namespaced_custom_object(common.GROUP, common.VERSION, ns, plural, **kwargs)
        return self.custom.list_cluster_custom_object(common.GROUP, common.VERSION, plural, **kwargs)
