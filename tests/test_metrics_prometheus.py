"""The Prometheus exporter over real sockets: series after a real chat, plugin statistics,
kernel counters, isolation between kernels, the disabled plugin, and a scrape by Debian's
real ``prometheus`` server."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shutil
import socket
import time
from pathlib import Path

import aiohttp
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from kefu.core.kernel import Kernel, load_kernel
from kefu.core.reload import apply_reload
from kefu.core.stats import Histogram
from kefu.core.types import PipelineReject, Processor
from kefu.core.web_app import create_app
from kefu.hooks import hookimpl
from kefu.plugins.metrics_prometheus import exporter_of
from kefu.plugins.metrics_prometheus.families import Families
from kefu.plugins.metrics_prometheus.settings import MetricsSettings
from tests.chat_support import add_site, app_kernel, open_chat
from tests.conftest import service_unavailable

PROMETHEUS_DEADLINE = 20.0
METRICS_MD = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def kernel_for(
    tmp_path: Path, storage: str = "memory", extra: str = "", plugins: tuple = ()
) -> Kernel:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "kefu.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\nreload = false\n'
        f'[storage]\nbackend = "{storage}"\n[auth]\npassword_cost = 10\n' + extra,
        encoding="utf-8",
    )
    return load_kernel(path, environ={}, entry_points=False, extra_plugins=plugins)


def rewrite_config(kernel: Kernel, text: str) -> Kernel:
    Path(kernel.config_path).write_text(text, encoding="utf-8")
    return kernel


class Samples:
    """One scrape, parsed by prometheus-client's own parser of the text format."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.values = {
            (s.name, frozenset(s.labels.items())): s.value
            for f in self.families.values()
            for s in f.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str) -> float:
        return sum(v for (n, _), v in self.values.items() if n == name)


async def scrape(client, path: str = "/metrics", **kwargs) -> Samples:
    resp = await client.get(path, **kwargs)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return Samples(await resp.text())


async def eventually(check, within: float = 3.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_real_chat_moves_the_series(aiohttp_client, tmp_path):
    kernel = kernel_for(tmp_path, storage="sql", extra="[metrics]\nprocess_metrics = true\n")
    client = await aiohttp_client(create_app(kernel))
    before = await scrape(client)  # the first scrape also starts the latency histograms
    assert before("kefu_connections", transport="ws", kind="visitor") == 0  # known, not absent
    assert "process_resident_memory_bytes" in before.text
    assert exporter_of(kernel).registry is not REGISTRY

    chat = await open_chat(client)  # nobody is online: the conversation waits
    queued = await scrape(client)
    assert queued("kefu_routing_queue_length") == 1
    assert queued("kefu_connections", transport="ws", kind="visitor") == 1
    assert queued("kefu_connections", transport="ws", kind="agent") == 1
    assert queued("kefu_conversations_started_total", transport="ws") == 1

    agent = await kernel.storage.get_agent(chat.site.site.id, chat.site.agent.id)
    await kernel.storage.update_agent(dataclasses.replace(agent, status="online"))
    await chat.agent.send(op="presence", status="online")  # routing drains on presence
    await chat.agent.expect("presence_ok")
    await eventually(lambda: exporter_of(kernel).series.assigned)
    assigned = await scrape(client)
    assert assigned("kefu_routing_queue_length") == 0
    assert assigned.total("kefu_routing_assignments_total") == 1
    assert assigned("kefu_routing_wait_seconds_count") == 1
    assert assigned("kefu_agent_presence_total", status="online") == 1

    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="v1", text="hi")
    await chat.visitor.expect("ack")
    await chat.agent.expect("message", cid="v1")
    await chat.agent.send(op="send", conversation_id=chat.conversation_id, cid="a1", text="yes?")
    await chat.agent.expect("ack")
    await chat.visitor.expect("message", cid="a1")
    # the dispatch timing of a send is recorded after its ack went out: wait for it
    for _ in range(100):
        after = await scrape(client)
        done = after("kefu_gateway_dispatch_seconds_count", op="send")
        if done - assigned("kefu_gateway_dispatch_seconds_count", op="send") >= 2:
            break
        await asyncio.sleep(0.02)

    def moved(name: str, **labels: str) -> float:
        return after(name, **labels) - assigned(name, **labels)

    assert moved("kefu_messages_stored_total", transport="ws", sender_kind="visitor") == 1
    assert moved("kefu_messages_stored_total", transport="ws", sender_kind="agent") == 1
    assert moved("kefu_message_ack_seconds_count", transport="ws") == 2
    assert after("kefu_message_ack_seconds_sum", transport="ws") > 0
    assert moved("kefu_gateway_frames_in_total", op="send") == 2
    assert moved("kefu_gateway_frames_out_total", op="ack") == 2
    assert moved("kefu_gateway_frames_out_total", op="message") == 2  # one to each side
    assert moved("kefu_gateway_delivery_seconds_count") == 2
    assert moved("kefu_gateway_dispatch_seconds_count", op="send") == 2
    assert after("kefu_gateway_frames_inflight") == 0
    assert after("kefu_gateway_outbox_frames") == 0
    assert moved("kefu_storage_appends_total") == 2
    assert moved("kefu_storage_append_batch_size_count") >= 1
    assert moved("kefu_storage_append_batch_seconds_count") >= 1
    assert after.families["kefu_message_ack_seconds"].type == "histogram"
    assert after.families["kefu_messages_stored"].type == "counter"
    assert after.families["kefu_gateway_outbox_frames"].type == "gauge"

    assert_documented(after.text)

    await chat.visitor.close()
    await eventually(lambda: exporter_of(kernel).series.disconnects)
    closed = await scrape(client)
    assert closed("kefu_disconnects_total", transport="ws", reason="client_closed") == 1
    assert closed("kefu_connections", transport="ws", kind="visitor") == 0
    assert closed("kefu_connections", transport="ws", kind="agent") == 1


