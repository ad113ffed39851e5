"""TLS for every transport: one server certificate from ``[server] tls_*``, reloaded live.

With ``[server] tls_cert`` and ``tls_key`` set, kefu serves HTTPS and WSS on its port
(the gRPC transport has its own port and ``[transport_grpc] tls_*``). ``tls_min_version``
(default ``"1.3"``) is the oldest protocol a client may speak; ``tls_client_ca`` turns
on mutual TLS (every client must present a certificate that CA signed). A renewed
certificate is picked up without a restart: every ``tls_reload_interval_s`` the files are
checked (size, modification time, inode of the resolved path, so a symlink swap as done
by certbot or a Kubernetes Secret volume counts), and a change is loaded into the *same*
:class:`ssl.SSLContext`, so the listening socket keeps it and new handshakes get the new
chain (connections already open keep theirs). A half-written pair (a key that does not
match the certificate yet) is refused with a warning and tried again on the next check;
the chain in use stays (it is checked on a scratch context first: a failed
``load_cert_chain`` on the live context would leave it with a certificate and no key, and
every new handshake would fail).

API for transports (the aiohttp server uses it through :mod:`kefu.core.server`):

``server_tls(kernel) -> ServerTLS | None``
    The kernel's TLS, built once from the config on first call; None when TLS is off.
    Raises :class:`~kefu.core.errors.ConfigError` when the files cannot be loaded.

``ServerTLS.context``
    An :class:`ssl.SSLContext` for ``ssl=`` / ``ssl_context=`` of a server; the same
    object for the life of the process, reloaded in place.

``ServerTLS.material() -> TLSMaterial``
    The PEM bytes in force (``cert_chain``, ``private_key``, ``client_ca`` or None) and a
    ``generation`` that grows by one on every reload, for servers that take PEM bytes.

``ServerTLS.subscribe(callback)``
    ``callback(material)`` is called (in the event loop) after each reload.

``ServerTLS.watch()``
    The coroutine that checks the files; :mod:`kefu.core.web_app` runs it with the app.

Mutual TLS: a changed ``tls_client_ca`` file adds its certificates to the ones trusted;
a CA taken out of the file stays trusted until a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kefu.core.errors import ConfigError

if TYPE_CHECKING:
    from kefu.core.config import ServerSettings
    from kefu.core.kernel import Kernel

log = logging.getLogger(__name__)

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_STATE_KEY = "kefu.core.tls"


@dataclass(frozen=True, slots=True)
class TLSMaterial:
    """The PEM bytes a server presents, and which reload produced them."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None
    generation: int


def load_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load a certificate and its key into a live server context, only once they are known
    to match: a failed ``load_cert_chain`` on a live context breaks every new handshake, so
    the pair is tried on a scratch context first (a half-written pair raises, and the
    context keeps the one it had)."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    context.load_cert_chain(cert, key)


def _stamp(path: str) -> tuple:
    """What changes when a file is replaced, rewritten or swapped behind a symlink."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return (real, st.st_ino, st.st_size, st.st_mtime_ns)


class ServerTLS:
    """A server :class:`ssl.SSLContext` that follows its certificate files."""

    def __init__(
        self,
        cert: str,
        key: str,
        client_ca: str | None = None,
        min_version: str = "1.3",
        reload_interval: float = 5.0,
    ) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self.reload_interval = reload_interval
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = VERSIONS[min_version]
        self.context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        if client_ca:
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._callbacks: list[Callable[[TLSMaterial], Any]] = []
        self._stamps: tuple = ()
        self._material: TLSMaterial | None = None
        try:
            self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError("[server]", "tls_cert", f"cannot load the TLS files: {exc}") from None

    def _files(self) -> list[str]:
        return [p for p in (self.cert, self.key, self.client_ca) if p]

    def _load(self) -> None:
        stamps = tuple(_stamp(p) for p in self._files())
        chain, key = Path(self.cert).read_bytes(), Path(self.key).read_bytes()
        ca = Path(self.client_ca).read_bytes() if self.client_ca else None
        load_pair(self.context, self.cert, self.key)
        if ca is not None:
            self.context.load_verify_locations(cadata=ca.decode("ascii"))
        generation = self._material.generation + 1 if self._material else 1
        self._material = TLSMaterial(chain, key, ca, generation)
        self._stamps = stamps

    def material(self) -> TLSMaterial:
        assert self._material is not None
        return self._material

    def subscribe(self, callback: Callable[[TLSMaterial], Any]) -> None:
        self._callbacks.append(callback)

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed since the last load; True if reloaded."""
        try:
            stamps = tuple(_stamp(p) for p in self._files())
        except OSError as exc:
            log.warning("TLS files not readable, keeping the certificate in use: %s", exc)
            return False
        if stamps == self._stamps:
            return False
        try:
            self._load()
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("TLS files changed but do not load, keeping the one in use: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s (generation %d)", self.cert, self.generation)
        for callback in self._callbacks:
            try:
                callback(self.material())
            except Exception:
                log.exception("TLS reload callback failed")
        return True

    @property
    def generation(self) -> int:
        return self.material().generation

    async def watch(self) -> None:
        if self.reload_interval <= 0:
            return
        while True:
            await asyncio.sleep(self.reload_interval)
            # stat and read off the loop: the files may be on a slow mount
            await asyncio.to_thread(self.reload_if_changed)


def from_settings(server: ServerSettings) -> ServerTLS | None:
    if not server.tls_cert:
        return None
    return ServerTLS(
        server.tls_cert,
        server.tls_key or "",
        server.tls_client_ca,
        server.tls_min_version,
        server.tls_reload_interval_s,
    )


def server_tls(kernel: Kernel) -> ServerTLS | None:
    """The kernel's :class:`ServerTLS` (one per process), or None when TLS is off."""
    if not kernel.config.server.tls_cert:
        return None
    return kernel.plugin_state(_STATE_KEY, lambda k: from_settings(k.config.server))


def hsts_value(server: ServerSettings) -> str | None:
    """The ``Strict-Transport-Security`` header to send, or None.

    Sent when this process serves TLS, or when ``public_url`` is https (a TLS-terminating
    proxy in front), unless ``hsts = false`` or ``hsts_max_age = 0``.
    """
    behind_tls = bool(server.tls_cert) or (server.public_url or "").startswith("https://")
    if not (server.hsts and behind_tls and server.hsts_max_age):
        return None
    return f"max-age={server.hsts_max_age}"
