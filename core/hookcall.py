"""Async helpers for calling pluggy hooks.

pluggy is synchronous and its ``firstresult`` cannot await, so the kernel
calls each implementation itself, in pluggy's order (``tryfirst`` first,
then last-registered first), and awaits whatever is awaitable:

- :func:`call_all` collects every non-None answer, with the plugin's name;
- :func:`call_first` returns the first non-None answer after awaiting;
- :func:`notify` runs every implementation isolated from the others: one that
  raises is logged with its plugin's name and counted, never fatal;
  :func:`collect_sync` does the same for sync hooks whose answers are collected.

A hook call costs about what calling its implementations by hand costs: each hook's
implementations are kept in calling order with how to pick their arguments and whether
they are coroutine functions (rebuilt when a plugin is registered or unregistered), a
coroutine function's result is awaited without a check, and a plain function's answer
is checked for being awaitable by its type.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable
from operator import itemgetter
from types import GeneratorType
from typing import Any

import pluggy

from kefu.core.errors import StartupError
from kefu.hooks import EVENT_TYPES_ATTR

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


#: What a call runs, per implementation, in pluggy's calling order:
#: ``(plugin_name, function, arguments, is_coroutine_function)`` where
#: ``arguments(kwargs)`` is the tuple of the values the implementation asked for.
Plan = tuple[tuple[str, Callable[..., Any], Callable[[dict[str, Any]], tuple], bool], ...]

#: Types a sync implementation returned that are not awaitable, so the next value of the
#: same type skips :func:`inspect.isawaitable`. Bounded: a type past the cap is just
#: checked every time.
_PLAIN_TYPES: set[type] = {bool, int, float, str, bytes, dict, list, tuple}
_PLAIN_TYPES_CAP = 256


class _WatchedImpls(list):
    """pluggy's implementation list of one hook, remembering the plan built from it.

    pluggy keeps a hook's implementations in ``HookCaller._hookimpls`` and changes that
    list in place on ``register``/``unregister`` (``insert``, ``del``). Swapping in this
    subclass makes every change drop the plan, whatever path made it, so a call never
    sees a stale order and the next call rebuilds it once.
    """

    __slots__ = ("by_type", "plan")

    def __init__(self, impls: list) -> None:
        super().__init__(impls)
        self.plan: Plan | None = None
        #: ``kefu_event``'s plan per event type (implementations marked ``listens_to``)
        self.by_type: dict[str, Plan] | None = None


def _dropping_plan(name: str) -> Callable[..., Any]:
    method = getattr(list, name)

    def mutate(self: _WatchedImpls, *args: Any) -> Any:
        self.plan = self.by_type = None
        return method(self, *args)

    mutate.__name__ = name
    return mutate


for _name in (
    "__setitem__", "__delitem__", "__iadd__", "__imul__", "append", "extend",
    "insert", "pop", "remove", "clear", "sort", "reverse",
):  # fmt: skip
    setattr(_WatchedImpls, _name, _dropping_plan(_name))
del _name


def _arguments(argnames: tuple[str, ...]) -> Callable[[dict[str, Any]], tuple]:
    if len(argnames) >= 2:
        return itemgetter(*argnames)  # a tuple, built in C
    if argnames:
        (name,) = argnames
        return lambda kwargs: (kwargs[name],)
    return lambda kwargs: ()


def _build_plan(impls: list[pluggy.HookImpl]) -> Plan:
    # pluggy calls the list from its end: tryfirst last-registered first.
    return tuple(
        (
            impl.plugin_name,
            impl.function,
            _arguments(tuple(impl.argnames)),
            inspect.iscoroutinefunction(impl.function),
        )
        for impl in reversed(impls)
    )


def _plan(caller: pluggy.HookCaller) -> Plan:
    """The hook's implementations in calling order, rebuilt only after they changed."""
    impls = caller._hookimpls
    plan = getattr(impls, "plan", None)
    if plan is not None:
        return plan
    plan = _build_plan(impls)
    if type(impls) is not _WatchedImpls:
        try:
            caller._hookimpls = impls = _WatchedImpls(impls)  # type: ignore[misc]
        except AttributeError:  # a subset caller computes its list: nothing to keep
            return plan
    impls.plan = plan
    return plan


#: Event types whose plan is kept per hook (the types are a fixed vocabulary; past this,
#: a plugin inventing types per event would just rebuild them).
_EVENT_PLANS_CAP = 512


def _wants(function: Callable[..., Any], event_type: str) -> bool:
    """Whether a ``kefu_event`` implementation listens to ``event_type`` (``listens_to``)."""
    types = getattr(function, EVENT_TYPES_ATTR, None)
    if types is None or event_type in types:
        return True
    return any(t.endswith(".*") and event_type.startswith(t[:-1]) for t in types)


