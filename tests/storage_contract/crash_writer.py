"""Child process for the SIGKILL test: append forever, print each acknowledged message.

usage: python crash_writer.py DB_PATH SITE_ID CONVERSATION_ID WRITERS

Prints ``ACK <seq> <cid>`` only after ``append_message`` returned, i.e. after
the backend acknowledged the message; the parent kills this process with
SIGKILL at an arbitrary moment and checks that every printed ack survived.
"""

from __future__ import annotations

import asyncio
import os
import sys

from kefu.core.domain import Message
from kefu.plugins.storage_sql import SqlStorage


async def main(db_path: str, site_id: str, conversation_id: str, writers: int) -> None:
    storage = SqlStorage(f"sqlite+aiosqlite:///{db_path}")
    await storage.open()
    out = sys.stdout.fileno()
    os.write(out, b"READY\n")

    async def writer(n: int) -> None:
        i = 0
        while True:
            i += 1
            cid = f"w{n}-{i}"
            stored, _ = await storage.append_message(
                Message(site_id, conversation_id, cid, "visitor", "v", text=cid)
            )
            os.write(out, f"ACK {stored.seq} {cid}\n".encode())

    await asyncio.gather(*(writer(n) for n in range(writers)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
