"""A plugin for tests/test_supervisor.py: a worker that fails to start or hangs at shutdown.

``KEFU_TEST_FAIL_WORKER=N`` makes worker N's start-up fail; ``KEFU_TEST_HANG_SHUTDOWN=1``
makes every worker's shutdown hang, so the supervisor has to kill it.
"""

import asyncio
import os

from kefu.hooks import hookimpl


@hookimpl
async def kefu_startup(kernel):
    if os.environ.get("KEFU_TEST_FAIL_WORKER") == os.environ.get("KEFU_WORKER_INDEX", "0"):
        raise RuntimeError("this worker refuses to start (test)")


@hookimpl
async def kefu_shutdown(kernel):
    if os.environ.get("KEFU_TEST_HANG_SHUTDOWN"):
        await asyncio.sleep(3600)
