"""Message bus hooks: named buses that carry events between worker processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kefu.hooks import hookspec

if TYPE_CHECKING:
    from kefu.core.bus import Bus
    from kefu.core.kernel import Kernel


@hookspec
def kefu_bus_backends() -> dict[str, Callable[[Kernel], Bus]] | None:
    """Register message buses by name.

    Called once at start-up. ``[bus] backend = "NAME"`` chooses one (the
    in-process ``"memory"`` bus is the default); an unknown name fails
    start-up with the list of names available.

    :returns: a dict mapping a bus name to a factory ``factory(kernel) -> bus``
        where the bus implements :class:`kefu.core.bus.Bus`, or None. Sync only.
    """