def _event_plan(caller: pluggy.HookCaller, event_type: str) -> Plan:
    """:func:`_plan` without the implementations that do not listen to ``event_type``."""
    plan = _plan(caller)
    impls = caller._hookimpls
    if type(impls) is not _WatchedImpls:
        return tuple(step for step in plan if _wants(step[1], event_type))
    cache = impls.by_type
    if cache is None:
        cache = impls.by_type = {}
    found = cache.get(event_type)
    if found is None:
        if len(cache) >= _EVENT_PLANS_CAP:
            cache.clear()
        found = cache[event_type] = tuple(step for step in plan if _wants(step[1], event_type))
    return found


def _awaitable(value: Any) -> bool:
    """``inspect.isawaitable`` for a sync implementation's non-None answer, by type."""
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return False
    if inspect.isawaitable(value):
        return True
    # a generator is awaitable or not per code object (types.coroutine), never cache it
    if kind is not GeneratorType and len(_PLAIN_TYPES) < _PLAIN_TYPES_CAP:
        _PLAIN_TYPES.add(kind)
    return False


def _refuse_async(caller: pluggy.HookCaller, value: Any) -> str | None:
    """Why a sync-only hook's answer is refused (it is awaitable), closing a coroutine."""
    if value is None or not _awaitable(value):
        return None
    if inspect.iscoroutine(value):
        value.close()
    return f"hook {caller.name} must not be async"


async def call_all(caller: pluggy.HookCaller, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call every implementation; return ``[(plugin_name, result)]`` for non-None results.

    An exception propagates (wrapped in nothing) after being logged with the plugin name.
    """
    results = []
    for plugin_name, function, arguments, is_async in _plan(caller):
        try:
            # inlined here, in call_first and in notify: a helper coroutine per
            # implementation would cost about what the plan saves
            if is_async:
                value = await function(*arguments(kwargs))
            else:
                value = function(*arguments(kwargs))
                if value is not None and _awaitable(value):
                    value = await value
        except Exception:
            log.error("plugin %r failed in hook %s", plugin_name, caller.name)
            raise
        if value is not None:
            results.append((plugin_name, value))
    return results


def call_all_sync(caller: pluggy.HookCaller, **kwargs: Any) -> list[tuple[str, Any]]:
    """Like :func:`call_all` for hooks documented as sync only (routes, schemas, registries)."""
    results = []
    for plugin_name, function, arguments, _ in _plan(caller):
        try:
            value = function(*arguments(kwargs))
        except Exception as exc:
            raise PluginHookError(
                f"plugin {plugin_name!r} failed in hook {caller.name}: {type(exc).__name__}: {exc}"
            ) from exc
        refused = _refuse_async(caller, value)
        if refused:
            raise PluginHookError(f"plugin {plugin_name!r}: {refused}")
        if value is not None:
            results.append((plugin_name, value))
    return results


def collect_sync(
    caller: pluggy.HookCaller, failures: HookFailures | None = None, **kwargs: Any
) -> list[tuple[str, Any]]:
    """Like :func:`call_all_sync`, each implementation isolated: one that raises (or is
    async) is logged with its plugin's name, counted and left out."""
    results = []
    for plugin_name, function, arguments, _ in _plan(caller):
        try:
            value = function(*arguments(kwargs))
            refused = _refuse_async(caller, value)
            if refused:
                raise TypeError(refused)
        except Exception:
            log.exception("plugin %r failed in hook %s", plugin_name, caller.name)
            if failures is not None:
                failures.record(plugin_name, caller.name)
            continue
        if value is not None:
            results.append((plugin_name, value))
    return results


async def call_first(caller: pluggy.HookCaller, **kwargs: Any) -> Any:
    """Return the first non-None result, awaiting each implementation in turn."""
    for _, function, arguments, is_async in _plan(caller):
        if is_async:
            value = await function(*arguments(kwargs))
        else:
            value = function(*arguments(kwargs))
            if value is not None and _awaitable(value):
                value = await value
        if value is not None:
            return value
    return None


async def notify(
    caller: pluggy.HookCaller, failures: HookFailures | None = None, **kwargs: Any
) -> int:
    """Run every implementation, isolated; return how many failed."""
    return await _notify(caller.name, _plan(caller), failures, kwargs)


async def notify_event(
    caller: pluggy.HookCaller, failures: HookFailures | None, event_type: str, **kwargs: Any
) -> int:
    """:func:`notify` of the implementations that listen to ``event_type`` (all of them,
    but those marked with ``kefu.hooks.listens_to`` for other types)."""
    return await _notify(caller.name, _event_plan(caller, event_type), failures, kwargs)


async def _notify(
    hook: str, plan: Plan, failures: HookFailures | None, kwargs: dict[str, Any]
) -> int:
    failed = 0
    for plugin_name, function, arguments, is_async in plan:
        try:
            if is_async:
                await function(*arguments(kwargs))
            else:
                value = function(*arguments(kwargs))
                if value is not None and _awaitable(value):
                    await value
        except Exception:
            failed += 1
            log.exception("plugin %r failed in hook %s", plugin_name, hook)
            if failures is not None:
                failures.record(plugin_name, hook)
    return failed
