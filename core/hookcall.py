"""Async helpers for calling pluggy hooks.

pluggy is synchronous and its ``firstresult`` cannot await, so the kernel
calls each implementation itself, in pluggy's order (``tryfirst`` first,
then last-registered first), and awaits whatever is awaitable:

- :func:`call_all` collects every non-None answer, with the plugin's name;
- :func:`call_first` returns the first non-None answer after awaiting;
- :func:`notify` runs every implementation isolated from the others: one that
  raises is logged with its plugin's name and counted, never fatal;
  :func:`collect_sync` does the same for sync hooks whose answers are collected.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from typing import Any

import pluggy

from kefu.core.errors import StartupError

log = logging.getLogger(__name__)


class PluginHookError(StartupError, TypeError):
    """A sync-only hook implementation raised or was async: reported as one line."""


class HookFailures:
    """Counts notification failures per ``(plugin, hook)``; read by metrics plugins."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def record(self, plugin: str, hook: str) -> None:
        self.counts[(plugin, hook)] += 1

    def total(self) -> int:
        return sum(self.counts.values())


def _ordered_impls(caller: pluggy.HookCaller) -> list[pluggy.HookImpl]:
    # pluggy calls the list from its end: tryfirst last-registered first.
    return list(reversed(caller.get_hookimpls()))


def _invoke(impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> Any:
    return impl.function(*[kwargs[name] for name in impl.argnames])


async def call_all(caller: pluggy.HookCaller, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call every implementation; return ``[(plugin_name, result)]`` for non-None results.

    An exception propagates (wrapped in nothing) after being logged with the plugin name.
    """
    results = []
    for impl in _ordered_impls(caller):
        try:
            value = _invoke(impl, kwargs)
            if inspect.isawaitable(value):
                value = await value
        except Exception:
            log.error("plugin %r failed in hook %s", impl.plugin_name, caller.name)
            raise
        if value is not None:
            results.append((impl.plugin_name, value))
    return results


def call_all_sync(caller: pluggy.HookCaller, **kwargs: Any) -> list[tuple[str, Any]]:
    """Like :func:`call_all` for hooks documented as sync only (routes, schemas, registries)."""
    results = []
    for impl in _ordered_impls(caller):
        try:
            value = _invoke(impl, kwargs)
        except Exception as exc:
            raise PluginHookError(
                f"plugin {impl.plugin_name!r} failed in hook {caller.name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if inspect.isawaitable(value):
            if inspect.iscoroutine(value):
                value.close()
            raise PluginHookError(
                f"plugin {impl.plugin_name!r}: hook {caller.name} must not be async"
            )
        if value is not None:
            results.append((impl.plugin_name, value))
    return results


def collect_sync(
    caller: pluggy.HookCaller, failures: HookFailures | None = None, **kwargs: Any
) -> list[tuple[str, Any]]:
    """Like :func:`call_all_sync`, each implementation isolated: one that raises (or is
    async) is logged with its plugin's name, counted and left out."""
    results = []
    for impl in _ordered_impls(caller):
        try:
            value = _invoke(impl, kwargs)
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                raise TypeError(f"hook {caller.name} must not be async")
        except Exception:
            log.exception("plugin %r failed in hook %s", impl.plugin_name, caller.name)
            if failures is not None:
                failures.record(impl.plugin_name, caller.name)
            continue
        if value is not None:
            results.append((impl.plugin_name, value))
    return results


async def call_first(caller: pluggy.HookCaller, **kwargs: Any) -> Any:
    """Return the first non-None result, awaiting each implementation in turn."""
    for impl in _ordered_impls(caller):
        value = _invoke(impl, kwargs)
        if inspect.isawaitable(value):
            value = await value
        if value is not None:
            return value
    return None


async def notify(
    caller: pluggy.HookCaller, failures: HookFailures | None = None, **kwargs: Any
) -> int:
    """Run every implementation, isolated; return how many failed."""
    failed = 0
    for impl in _ordered_impls(caller):
        try:
            value = _invoke(impl, kwargs)
            if inspect.isawaitable(value):
                await value
        except Exception:
            failed += 1
            log.exception("plugin %r failed in hook %s", impl.plugin_name, caller.name)
            if failures is not None:
                failures.record(impl.plugin_name, caller.name)
    return failed
