"""kefu hook specifications.

Plugin authors import exactly one thing from here::

    from kefu.hooks import hookimpl

Each module in this package holds the specifications of one domain; the
docstring of every spec is its reference documentation (mirrored in
``docs/hooks.md``, kept in sync by ``tests/test_docs.py``).
"""

import pluggy

PROJECT = "kefu"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The spec modules, in the order the reference documents them.
SPEC_MODULES = (
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

__all__ = ["PROJECT", "SPEC_MODULES", "hookimpl", "hookspec"]
