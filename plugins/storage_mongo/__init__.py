"""MongoDB storage (``[storage] backend = "mongo"``) on PyMongo's async client.

Needs the ``mongo`` extra (``pip install 'kefu[mongo]'``); pymongo is imported
only when this backend is chosen, so kefu runs without it. Works against
MongoDB (standalone, replica set or sharded) and SecantusDB. See docs/storage.md.
"""

from __future__ import annotations

from pydantic import Field

from kefu.core.config import Section
from kefu.core.errors import StartupError
from kefu.hooks import hookimpl


class MongoSettings(Section):
    """``[mongo]``: read at start-up only."""

    #: A MongoDB connection string.
    url: str = "mongodb://127.0.0.1:27017"
    #: The database kefu keeps its collections in.
    database: str = Field("kefu", pattern=r"^[^/\\. \"$]{1,63}$")
    #: ``w`` of the write concern an acknowledgement waits for: "majority" or a number.
    write_concern: str | int = "majority"
    #: Wait for the journal (``j``) before acknowledging.
    journal: bool = True
    #: Group commit: most appends handled together. 1 = one at a time.
    batch_max: int = Field(256, ge=1, le=10_000)
    #: Group commit: extra wait (ms) to gather a batch.
    batch_window_ms: float = Field(0.0, ge=0, le=100)


def make_backend(kernel):
    settings: MongoSettings = kernel.config.section("mongo")
    try:
        from .backend import MongoStorage
    except ImportError as exc:
        raise StartupError(
            f"storage backend 'mongo' needs pymongo: pip install 'kefu[mongo]' ({exc})"
        ) from exc
    return MongoStorage(
        settings.url,
        settings.database,
        write_concern=settings.write_concern,
        journal=settings.journal,
        batch_max=settings.batch_max,
        batch_window=settings.batch_window_ms / 1000,
    )


@hookimpl
def kefu_config_schema():
    return {"mongo": MongoSettings}


@hookimpl
def kefu_storage_backends():
    return {"mongo": make_backend}
