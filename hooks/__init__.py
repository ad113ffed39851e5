"""kefu hook specifications.

Plugin authors import one thing from here, and a second if they listen to events::

    from kefu.hooks import hookimpl, listens_to

Each module in this package holds the specifications of one domain; the
docstring of every spec is its reference documentation (mirrored in
``docs/hooks.md``, kept in sync by ``tests/test_docs.py``). The specs are typed, as
tox 4 types its own (``src/tox/plugin/spec.py``): an editor shows an implementation's
author what each argument is and what to return. The types come from ``kefu.core``
and are imported for type checkers only, so this package never imports the kernel
(nor any plugin) at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeAlias, TypeVar, overload

import pluggy

PROJECT: Final = "kefu"

_F = TypeVar("_F", bound=Callable[..., object])
_T = TypeVar("_T")

#: What a hook that "may be async" accepts from an implementation: the answer itself
#: (``def``), or an awaitable of it (``async def``, or a ``def`` that returns one), awaited.
MaybeAwaitable: TypeAlias = _T | Awaitable[_T]


class HookimplMarker(Protocol):
    """The type of :data:`hookimpl`: it returns the decorated function unchanged.

    Only the options kefu's hook calls honour are part of it: ``tryfirst`` and
    ``trylast`` (order), ``specname`` (implement a hook under another function name)
    and ``optionalhook`` (a hook no spec declares, e.g. another plugin's). pluggy's
    ``hookwrapper``/``wrapper`` are left out: kefu calls each implementation itself
    (``kefu.core.hookcall``), so a wrapper would be called as a plain implementation.
    """

    @overload
    def __call__(self, function: _F, /) -> _F: ...

    @overload
    def __call__(
        self,
        *,
        tryfirst: bool = ...,
        trylast: bool = ...,
        specname: str | None = ...,
        optionalhook: bool = ...,
    ) -> Callable[[_F], _F]: ...


#: Marks a plugin's function as the implementation of the hook of the same name:
#: ``@hookimpl``, or ``@hookimpl(tryfirst=True)`` / ``@hookimpl(trylast=True)``.
hookimpl: Final[HookimplMarker] = pluggy.HookimplMarker(PROJECT)

_spec_marker: Final = pluggy.HookspecMarker(PROJECT)


def hookspec(function: _F) -> _F:
    """Mark a function of ``hooks/*.py`` as a hook specification, keeping its type."""
    return _spec_marker(function)


#: The attribute :func:`listens_to` sets on a ``kefu_event`` implementation.
EVENT_TYPES_ATTR: Final = "kefu_event_types"


def listens_to(*types: str) -> Callable[[_F], _F]:
    """Declare the event types a ``kefu_event`` implementation wants; it is not called
    for the others (no call, no coroutine). A type ending in ``.*`` stands for every type
    with that prefix (``"conversation.*"``). Without it an implementation gets every event::

        @hookimpl
        @listens_to("message.stored", "conversation.*")
        def kefu_event(kernel, event): ...
    """
    if not types or not all(isinstance(t, str) and t for t in types):
        raise TypeError("listens_to needs one or more event types")

    def mark(function: _F) -> _F:
        setattr(function, EVENT_TYPES_ATTR, frozenset(types))
        return function

    return mark


#: The spec modules, in the order the reference documents them.
SPEC_MODULES: Final = (
    "kefu.hooks.lifecycle",
    "kefu.hooks.transport",
    "kefu.hooks.auth",
    "kefu.hooks.pipeline",
    "kefu.hooks.storage",
    "kefu.hooks.bus",
    "kefu.hooks.routing",
    "kefu.hooks.bot",
    "kefu.hooks.degradation",
    "kefu.hooks.events",
)

__all__ = [
    "EVENT_TYPES_ATTR",
    "PROJECT",
    "SPEC_MODULES",
    "HookimplMarker",
    "MaybeAwaitable",
    "hookimpl",
    "hookspec",
    "listens_to",
]
