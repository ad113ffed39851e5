"""The kernel object handed to every hook: configuration, services, hook facade."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kefu.core import config as config_mod
from kefu.core.bus import Bus
from kefu.core.delivery import Delivery, Gateway
from kefu.core.errors import ConfigError
from kefu.core.facade import HookFacade, choose_named
from kefu.core.hookcall import HookFailures
from kefu.core.plugins import DEFAULT_PLUGINS, PluginSet, make_plugin_manager
from kefu.core.pressure import STEADY, Pressure
from kefu.core.storage import StorageBackend
from kefu.core.supervisor import worker_index
from kefu.core.types import Event

log = logging.getLogger(__name__)


class Kernel:
    """One per process. ``config`` is replaced whole on live reload, never mutated."""

    def __init__(self, config: config_mod.Config, plugins: PluginSet, path: str | None) -> None:
        self.config = config
        self.config_path = path
        self.plugins = plugins
        self.pm = plugins.pm
        self.failures = HookFailures()
        self.hooks = HookFacade(self.pm, self, self.failures)
        self.storage: StorageBackend | None = None
        self.bus: Bus | None = None
        #: the store-and-deliver path (set by the gateway plugin while it runs)
        self.delivery: Delivery | None = None
        #: what transports drive (set by the gateway plugin while it runs)
        self.gateway: Gateway | None = None
        #: this worker's degradation level and readings (set by the degradation plugin
        #: while it runs; level 0 always without one): ``kernel.pressure.level`` is an int
        self.pressure: Pressure = STEADY
        self.started = False
        self.reload_failures = 0
        self.announcements: list[str] = []
        self.listen: tuple[str, int] | None = None  # set by the server before start-up
        self._plugin_state: dict[str, Any] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- per-kernel plugin state --------------------------------------------
    def plugin_state(self, key: str, factory: Callable[[Kernel], Any]) -> Any:
        """The object a plugin keeps for this kernel under ``key``, made on first use.

        Plugins keep their state here instead of in module globals, so two
        kernels in one process (tests, several apps) never share it.
        """
        value = self._plugin_state.get(key)
        if value is None:
            value = self._plugin_state[key] = factory(self)
        return value

    def existing_plugin_state(self, key: str) -> Any | None:
        """The state kept under ``key`` if it was made, else None."""
        return self._plugin_state.get(key)

    def drop_plugin_state(self, key: str) -> Any | None:
        """Forget the state kept under ``key`` (at shutdown) and return it."""
        return self._plugin_state.pop(key, None)

    # -- background work ---------------------------------------------------
    def spawn(self, work: Awaitable[Any], name: str) -> asyncio.Task:
        """Run ``work`` as a background task: referenced until done, logged if it fails,
        cancelled at shutdown (:meth:`cancel_tasks`)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def cancel_tasks(self) -> None:
        """Cancel every task started with :meth:`spawn` and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- services chosen by name -----------------------------------------
    def make_storage(self) -> StorageBackend | None:
        return self._make("storage backend", self.hooks.storage_backends(), self.config.storage)

    def make_bus(self) -> Bus | None:
        return self._make("bus", self.hooks.bus_backends(), self.config.bus)

    def _make(self, kind: str, registry: dict, settings: Any) -> Any:
        # With no provider enabled at all the kernel still serves (health, plugins);
        # a configured name that no provider offers is an error.
        if not registry:
            log.warning("no %s plugin is enabled; features that need one will not work", kind)
            return None
        return choose_named(kind, registry, settings.backend)(self)

    # -- helpers for plugins -----------------------------------------------
    @property
    def data_dir(self) -> Path:
        path = Path(self.config.server.data_dir)
        path.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: database, uploads, secret
        return path

    @property
    def secret(self) -> bytes:
        """The per-install secret: from the config, else generated once into the data dir.

        Generated atomically: written whole to a temp file, then linked into place only if
        no process linked its own first, so a reader never sees a partial or empty file.
        """
        if self.config.server.secret:
            return self.config.server.secret.encode()
        path = self.data_dir / "secret"
        if not path.exists():
            tmp = path.with_name(f".secret.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(48))
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    os.link(tmp, path)  # unlike rename, never replaces a secret in use
                except FileExistsError:
                    pass  # another process won: use its secret
            finally:
                tmp.unlink(missing_ok=True)
        value = path.read_text().strip()
        if not value:
            raise ConfigError(
                str(path),
                "",
                "the secret file is empty: delete it to have a new one generated, "
                "or set [server] secret (KEFU_SERVER__SECRET)",
            )
        return value.encode()

    @property
    def base_url(self) -> str:
        """Where users reach this server: ``[server] public_url``, else the listen address."""
        server = self.config.server
        if server.public_url:
            return server.public_url.rstrip("/") + "/"
        host, port = self.listen or (server.host, server.port)
        scheme = "https" if server.tls_cert else "http"
        return f"{scheme}://{host}:{port}/"

    @property
    def worker_name(self) -> str:
        """This process's name among the workers of an install, the same across restarts:
        ``host:port:index`` (the index is ``KEFU_WORKER_INDEX``, set by the supervisor)."""
        port = self.listen[1] if self.listen else self.config.server.port
        return f"{socket.gethostname()}:{port}:{worker_index()}"

    def announce(self, line: str) -> None:
        """A line for the operator, printed once under the start-up banner.

        Not logged: announcements may carry a first password that must not end up in log files.
        """
        self.announcements.append(line)

    async def emit(self, type: str, site_id: str | None = None, **data: Any) -> None:
        """Emit a domain event to every ``kefu_event`` listener."""
        await self.hooks.event(Event(type, site_id, data))


def load_kernel(
    path: str | os.PathLike | None = None,
    *,
    environ: dict[str, str] | None = None,
    defaults: tuple[str, ...] = DEFAULT_PLUGINS,
    entry_points: bool = True,
    extra_plugins: tuple[tuple[str, Any], ...] = (),
) -> Kernel:
    """Read and validate the config, build the plugin manager, return the kernel.

    ``extra_plugins`` are ``(name, plugin)`` pairs registered last (tests use it).
    """
    source = str(path) if path else config_mod.DEFAULT_SOURCE
    raw = config_mod.read_raw(path, environ)
    wanted = config_mod.plugins_settings(raw, source)
    plugin_set = make_plugin_manager(
        enable=wanted.enable,
        disable=wanted.disable,
        require=wanted.require,
        defaults=defaults,
        entry_points=entry_points,
        extra=extra_plugins,
    )
    facade = HookFacade(plugin_set.pm, None, HookFailures())
    try:
        config = config_mod.validate(raw, source, facade.config_schema(source))
    except ConfigError as exc:
        raise config_mod.blame_env_override(exc, environ) from None
    return Kernel(config, plugin_set, str(path) if path else None)


def reload_config(kernel: Kernel, environ: dict[str, str] | None = None) -> list[str]:
    """Validate the config file again and swap it in; return the changed sections.

    Raises :class:`kefu.core.errors.ConfigError` and leaves the running config
    untouched when the new file is invalid. Sections that only take effect at
    start-up keep their running value and are logged as needing a restart.
    """
    source = kernel.config_path or config_mod.DEFAULT_SOURCE
    raw = config_mod.read_raw(kernel.config_path, environ)
    new = config_mod.validate(raw, source, kernel.hooks.config_schema(source))
    changed = config_mod.changed_sections(kernel.config, new)
    live = [s for s in changed if s not in config_mod.RESTART_SECTIONS]
    for section in sorted(set(changed) - set(live)):
        log.warning("config: [%s] changed; it takes effect after a restart", section)
    sections = dict(new.sections())
    for section in config_mod.RESTART_SECTIONS:
        sections[section] = kernel.config.section(section)
    kernel.config = config_mod.Config(source, raw, sections)
    return live
