"""The ``[transport_grpc]`` section of kefu.toml."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kefu.core.config import Section


class ServiceIdentity(BaseModel):
    """A back end that authenticates with a client certificate (mutual TLS).

    The certificate's subject common name or one of its DNS names must equal
    ``name``; the connection then acts as the principal ``system:<name>`` of
    ``site_id``, allowed exactly ``actions`` on that site's resources (messages it
    sends are stored with ``sender.kind = "system"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    site_id: str = Field(min_length=1, max_length=64)
    actions: list[str] = Field(
        default_factory=lambda: ["message.send", "conversation.read", "message.read"]
    )


class GrpcSettings(Section):
    """The gRPC transport: its own port, keepalive, TLS and service identities."""

    #: Serve gRPC (needs the ``kefu[grpc]`` extra). Cannot change live.
    enabled: bool = False
    host: str = "127.0.0.1"
    #: Its own port (0: any free port, reported in the log). Cannot change live.
    port: int = Field(50051, ge=0, le=65535)
    #: Hard cap of one incoming gRPC message (grpc answers RESOURCE_EXHAUSTED above it);
    #: frames above ``[gateway] max_frame_bytes`` but below it get ``frame_too_large``.
    max_message_bytes: int = Field(128 * 1024, ge=1024)
    #: Seconds a client may take to accept queued frames (HTTP/2 flow control) before it
    #: is closed as a slow consumer.
    send_timeout: float = Field(10.0, gt=0)
    #: The server pings a connection idle for this long, and drops it when the ping is
    #: not answered within ``keepalive_timeout_s``.
    keepalive_time_s: float = Field(30.0, gt=0)
    keepalive_timeout_s: float = Field(10.0, gt=0)
    #: Shortest interval between client pings the server accepts (faster ones are
    #: answered with GOAWAY ``too_many_pings``); clients should ping no more often.
    min_client_ping_interval_s: float = Field(10.0, gt=0)
    #: Seconds streams get to end after they were told ``shutdown``.
    shutdown_grace_s: float = Field(5.0, ge=0, le=60)
    #: PEM server certificate chain and key: with both, the port speaks TLS only.
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Seconds between checks of the certificate, key and CA files: a file replaced on disk
    #: is served to new connections without a restart (0: never).
    tls_reload_interval_s: float = Field(5.0, ge=0)
    #: Lowest TLS version accepted.
    tls_min_version: Literal["1.2", "1.3"] = "1.3"
    #: PEM CA bundle that signs client certificates: enables mutual TLS.
    client_ca: str | None = None
    #: Refuse connections without a client certificate (else token-only clients may
    #: still connect, and certificates are checked when presented).
    require_client_cert: bool = False
    #: Client certificates mapped to service identities.
    services: list[ServiceIdentity] = Field(default_factory=list)
