"""TLS in front of the gRPC server: minimum version, client certificates, identity.

grpcio's Python API cannot set a minimum TLS version (``ssl_server_credentials``
takes only key pairs, a CA and whether client certificates are required), so
when ``tls_cert`` is set the public port is served by :class:`TlsFront`, an
asyncio TLS server with a standard :class:`ssl.SSLContext` (``minimum_version``,
ALPN ``h2``, client certificates verified against ``client_ca``). Each accepted
connection is relayed byte for byte to the gRPC server, which then listens on a
loopback port only: the relay notes which local port it connected from, and the
servicer finds the client's certificate (and address) by the peer address gRPC
reports for the call. A call on the inner port from anything but the relay is
refused.

Certificates are reloaded when their files change (:meth:`TlsFront.reload_if_changed`,
every ``tls_reload_interval_s``): the same context loads the new chain, so new
handshakes present it and connections already open keep theirs. A new ``client_ca``
file adds its authorities (OpenSSL cannot forget one: removing a CA needs a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from dataclasses import dataclass

from kefu.core.tls import load_pair

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
HANDSHAKE_TIMEOUT_S = 10.0
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class Peer:
    """A client connection the relay accepted."""

    remote: str | None
    #: The verified client certificate's subject common name and DNS names ([] without one).
    names: tuple[str, ...]


def server_context(settings) -> ssl.SSLContext:
    """The TLS server context for ``[transport_grpc]``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[settings.tls_min_version]
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    context.set_alpn_protocols(["h2"])  # gRPC clients insist on it
    if settings.client_ca:
        context.load_verify_locations(cafile=settings.client_ca)
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
        )
    return context


def certificate_names(cert: dict | None) -> tuple[str, ...]:
    """Subject common names and DNS alternative names of a verified peer certificate."""
    if not cert:
        return ()
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    return tuple(dict.fromkeys(names))


def _stamp(path: str | None) -> tuple[float, int] | None:
    try:
        info = os.stat(path) if path else None
    except OSError:
        return None
    return (info.st_mtime, info.st_size) if info else None


class TlsFront:
    """The public TLS port, relaying every connection to the loopback gRPC port."""

    def __init__(self, context: ssl.SSLContext, inner_port: int, settings=None) -> None:
        self.context = context
        self.inner_port = inner_port
        self.settings = settings
        self._stamps = self._read_stamps()
        self._watcher: asyncio.Task | None = None
        #: gRPC peer string of the relay's inner connection -> the client behind it
        self.peers: dict[str, Peer] = {}
        self.port = 0
        self._server: asyncio.Server | None = None
        #: the two sockets of every relay, aborted at stop (a relay task is never cancelled:
        #: asyncio's stream server would log the cancellation as an error)
        self._relays: dict[asyncio.Task, list[asyncio.StreamWriter]] = {}

    async def start(self, host: str, port: int, reuse_port: bool = False) -> int:
        self._server = await asyncio.start_server(
            self._accept,
            host,
            port,
            ssl=self.context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            reuse_port=reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        interval = self.settings.tls_reload_interval_s if self.settings is not None else 0
        if interval > 0:
            self._watcher = asyncio.ensure_future(self._watch(interval))
        return self.port

    def _read_stamps(self) -> dict[str, tuple[float, int] | None]:
        s = self.settings
        if s is None:
            return {}
        return {name: _stamp(getattr(s, name)) for name in ("tls_cert", "tls_key", "client_ca")}

    def reload_if_changed(self) -> bool:
        """Load the certificate chain (and CA) again if a file changed; True when it did.

        A half-written pair fails to load: the context keeps the previous one and the
        next check tries again.
        """
        s, stamps = self.settings, self._read_stamps()
        if s is None or stamps == self._stamps:
            return False
        try:
            if (stamps["tls_cert"], stamps["tls_key"]) != (
                self._stamps["tls_cert"],
                self._stamps["tls_key"],
            ):
                load_pair(self.context, s.tls_cert, s.tls_key)  # checked first
            if s.client_ca and stamps["client_ca"] != self._stamps["client_ca"]:
                self.context.load_verify_locations(cafile=s.client_ca)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("gRPC TLS files changed but did not load (kept the old ones): %s", exc)
            return False
        self._stamps = stamps
        log.info("gRPC TLS certificate reloaded from %s", s.tls_cert)
        return True

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload_if_changed()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._server is not None:
            self._server.close()
        for writers in list(self._relays.values()):
            for writer in writers:
                writer.transport.abort()
        await asyncio.gather(*self._relays, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    def peer(self, grpc_peer: str) -> Peer | None:
        """The client behind a call, by the peer address gRPC reports (``context.peer()``)."""
        return self.peers.get(grpc_peer)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        writers = self._relays[task] = [writer]
        key = None
        try:
            ssl_object = writer.get_extra_info("ssl_object")
            names = certificate_names(ssl_object.getpeercert() if ssl_object else None)
            remote = writer.get_extra_info("peername")
            inner_reader, inner_writer = await asyncio.open_connection("127.0.0.1", self.inner_port)
            writers.append(inner_writer)
            local = inner_writer.get_extra_info("sockname")
            key = f"ipv4:{local[0]}:{local[1]}"
            self.peers[key] = Peer(f"{remote[0]}:{remote[1]}" if remote else None, names)
            await asyncio.gather(_pipe(reader, inner_writer), _pipe(inner_reader, writer))
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            log.debug("grpc tls relay ended: %s", exc)
        finally:
            if key is not None:
                self.peers.pop(key, None)
            self._relays.pop(task, None)
            for each in writers:
                each.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
