"""The gRPC server of one kernel: its port, keepalive, health, reflection, TLS front."""

from __future__ import annotations

import logging
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kefu.plugins.transport_grpc import kefu_chat_pb2 as pb
from kefu.plugins.transport_grpc import kefu_chat_pb2_grpc as pb_grpc
from kefu.plugins.transport_grpc.service import SERVICE_NAME, ChatService
from kefu.plugins.transport_grpc.tls import TlsFront, server_context

log = logging.getLogger(__name__)


def server_options(s: Any, reuse_port: bool = False) -> list[tuple[str, int]]:
    """Channel arguments: message cap and keepalive (docs/protocol.md, "gRPC"); with
    ``reuse_port`` (``kefu run --workers N``) every worker listens on the port."""
    ms = 1000
    min_ping = int(s.min_client_ping_interval_s * ms)
    return [
        ("grpc.max_receive_message_length", s.max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.keepalive_time_ms", int(s.keepalive_time_s * ms)),
        ("grpc.keepalive_timeout_ms", int(s.keepalive_timeout_s * ms)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", min_ping),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", int(reuse_port)),
    ]


class GrpcTransport:
    """Started by ``kefu_startup`` when ``[transport_grpc] enabled``; one per kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.settings = kernel.config.section("transport_grpc")
        self.services = {identity.name: identity for identity in self.settings.services}
        self.streams: set[Any] = set()  # gateway connections of open Connect streams
        self.front: TlsFront | None = None
        self.server: grpc.aio.Server | None = None
        self.health: health.aio.HealthServicer | None = None
        self.port = 0

    async def start(self) -> None:
        s = self.settings
        workers = self.kernel.config.section("server").workers
        server = grpc.aio.server(options=server_options(s, reuse_port=workers > 1))
        pb_grpc.add_ChatServicer_to_server(ChatService(self), server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            pb.DESCRIPTOR.services_by_name["Chat"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        if s.tls_cert and s.tls_key:
            inner = server.add_insecure_port("127.0.0.1:0")
            self.front = TlsFront(server_context(s), inner, s)
        else:
            self.port = server.add_insecure_port(f"{_host(s.host)}:{s.port}")
            if self.port == 0:
                raise OSError(f"[transport_grpc] cannot listen on {s.host}:{s.port}")
        await server.start()
        self.server = server
        if self.front is not None:
            self.port = await self.front.start(s.host, s.port, reuse_port=workers > 1)
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "gRPC transport on %s:%d (%s)", s.host, self.port, "TLS" if self.front else "plaintext"
        )

    async def end_streams(self, reason: str) -> None:
        """Tell every stream ``reason`` (its fatal frame, then the status) and stop serving."""
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        gateway = self.kernel.gateway
        for conn in list(self.streams):
            if gateway is not None:
                await gateway.close(conn, reason)
            else:
                conn.close(reason)
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace_s)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
        if self.front is not None:
            await self.front.stop()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
