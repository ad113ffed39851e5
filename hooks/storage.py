"""Storage hooks: named storage backends."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kefu.hooks import hookspec

if TYPE_CHECKING:
    from kefu.core.kernel import Kernel
    from kefu.core.storage import StorageBackend


@hookspec
def kefu_storage_backends() -> dict[str, Callable[[Kernel], StorageBackend]] | None:
    """Register storage backends by name.

    Called once at start-up. ``[storage] backend = "NAME"`` in ``kefu.toml``
    chooses one; an unknown name fails start-up with the list of names
    available. Two plugins registering the same name fail start-up.

    :returns: a dict mapping a backend name (``"sql"``, ``"mongo"``,
        ``"memory"``) to a factory ``factory(kernel) -> backend``. The backend
        implements :class:`kefu.core.storage.StorageBackend`; its async
        ``open()`` and ``close()`` are called by the kernel. Sync only.
    """
