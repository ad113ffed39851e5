"""A plugin whose event listener always raises."""

from kefu.hooks import hookimpl

calls = []


@hookimpl
async def kefu_event(kernel, event):
    calls.append(event.type)
    raise RuntimeError("listener bug")