def assert_documented(exposition: str) -> None:
    """Every kefu series of a scrape has its row, with the right type, in docs/metrics.md."""
    doc = METRICS_MD.read_text(encoding="utf-8")
    exported = re.findall(r"^# TYPE (kefu_\w+) (\w+)$", exposition, re.M)
    assert len(exported) >= 20
    missing = [f"| `{n}` | {t} |" for n, t in exported if f"| `{n}` | {t} |" not in doc]
    assert not missing, f"docs/metrics.md lacks rows starting {missing}"


def test_metrics_md_documents_every_setting_with_its_default():
    doc = METRICS_MD.read_text(encoding="utf-8")
    for key, field in MetricsSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if default is None:
            shown = "unset"
        elif isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        elif isinstance(default, str):
            shown = f'`"{default}"`'
        else:
            shown = f"`{default}`"
        assert f"| `{key}` | {shown} |" in doc, key


def test_metrics_md_plugin_example_exports_its_series():
    code = re.search(r"```python\n(.*?)```", METRICS_MD.read_text(encoding="utf-8"), re.S)[1]
    namespace: dict = {}
    exec(compile(code, "metrics.md", "exec"), namespace)
    namespace["jobs"]["mail"] += 2
    namespace["job_seconds"].observe(0.05)
    families = Families().convert("notify", namespace["kefu_stats"](None), {})
    samples = {s.name: s for f in families for s in f.samples}
    assert samples["kefu_notify_jobs_total"].value in (0, 2)
    assert samples["kefu_notify_job_seconds_count"].value == 1


class Reporter:
    """A third party reporting statistics of every shape, one malformed, one colliding."""

    @hookimpl
    def kefu_stats(self, kernel):
        latency = Histogram([0.1, 1.0])
        latency.observe(0.05)
        latency.observe(5.0)
        return {
            "widget_jobs_total": {(("queue", "mail"),): 3, (("queue", "sms"),): 1},
            "widget_depth": 2,
            "widget_seconds": latency.snapshot(),
            "Widget-Bad": 1,
            "widget_mixed": {(("a", "1"),): 1, (("b", "2"),): 2},
            "events_total": 99,  # the exporter's own name: refused
        }

    @hookimpl
    def kefu_pipeline_processors(self, kernel):
        async def refuse(message, context):
            if "spam" in message.text:
                raise PipelineReject("spam", "no spam please")
            return message

        return [Processor("test.guard", 10, refuse)]


class Broken:
    @hookimpl
    def kefu_stats(self, kernel):
        raise RuntimeError("statistics on fire")

    @hookimpl
    def kefu_event(self, kernel, event):
        if event.type == "message.rejected":
            raise RuntimeError("listener on fire")


async def test_plugin_statistics_rejections_and_hook_failures(aiohttp_client, tmp_path):
    plugins = (("reporter", Reporter()), ("broken", Broken()))
    kernel = kernel_for(tmp_path, plugins=plugins, extra="[metrics]\nprocess_metrics = false\n")
    client = await aiohttp_client(create_app(kernel))
    chat = await open_chat(client)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="x", text="spam")
    assert (await chat.visitor.expect("error"))["reason"] == "spam"
    got = await scrape(client)
    assert got("kefu_messages_rejected_total", code="spam", processor="test.guard") == 1
    assert got("kefu_hook_failures_total", plugin="broken", hook="kefu_event") == 1
    assert got("kefu_hook_failures_total", plugin="broken", hook="kefu_stats") == 1
    assert got("kefu_widget_jobs_total", queue="mail") == 3
    assert got.families["kefu_widget_jobs"].type == "counter"
    assert got("kefu_widget_depth") == 2
    assert got.families["kefu_widget_depth"].type == "gauge"
    assert got("kefu_widget_seconds_bucket", le="0.1") == 1
    assert got("kefu_widget_seconds_bucket", le="+Inf") == 2
    assert got("kefu_widget_seconds_sum") == 5.05
    assert "Widget-Bad" not in got.text and "kefu_widget_mixed" not in got.text
    assert got.total("kefu_events_total") < 99
    assert got.text.count("# TYPE kefu_events_total") == 1
    assert got("kefu_gateway_frames_in_total", op="send") == 1  # the gateway still reported
    assert "process_resident_memory_bytes" not in got.text


