"""Per-call cost of the hook facade with the default plugins loaded (issue 11).

    .venv/bin/python -m tests.bench.hook_bench [--number 200000]

Times ``kernel.hooks.event(...)`` (``kefu_event``: every default listener) and
``kernel.hooks.permits(...)`` (``kefu_auth_permits``: the auth plugin answers after two
plugins that pass) on a loaded, not started kernel, so that the listeners return at once
and what is measured is mostly the calling machinery. Beside each, the same
implementations called directly in pluggy's order, which is what "a hook call costs what
a function call costs" is measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
from pathlib import Path

from kefu.core.kernel import load_kernel
from kefu.core.types import Event, Principal


def per_call_us(loop: asyncio.AbstractEventLoop, make, number: int) -> float:
    """Microseconds of this thread's CPU per awaited call of ``make()``, best of five runs
    (CPU time, so that other work on a shared machine does not count)."""

    async def run() -> None:
        for _ in range(number):
            await make()

    runs = timeit.repeat(
        lambda: loop.run_until_complete(run()), number=1, repeat=5, timer=time.thread_time
    )
    return min(runs) / number * 1e6


def direct(caller, **kwargs):
    """The implementations called by hand in pluggy's order: the floor."""
    impls = [
        (impl.function, tuple(kwargs[name] for name in impl.argnames))
        for impl in reversed(caller.get_hookimpls())
    ]

    async def call() -> None:
        for function, args in impls:
            value = function(*args)
            if asyncio.iscoroutine(value):
                await value

    return call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "kefu.toml"
        config.write_text(f'[server]\ndata_dir = "{tmp}/data"\n')
        kernel = load_kernel(config, environ={}, entry_points=False)
        event = Event("message.stored", None, {"conversation_id": "c1"})
        agent = Principal("agent", "a1", "s1")
        hook = kernel.pm.hook
        permits = {"principal": agent, "action": "conversation.read", "resource": None}
        rows = [
            ("hooks.event(message.stored)", lambda: kernel.hooks.event(event)),
            ("  its impls called directly", direct(hook.kefu_event, kernel=kernel, event=event)),
            ("hooks.permits(agent, conversation.read)", lambda: kernel.hooks.permits(**permits)),
            (
                "  its impls called directly",
                direct(hook.kefu_auth_permits, kernel=kernel, **permits),
            ),
        ]
        loop = asyncio.new_event_loop()
        try:
            for name, make in rows:
                print(f"{name:42} {per_call_us(loop, make, args.number):6.2f} µs/call")
        finally:
            loop.close()
        counts = {
            name: len(getattr(hook, name).get_hookimpls())
            for name in ("kefu_event", "kefu_auth_permits")
        }
        print("implementations:", counts)


if __name__ == "__main__":
    main()
