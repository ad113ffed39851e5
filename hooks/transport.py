"""Transport hooks: the adapters that carry frames and the operations frames name."""

from kefu.hooks import hookspec


@hookspec
def kefu_transport_adapters(kernel):
    """Describe the transports this plugin provides.

    Called once at start-up, for introspection (``kefu plugins``,
    ``/-/plugins``) and metrics. The transport's endpoints themselves are
    contributed through :func:`kefu_routes`.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.TransportInfo`, or None. Sync only.
    """


@hookspec
def kefu_transport_frame_handlers(kernel):
    """Contribute handlers for client frame operations (the ``op`` field).

    Called once at start-up by the gateway. An ``op`` may be claimed by one
    plugin only; a second claim fails start-up naming both plugins.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a dict mapping an op name to an async callable
        ``handler(connection, frame) -> dict | None`` (the reply frame), or
        None. Sync only.
    """


@hookspec
def kefu_transport_connected(kernel, connection):
    """Observe a client connection that has authenticated.

    Called by the gateway for every transport (WebSocket, long-poll, ...).

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param connection: the gateway's connection object (principal, transport name).
    :returns: None. May be async; implementations are isolated from each other.
    """


@hookspec
def kefu_transport_disconnected(kernel, connection, reason):
    """Observe a client connection that has closed.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param connection: the connection that closed.
    :param reason: a short machine-readable reason (``"client_closed"``,
        ``"slow_consumer"``, ``"heartbeat_timeout"``, ``"shutdown"``, ...).
    :returns: None. May be async; implementations are isolated from each other.
    """