async def test_kernel_counters_loop_lag_and_token(aiohttp_client, tmp_path):
    token = "s3cret-metrics-token"
    kernel = kernel_for(
        tmp_path,
        extra=f'[metrics]\npath = "/-/prom"\ntoken = "{token}"\nloop_lag_interval_s = 0.02\n',
    )
    client = await aiohttp_client(create_app(kernel))
    auth = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/-/prom")).status == 401
    assert (await client.get("/-/prom", headers={"Authorization": "Bearer nope"})).status == 401
    assert (await client.get("/metrics")).status == 404

    time.sleep(0.15)  # noqa: ASYNC251  (holds the loop, as a long callback or a GC pause would)
    await asyncio.sleep(0.05)
    got = await scrape(client, "/-/prom", headers=auth)
    assert got("kefu_event_loop_lag_max_seconds") >= 0.1
    assert got("kefu_event_loop_lag_seconds_bucket", le="0.1") < got(
        "kefu_event_loop_lag_seconds_bucket", le="+Inf"
    )

    loaded = Path(kernel.config_path).read_text(encoding="utf-8")  # noqa: ASYNC240
    assert not await apply_reload(rewrite_config(kernel, loaded + "[gateway]\nrate = -1\n"))
    assert await apply_reload(rewrite_config(kernel, loaded + "[gateway]\nrate = 5.0\n"))
    got = await scrape(client, "/-/prom", headers=auth)
    assert got("kefu_config_reload_failures_total") == 1
    assert got("kefu_config_reloads_total") == 1
    assert got("kefu_events_total", type="config.reloaded") == 1


async def test_two_kernels_in_one_process_keep_their_own_series(aiohttp_client, tmp_path):
    one = await aiohttp_client(create_app(kernel_for(tmp_path / "one")))
    two = await aiohttp_client(create_app(kernel_for(tmp_path / "two")))
    chat = await open_chat(one, visitor_via="longpoll")
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="1", text="hi")
    await chat.visitor.expect("ack")
    got = await scrape(one)
    assert got("kefu_messages_stored_total", transport="longpoll", sender_kind="visitor") == 1
    assert got("kefu_connections", transport="longpoll", kind="visitor") == 1
    assert (await scrape(two)).total("kefu_messages_stored_total") == 0
    assert (await scrape(two))("kefu_connections", transport="ws", kind="visitor") == 0


async def test_disabled_plugin_has_no_endpoint_and_no_cost(aiohttp_client, tmp_path):
    kernel = kernel_for(tmp_path, extra='[plugins]\ndisable = ["metrics_prometheus"]\n')
    client = await aiohttp_client(create_app(kernel))
    assert not kernel.plugins.record("metrics_prometheus").enabled
    chat = await open_chat(client)
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="1", text="hi")
    await chat.visitor.expect("ack")
    await chat.agent.expect("message")
    assert (await client.get("/metrics")).status == 404
    assert "metrics" not in dict(kernel.config.sections())
    gateway = app_kernel(client.app).gateway
    assert gateway.stats.armed is False  # nobody read the statistics: no clock reads for them
    assert gateway.stats.delivery.count == 0 and not gateway.stats.dispatch
    assert gateway.stats.frames_in["send"] == 1  # the integer counters alone remain


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_debians_prometheus_server_scrapes_kefu(aiohttp_client, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        service_unavailable("the prometheus server (apt-get install prometheus)")
    client = await aiohttp_client(create_app(kernel_for(tmp_path)))
    chat = await open_chat(client, await add_site(app_kernel(client.app)))
    await chat.visitor.send(op="send", conversation_id=chat.conversation_id, cid="1", text="hi")
    await chat.visitor.expect("ack")

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: kefu\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{client.server.port}']\n"
    )
    process = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    api = f"http://127.0.0.1:{port}/api/v1/query"
    try:
        async with aiohttp.ClientSession() as http:
            found = None
            deadline = time.monotonic() + PROMETHEUS_DEADLINE
            while found is None and time.monotonic() < deadline:
                assert process.returncode is None, "prometheus exited early"
                try:
                    async with http.get(api, params={"query": "kefu_messages_stored_total"}) as r:
                        if r.status == 200:
                            found = (await r.json())["data"]["result"] or None
                except aiohttp.ClientConnectionError:
                    pass  # not listening yet
                if found is None:
                    await asyncio.sleep(0.25)
            assert found, f"no sample of kefu_messages_stored_total in {PROMETHEUS_DEADLINE}s"
            assert float(found[0]["value"][1]) == 1
            assert found[0]["metric"]["job"] == "kefu"
            async with http.get(api, params={"query": 'up{job="kefu"}'}) as r:
                assert (await r.json())["data"]["result"][0]["value"][1] == "1"
            query = {"query": "kefu_message_ack_seconds_bucket"}
            async with http.get(api, params=query) as r:
                assert (await r.json())["data"]["result"], "histogram buckets were not ingested"
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
