"""The application factory: kernel endpoints, plugin routes, lifespans, isolation."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web

from kefu.core.errors import StartupError
from kefu.core.kernel import load_kernel
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl


async def test_kernel_with_no_plugins_at_all_serves_healthz(aiohttp_client, data_dir_config):
    kernel = load_kernel(data_dir_config, defaults=(), entry_points=False)
    assert kernel.plugins.records == []
    client = await aiohttp_client(create_app(kernel))
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json())["status"] == "ok"
    assert (await client.get("/readyz")).status == 200
    assert (await (await client.get("/-/plugins")).json()) == {"plugins": []}


async def test_plugins_endpoint_lists_builtin_and_entry_point_plugins(
    aiohttp_client, data_dir_config
):
    client = await aiohttp_client(create_app(load_kernel(data_dir_config)))
    resp = await client.get("/-/plugins")
    if resp.status in (401, 403):  # an auth plugin is enabled: admin only
        assert (await resp.json())["error"]["code"] == "admin_required"
        return
    plugins = {p["name"]: p for p in (await resp.json())["plugins"]}
    assert plugins["bus_memory"]["origin"] == "builtin"
    assert plugins["greeter"]["origin"] == "entrypoint"
    assert "kefu_routes" in plugins["greeter"]["hooks"]


async def test_raising_event_listener_is_logged_by_name_and_kernel_keeps_serving(
    aiohttp_client, write_config, tmp_path, caplog
):
    seen = []

    class Emitter:
        @hookimpl
        def kefu_routes(self, kernel):
            async def fire(request):
                await kernel.emit("demo.fired", site_id="s1")
                return web.json_response({"ok": True})

            return [web.post("/fire", fire)]

        @hookimpl
        def kefu_event(self, kernel, event):
            seen.append(event.type)

    path = write_config(
        f'[server]\ndata_dir = "{tmp_path}"\n'
        '[plugins]\nenable = ["tests.plugins.raising_listener"]\n'
    )
    kernel = load_kernel(path, extra_plugins=(("emitter", Emitter()),))
    client = await aiohttp_client(create_app(kernel))
    with caplog.at_level(logging.ERROR):
        for _ in range(2):
            resp = await client.post("/fire")
            assert resp.status == 200
    assert seen == ["demo.fired", "demo.fired"]  # the healthy listener still ran
    assert "plugin 'tests.plugins.raising_listener' failed in hook kefu_event" in caplog.text
    assert kernel.failures.counts[("tests.plugins.raising_listener", "kefu_event")] == 2
    assert (await client.get("/healthz")).status == 200


async def test_lifespans_start_in_order_and_stop_in_reverse(aiohttp_client, data_dir_config):
    calls = []

    def plugin(name):
        class P:
            @hookimpl
            async def kefu_startup(self, kernel):
                assert kernel.storage is not None and kernel.bus is not None
                calls.append(f"start {name}")

            @hookimpl
            def kefu_shutdown(self, kernel):
                calls.append(f"stop {name}")

        return P()

    kernel = load_kernel(data_dir_config, extra_plugins=(("a", plugin("a")), ("b", plugin("b"))))
    client = await aiohttp_client(create_app(kernel))
    assert (await client.get("/readyz")).status == 200
    await client.close()
    assert calls[-4:] == ["start a", "start b", "stop b", "stop a"]


async def test_failing_startup_names_plugin_and_stops_the_started_ones(data_dir_config):
    stopped = []

    class Good:
        @hookimpl
        def kefu_startup(self, kernel):
            pass

        @hookimpl
        def kefu_shutdown(self, kernel):
            stopped.append("good")

    class Bad:
        @hookimpl
        def kefu_startup(self, kernel):
            raise RuntimeError("database unreachable")

    kernel = load_kernel(data_dir_config, extra_plugins=(("good", Good()), ("bad", Bad())))
    runner = web.AppRunner(create_app(kernel))
    with pytest.raises(StartupError, match="plugin 'bad' failed to start: database unreachable"):
        await runner.setup()
    assert stopped == ["good"]


async def test_readyz_reports_failing_plugin_check(aiohttp_client, data_dir_config):
    class Checked:
        @hookimpl
        def kefu_ready_checks(self, kernel):
            async def warming():
                return "index still warming"

            return {"search-index": warming}

    kernel = load_kernel(data_dir_config, extra_plugins=(("checked", Checked()),))
    client = await aiohttp_client(create_app(kernel))
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["problems"] == {"search-index": "index still warming"}


async def test_middlewares_apply_by_priority_not_registration_order(
    aiohttp_client, data_dir_config
):
    def tagging(tag, priority):
        @web.middleware
        async def mw(request, handler):
            resp = await handler(request)
            resp.headers["X-Order"] = (resp.headers.get("X-Order", "") + tag).strip()
            return resp

        class P:
            @hookimpl
            def kefu_middlewares(self, kernel):
                return [(priority, mw)]

        return P()

    kernel = load_kernel(
        data_dir_config, extra_plugins=(("outer", tagging("o", 10)), ("inner", tagging("i", 20)))
    )
    client = await aiohttp_client(create_app(kernel))
    resp = await client.get("/healthz")
    assert resp.headers["X-Order"] == "io"  # inner ran closest to the handler


async def test_shutdown_requested_runs_before_open_requests_are_awaited(data_dir_config):
    """A plugin holding a long request open ends it on kefu_shutdown_requested."""
    import asyncio
    import time

    import aiohttp

    release = asyncio.Event()

    class Holder:
        @hookimpl
        def kefu_routes(self, kernel):
            async def hold(request):
                await release.wait()
                return web.json_response({"released": True})

            return [web.get("/hold", hold)]

        @hookimpl
        def kefu_shutdown_requested(self, kernel):
            release.set()

    kernel = load_kernel(data_dir_config, extra_plugins=(("holder", Holder()),))
    runner = web.AppRunner(create_app(kernel), shutdown_timeout=30)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(session.get(f"http://127.0.0.1:{port}/hold"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await runner.cleanup()
        resp = await pending
        assert (await resp.json()) == {"released": True}
    assert time.monotonic() - started < 5


def test_plugin_state_is_per_kernel(data_dir_config):
    first, second = load_kernel(data_dir_config), load_kernel(data_dir_config)
    made = first.plugin_state("demo", lambda kernel: {"kernel": kernel})
    assert first.plugin_state("demo", lambda kernel: {"other": True}) is made
    assert second.existing_plugin_state("demo") is None
    assert first.drop_plugin_state("demo") is made
    assert first.existing_plugin_state("demo") is None
