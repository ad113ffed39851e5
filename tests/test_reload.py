"""Live configuration reload through watchfiles: validate, swap atomically, notify, refuse."""

from __future__ import annotations

import asyncio
import logging

from kefu.core.kernel import load_kernel
from kefu.core.reload import apply_reload
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl


class Recorder:
    def __init__(self):
        self.changes = []

    @hookimpl
    def kefu_config_changed(self, kernel, section, old, new):
        self.changes.append((section, old, new))


async def wait_for(predicate, within=10.0):
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def body(tmp_path, greeting, port=8080):
    return f'[server]\ndata_dir = "{tmp_path}"\nport = {port}\n[greeter]\ngreeting = "{greeting}"\n'


async def test_edit_is_swapped_in_and_plugins_notified(aiohttp_client, write_config, tmp_path):
    path = write_config(body(tmp_path, "one"))
    recorder = Recorder()
    kernel = load_kernel(path, extra_plugins=(("recorder", recorder),))
    client = await aiohttp_client(create_app(kernel))
    assert (await (await client.get("/greeter/hello")).json())["greeting"] == "one"
    await asyncio.sleep(0.3)  # let the watcher start

    path.write_text(body(tmp_path, "two"))
    await wait_for(lambda: recorder.changes)
    assert (await (await client.get("/greeter/hello")).json())["greeting"] == "two"
    section, old, new = recorder.changes[0]
    assert section == "greeter" and old.greeting == "one" and new.greeting == "two"


async def test_invalid_edit_is_refused_and_running_config_stays(
    aiohttp_client, write_config, tmp_path, caplog
):
    path = write_config(body(tmp_path, "one"))
    kernel = load_kernel(path)
    client = await aiohttp_client(create_app(kernel))
    await asyncio.sleep(0.3)
    running = kernel.config
    with caplog.at_level(logging.ERROR):
        path.write_text(body(tmp_path, "two") + "[greeter.typo]\n")
        await wait_for(lambda: kernel.reload_failures == 1)
    assert kernel.config is running
    assert "config reload refused" in caplog.text and "greeter.typo" in caplog.text
    assert (await (await client.get("/greeter/hello")).json())["greeting"] == "one"


async def test_restart_only_settings_keep_running_value(write_config, tmp_path, caplog):
    path = write_config(body(tmp_path, "one", port=8080))
    recorder = Recorder()
    kernel = load_kernel(path, extra_plugins=(("recorder", recorder),))
    path.write_text(body(tmp_path, "two", port=9999))
    with caplog.at_level(logging.WARNING):
        assert await apply_reload(kernel)
    assert kernel.config.server.port == 8080
    assert kernel.config.section("greeter").greeting == "two"
    assert "[server] changed; it takes effect after a restart" in caplog.text
    assert [c[0] for c in recorder.changes] == ["greeter"]
