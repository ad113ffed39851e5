"""Storage hooks: named storage backends."""

from kefu.hooks import hookspec


@hookspec
def kefu_storage_backends():
    """Register storage backends by name.

    Called once at start-up. ``[storage] backend = "NAME"`` in ``kefu.toml``
    chooses one; an unknown name fails start-up with the list of names
    available. Two plugins registering the same name fail start-up.

    :returns: a dict mapping a backend name (``"sql"``, ``"mongo"``,
        ``"memory"``) to a factory ``factory(kernel) -> backend``. The backend
        implements :class:`kefu.core.storage.StorageBackend`; its async
        ``open()`` and ``close()`` are called by the kernel. Sync only.
    """
