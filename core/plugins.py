"""The plugin manager factory: one function, no global manager.

Order (DESIGN.md section 2): specs; the default plugins the config does not
disable; entry points of group ``kefu.plugins``; plugins the config names by
dotted path; then a strict check that every ``kefu_*`` attribute is a known,
marked hook implementation. pluggy calls the last registered first, so a
third-party plugin answers before a built-in one.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from kefu.core import __version__
from kefu.core.errors import StartupError
from kefu.hooks import PROJECT, SPEC_MODULES

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "kefu.plugins"

#: Built-in plugins, registered exactly as a third party's would be.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "kefu.plugins.bus_memory",
    "kefu.plugins.bus_redis",
    "kefu.plugins.storage_memory",
    "kefu.plugins.storage_sql",
    "kefu.plugins.storage_mongo",
    "kefu.plugins.auth",
    "kefu.plugins.auth_oidc",
    "kefu.plugins.visitor_identity",
    "kefu.plugins.gateway",
    "kefu.plugins.transport_ws",
    "kefu.plugins.transport_longpoll",
    "kefu.plugins.transport_grpc",
    "kefu.plugins.rest_api",
    "kefu.plugins.routing",
    "kefu.plugins.agent_tools",
    "kefu.plugins.metrics_prometheus",
    "kefu.plugins.bot_intents",
    "kefu.plugins.web",
    "kefu.plugins.webhooks",
    "kefu.plugins.email_notify",
    "kefu.plugins.knowledge_base",
    "kefu.plugins.agent_bot",
    "kefu.plugins.reports",
)

#: Built-ins that ship switched off (``[plugins] enable = ["kefu.plugins.NAME"]``). Their
#: sub-commands are offered all the same: the parser is built before any kefu.toml is read, and
#: ``kefu degrade`` talks to a running server, where the plugin is enabled.
OPT_IN_PLUGINS: tuple[str, ...] = ("kefu.plugins.degradation", "kefu.plugins.llm_openai")

#: Built-ins that cannot be disabled: the kernel cannot serve safely without them.
ESSENTIAL_PLUGINS: frozenset[str] = frozenset({"auth"})


@dataclass
class PluginRecord:
    """What ``kefu plugins`` and ``GET /-/plugins`` report about one plugin."""

    name: str
    origin: str  # "builtin" | "entrypoint" | "config"
    module: str
    version: str
    enabled: bool = True
    error: str | None = None
    hooks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "module": self.module,
            "version": self.version,
            "enabled": self.enabled,
            "error": self.error,
            "hooks": self.hooks,
        }


@dataclass
class PluginSet:
    """The manager plus what happened to every plugin it was offered."""

    pm: pluggy.PluginManager
    records: list[PluginRecord]

    def record(self, name: str) -> PluginRecord | None:
        return next((r for r in self.records if r.name == name), None)


def new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    for spec_module in SPEC_MODULES:
        pm.add_hookspecs(importlib.import_module(spec_module))
    return pm


def make_plugin_manager(
    *,
    enable: list[str] | tuple[str, ...] = (),
    disable: list[str] | tuple[str, ...] = (),
    require: list[str] | tuple[str, ...] = (),
    defaults: tuple[str, ...] = DEFAULT_PLUGINS,
    entry_points: bool = True,
    extra: tuple[tuple[str, Any], ...] = (),
) -> PluginSet:
    """Build the plugin manager for one configuration (see module docstring).

    ``extra`` holds ``(name, plugin_object)`` pairs registered last (tests use it).
    """
    disable_set, require_set = set(disable), set(require)
    refused = sorted(disable_set & ESSENTIAL_PLUGINS)
    if refused:
        raise StartupError(f"plugin {refused[0]!r} is essential and cannot be disabled")
    pm = new_plugin_manager()
    records: list[PluginRecord] = []

    def offer(name: str, origin: str, module_name: str, version: str, load) -> None:
        earlier = next((r for r in records if r.name == name), None)
        if earlier is not None:
            log.warning(
                "plugin %r offered again (%s %s); the %s one stays",
                name, origin, module_name, earlier.origin,
            )  # fmt: skip
            return
        record = PluginRecord(name, origin, module_name, version)
        records.append(record)
        if name in disable_set:
            record.enabled = False
            pm.set_blocked(name)
            return
        try:
            plugin = load()
        except Exception as exc:  # a broken plugin must not take the kernel down
            record.enabled, record.error = False, f"{type(exc).__name__}: {exc}"
            if name in require_set or name in ESSENTIAL_PLUGINS:
                raise StartupError(
                    f"required plugin {name!r} failed to load: {record.error}"
                ) from exc
            log.warning("plugin %r skipped: failed to load: %s", name, record.error)
            return
        _check_hook_names(pm, name, plugin)
        try:
            pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:
            raise StartupError(f"plugin {name!r}: {_one_line(exc)}") from exc
        record.version = getattr(plugin, "__version__", None) or version

    for dotted in defaults:
        short = dotted.rsplit(".", 1)[-1]
        offer(short, "builtin", dotted, __version__, lambda d=dotted: importlib.import_module(d))
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            version = ep.dist.version if ep.dist else "unknown"
            offer(ep.name, "entrypoint", ep.value, version, ep.load)
    for dotted in enable:
        offer(dotted, "config", dotted, "unknown", lambda d=dotted: importlib.import_module(d))
    for name, obj in extra:
        offer(name, "extra", getattr(obj, "__module__", "?"), "unknown", lambda o=obj: o)

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise StartupError(f"{_one_line(exc)}") from exc
    missing = sorted(require_set - {r.name for r in records if r.enabled})
    if missing:
        raise StartupError(
            f"required plugin {missing[0]!r} is not installed or not enabled "
            f"(install it, or remove it from [plugins] require)"
        )
    for record in records:
        plugin = pm.get_plugin(record.name) if record.enabled else None
        if plugin is not None:
            record.hooks = sorted(c.name for c in pm.get_hookcallers(plugin) or [])
    return PluginSet(pm, records)


def _check_hook_names(pm: pluggy.PluginManager, name: str, plugin: ModuleType | object) -> None:
    """Fail on a ``kefu_*`` attribute that pluggy would silently ignore."""
    known = [n for n in dir(pm.hook) if n.startswith(f"{PROJECT}_")]
    for attr in dir(plugin):
        if not attr.startswith(f"{PROJECT}_") or not callable(getattr(plugin, attr, None)):
            continue
        marked = hasattr(getattr(plugin, attr), f"{PROJECT}_impl")
        if attr not in known:
            guess = difflib.get_close_matches(attr, known, n=1)
            hint = f" (did you mean {guess[0]!r}?)" if guess else ""
            raise StartupError(f"plugin {name!r}: unknown hook {attr!r}{hint}")
        if not marked:
            raise StartupError(
                f"plugin {name!r}: {attr!r} is not marked with @hookimpl "
                "(from kefu.hooks import hookimpl)"
            )


def _one_line(exc: Exception) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
