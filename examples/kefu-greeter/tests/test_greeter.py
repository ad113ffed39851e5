"""Tests a plugin author runs against the real kernel: `pytest examples/kefu-greeter`."""

from types import SimpleNamespace

import pytest

import kefu_greeter
from kefu.core.kernel import load_kernel
from kefu.core.types import PipelineReject
from kefu.core.web_app import create_app


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "kefu.toml"
    path.write_text('[greeter]\ngreeting = "Ni hao"\nblocked_words = ["spam"]\n')
    return path


async def test_route_serves_configured_greeting(aiohttp_client, config_file):
    kernel = load_kernel(config_file)
    assert kernel.plugins.record("greeter").origin == "entrypoint"
    client = await aiohttp_client(create_app(kernel))
    resp = await client.get("/greeter/hello")
    assert resp.status == 200
    assert await resp.json() == {"greeting": "Ni hao"}


async def test_pipeline_refuses_blocked_word(config_file):
    kernel = load_kernel(config_file)
    (step,) = [p for p in kernel.hooks.pipeline_processors() if p.name.startswith("greeter")]
    ok = SimpleNamespace(text="hello")
    assert await step.process(ok, {}) is ok
    with pytest.raises(PipelineReject) as info:
        await step.process(SimpleNamespace(text="buy SPAM now"), {})
    assert info.value.code == "blocked_word"


async def test_counts_events(config_file):
    kernel = load_kernel(config_file)
    before = kefu_greeter.events_seen["demo.event"]
    await kernel.emit("demo.event", site_id="s1")
    assert kefu_greeter.events_seen["demo.event"] == before + 1


async def test_greeting_is_shed_at_level_2(aiohttp_client, tmp_path):
    path = tmp_path / "kefu.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[storage]\nbackend = "memory"\n'
        '[plugins]\nenable = ["kefu.plugins.degradation"]\n'
    )
    kernel = load_kernel(path)
    client = await aiohttp_client(create_app(kernel))
    assert "greeter.hello" in [f.name for f in kernel.hooks.degradation_features()]
    await kernel.pressure.override(2, 60)
    resp = await client.get("/greeter/hello")
    assert resp.status == 503 and resp.headers["Retry-After"]
    await kernel.pressure.override(None, 1)
    assert (await client.get("/greeter/hello")).status == 200
