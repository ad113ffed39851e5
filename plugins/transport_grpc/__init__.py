"""gRPC transport: the protocol's frames over one bidirectional stream, for back ends.

``kefu.v1.Chat/Connect`` carries the same JSON frames as the WebSocket (one
``Frame`` message each, :mod:`.service`) into the same gateway: same ``hello``,
tokens (``authorization: Bearer`` metadata), rate limits, outbox and
slow-consumer policy, resume and ``cid`` idempotency. ``History`` and
``GetConversation`` are unary calls. Health (``grpc.health.v1``) and reflection
are served on the same port, ``[transport_grpc] port``. With ``tls_cert`` the port
speaks TLS only (minimum version, optional client certificates mapped to service
identities: :mod:`.tls`).

Optional: needs the ``kefu[grpc]`` extra and ``[transport_grpc] enabled = true``;
without both it serves nothing and grpcio is never imported. The client is
:mod:`kefu.plugins.transport_grpc.client`.
"""

from __future__ import annotations

import importlib.util

from kefu.core.errors import StartupError
from kefu.core.types import CliCommand, TransportInfo
from kefu.hooks import hookimpl
from kefu.plugins.transport_grpc.settings import GrpcSettings

STATE = "transport_grpc"


def installed() -> bool:
    """True when grpcio and its health and reflection packages can be imported."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("grpc", "grpc_health", "grpc_reflection", "google.protobuf")
    )


def _enabled(kernel) -> bool:
    return kernel.config.section("transport_grpc").enabled


@hookimpl
def kefu_config_schema():
    return {"transport_grpc": GrpcSettings}


@hookimpl
def kefu_transport_adapters(kernel):
    if not _enabled(kernel):
        return None
    s = kernel.config.section("transport_grpc")
    return [TransportInfo("grpc", f"{s.host}:{s.port}", "gRPC kefu.v1.Chat, JSON frames")]


@hookimpl(tryfirst=True)
def kefu_auth_permits(kernel, principal, action, resource):
    # a service identity (client certificate) may do the actions it was given, in its site
    if principal is None or principal.kind != "system" or "service" not in principal.roles:
        return None
    site_id = resource if isinstance(resource, str) else getattr(resource, "site_id", None)
    if resource is not None and site_id != principal.site_id:
        return False
    return f"action:{action}" in principal.roles


@hookimpl
async def kefu_startup(kernel):
    if not _enabled(kernel):
        return
    if not installed():
        raise StartupError(
            "[transport_grpc] enabled needs grpcio: pip install 'kefu[grpc]' "
            "(or set enabled = false)"
        )
    from kefu.plugins.transport_grpc.server import GrpcTransport

    transport = kernel.plugin_state(STATE, GrpcTransport)
    await transport.start()


@hookimpl
async def kefu_shutdown_requested(kernel):
    transport = kernel.existing_plugin_state(STATE)
    if transport is not None:
        await transport.end_streams("shutdown")


@hookimpl
async def kefu_shutdown(kernel):
    transport = kernel.drop_plugin_state(STATE)
    if transport is not None:
        await transport.stop()


@hookimpl
def kefu_cli_commands():
    """``kefu grpc-chat``: chat over gRPC from a terminal (needs kefu[grpc])."""
    if not installed():
        return None

    def configure(parser):
        from kefu.plugins.transport_grpc.client import configure

        configure(parser)

    def run(args):
        from kefu.plugins.transport_grpc.client import run

        return run(args)

    return [CliCommand("grpc-chat", "chat over the gRPC transport from a terminal", configure, run)]
