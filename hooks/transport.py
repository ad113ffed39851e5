"""Transport hooks: the adapters that carry frames and the operations frames name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from kefu.hooks import MaybeAwaitable, hookspec

if TYPE_CHECKING:
    from kefu.core.delivery import ClientConnection
    from kefu.core.kernel import Kernel
    from kefu.core.types import TransportInfo


@hookspec
def kefu_transport_adapters(kernel: Kernel) -> list[TransportInfo] | None:
    """Describe the transports this plugin provides.

    Called once at start-up, for introspection (``kefu plugins``,
    ``/-/plugins``) and metrics. The transport's endpoints themselves are
    contributed through :func:`kefu_routes`.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a list of :class:`kefu.core.types.TransportInfo`, or None. Sync only.
    """


@hookspec
def kefu_transport_frame_handlers(
    kernel: Kernel,
) -> (
    dict[str, Callable[[ClientConnection, dict[str, Any]], Awaitable[dict[str, Any] | None]]] | None
):
    """Contribute handlers for client frame operations (the ``op`` field).

    Called once at start-up by the gateway. An ``op`` may be claimed by one
    plugin only; a second claim fails start-up naming both plugins.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :returns: a dict mapping an op name to an async callable
        ``handler(connection, frame) -> dict | None`` (the reply frame), or
        None. Sync only.
    """


@hookspec
def kefu_transport_connected(kernel: Kernel, connection: ClientConnection) -> MaybeAwaitable[None]:
    """Observe a client connection that has authenticated.

    Called by the gateway for every transport (WebSocket, long-poll, ...).

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param connection: the gateway's connection object (principal, transport name).
    :returns: None. May be async; implementations are isolated from each other.
    """


@hookspec
def kefu_transport_disconnected(
    kernel: Kernel, connection: ClientConnection, reason: str
) -> MaybeAwaitable[None]:
    """Observe a client connection that has closed.

    :param kernel: the :class:`kefu.core.kernel.Kernel`.
    :param connection: the connection that closed.
    :param reason: a short machine-readable reason (``"client_closed"``,
        ``"slow_consumer"``, ``"heartbeat_timeout"``, ``"shutdown"``, ...).
    :returns: None. May be async; implementations are isolated from each other.
    """
