"""Live configuration reload: validate, swap atomically, notify; refuse invalid edits."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import watchfiles

from kefu.core.errors import KefuError

if TYPE_CHECKING:
    from kefu.core.kernel import Kernel

log = logging.getLogger(__name__)


async def apply_reload(kernel: Kernel) -> bool:
    """Reload once; True when the new config is in force, False when it was refused."""
    from kefu.core.kernel import reload_config

    old = kernel.config
    try:
        changed = reload_config(kernel)
    except KefuError as exc:
        kernel.reload_failures += 1
        log.error("config reload refused, the running configuration stays: %s", exc)
        return False
    for section in changed:
        await kernel.hooks.config_changed(
            section, old.section(section), kernel.config.section(section)
        )
    if changed:
        log.info("config reloaded: %s", ", ".join(changed))
        await kernel.emit("config.reloaded", sections=changed)
    return True


async def watch_config(kernel: Kernel) -> None:
    """Watch ``kernel.config_path`` until cancelled."""
    # Watch the folder, not the file: editors often save by renaming a new file over it.
    # Non-recursive and filtered to the one file, so data or log files written beside
    # the config (kefu-data/, kefu.log) never wake the watcher.
    path = _real(kernel.config_path)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)
    async for _changes in watchfiles.awatch(
        os.path.dirname(path),
        watch_filter=lambda _change, changed: _real(changed) == path,
        recursive=False,
        debounce=200,
        step=50,
    ):
        await apply_reload(kernel)


def _real(path: str) -> str:
    # a cheap lstat per watched change; not worth a thread hop
    return os.path.realpath(path)
