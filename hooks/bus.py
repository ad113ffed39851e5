"""Message bus hooks: named buses that carry events between worker processes."""

from kefu.hooks import hookspec


@hookspec
def kefu_bus_backends():
    """Register message buses by name.

    Called once at start-up. ``[bus] backend = "NAME"`` chooses one (the
    in-process ``"memory"`` bus is the default); an unknown name fails
    start-up with the list of names available.

    :returns: a dict mapping a bus name to a factory ``factory(kernel) -> bus``
        where the bus implements :class:`kefu.core.bus.Bus`, or None. Sync only.
    """
