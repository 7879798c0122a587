"""Outbound connections on behalf of a BuildRequest, held to the egress policy (``longshot.core.egress``).

``guard``: resolve a URL's host once, check every address, and pin git to the checked addresses
(``http.curloptResolve``, ssh ``HostName``). ``transport``: httpx transports whose connections go only to
checked addresses (DNS rebinding between the check and the connection finds nothing to rebind). Imported by
the operator (``vcs``, ``runtime``, ``controllers``) and the gateway; never by the agent.
"""
