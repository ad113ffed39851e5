"""The WebSocket pumps woken in one loop tick are written by one callback at the next turn,
each once, in the order they were woken; one whose socket raises does not keep the others
unwritten (plugins/transport_ws/pump.py)."""

from __future__ import annotations

import asyncio

from kefu.plugins.transport_ws.pump import Pump, ws_frame


class Conn:
    def __init__(self, name: str, frames: list[bytes]) -> None:
        self.name, self.frames, self.closed, self.on_push = name, frames, False, None

    @property
    def queued(self) -> bool:
        return bool(self.frames)

    def drain(self) -> list[bytes]:
        frames, self.frames = self.frames, []
        return frames


class Transport:
    def __init__(self, log: list, name: str, broken: bool = False) -> None:
        self.log, self.name, self.broken = log, name, broken

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def write(self, data: bytes) -> None:
        if self.broken:
            raise RuntimeError("broken socket")
        self.log.append((self.name, data))


class Request:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport


async def _noop(*_args) -> None:
    return None


async def test_pumps_of_one_tick_are_flushed_by_one_callback_each_once():
    writes: list = []
    loop = asyncio.get_running_loop()
    conns = [Conn(f"c{i}", []) for i in range(3)]
    pumps = [
        Pump(c, Request(Transport(writes, c.name, broken=c.name == "c1")), 1 << 20, _noop, _noop)
        for c in conns
    ]
    handles_before = len(getattr(loop, "_ready", ()))
    for conn, pump in zip(conns, pumps, strict=True):
        conn.frames += [b"a", b"b"]
        pump.wake()
        pump.wake()  # a second wake in the same tick schedules nothing more
    if hasattr(loop, "_ready"):  # the asyncio loop: one callback for the three pumps
        assert len(loop._ready) == handles_before + 1
    assert writes == []  # written at the next turn, not inside wake
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert writes == [(n, ws_frame(b"a") + ws_frame(b"b")) for n in ("c0", "c2")]
    conns[0].frames.append(b"c")
    pumps[0].wake()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert writes[-1] == ("c0", ws_frame(b"c"))
