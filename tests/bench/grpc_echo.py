"""What grpcio itself costs per streamed message: a bare grpc.aio echo server (no kefu) in
its own process, a client sending N frames over S streams and reading them back; the
server's CPU per echoed frame (one read + one write). ``python -m tests.bench.grpc_echo
[--loop uvloop|asyncio] [--streams 20]`` (docs/performance.md, "gRPC transport")."""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os

import grpc

from kefu.plugins.transport_grpc import kefu_chat_pb2 as pb
from kefu.plugins.transport_grpc import kefu_chat_pb2_grpc as pb_grpc
from tests.bench.servers import cpu_seconds, free_port

FRAME = pb.Frame(json=b'{"op":"ping","ref":1,"pad":"' + b"x" * 80 + b'"}')


class Echo(pb_grpc.ChatServicer):
    async def Connect(self, request_iterator, context):
        async for frame in request_iterator:
            await context.write(frame)


def serve(port: int, loop: str, ready) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.install()

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_ChatServicer_to_server(Echo(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    asyncio.run(main())


async def drive(port: int, frames: int, streams: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:

        async def one() -> None:
            call = pb_grpc.ChatStub(channel).Connect()

            async def write() -> None:
                for _ in range(frames // streams):
                    await call.write(FRAME)

            writer = asyncio.ensure_future(write())
            for _ in range(frames // streams):
                await call.read()
            await writer
            call.cancel()

        await asyncio.gather(*(one() for _ in range(streams)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--frames", type=int, default=20_000)
    args = parser.parse_args()
    port, ready = free_port(), mp.Event()
    server = mp.Process(target=serve, args=(port, args.loop, ready), daemon=True)
    server.start()
    ready.wait(30)
    try:
        asyncio.run(drive(port, 1_000, 1))  # warm-up
        before = cpu_seconds(server.pid)
        asyncio.run(drive(port, args.frames, args.streams))
        used = cpu_seconds(server.pid) - before
    finally:
        server.kill()
    print(
        f"{args.loop}, {args.streams} streams: server CPU {used / args.frames * 1e6:.0f} us per "
        f"echoed frame (one read + one write); load average {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
