"""``kefu run --workers N``: the supervisor, its workers on one port, the shared secret.

Real processes throughout: ``kefu run --workers 2`` in a subprocess on SQLite. Until a
shared bus is installed the workers run on the in-process bus with ``[server]
allow_unshared_bus = true`` (each worker sees only its own connections), which is
enough for what is tested here: the supervisor's mechanics, not cross-worker delivery.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import aiohttp
import orjson
import pytest

from kefu.core.errors import ConfigError
from kefu.core.kernel import load_kernel
from kefu.core.plugins import DEFAULT_PLUGINS
from kefu.core.supervisor import bus_is_shared, check_scaling, storage_is_shared
from tests.conftest import service_unavailable

ROOT = Path(__file__).resolve().parent.parent
KEFU = [sys.executable, "-m", "kefu.core.cli"]
SECRET = "s" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthz(port: int, timeout: float = 2.0) -> dict:
    """One GET /healthz on a fresh connection (urllib opens one per request)."""
    url = f"http://127.0.0.1:{port}/healthz"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        assert resp.status == 200
        return json.load(resp)


def parent_pid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s+(\d+)", status, re.M)[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) is not serving
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()


class Cluster:
    """``kefu run --workers N`` in a subprocess, on its own port and data dir."""

    def __init__(self, tmp_path: Path, workers: int = 2, drain_timeout: float = 10.0) -> None:
        self.port = free_port()
        self.workers = workers
        self.base = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "kefu.toml"
        self.config.write_text(
            f'[server]\ndata_dir = "{tmp_path / "data"}"\nreload = false\n'
            f"allow_unshared_bus = true\ndrain_timeout = {drain_timeout}\n"
            '[plugins]\nenable = ["tests.plugins.supervisor_probe"]\ndisable = ["bot_intents"]\n'
            "[auth]\npassword_cost = 10\n",
            encoding="utf-8",
        )
        self.out = tmp_path / "stdout.log"
        self.err = tmp_path / "stderr.log"
        self.proc: subprocess.Popen | None = None

    def spawn(self, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [*KEFU, "run", "--config", str(self.config), "--port", str(self.port),
             "--workers", str(self.workers)],
            stdout=self.out.open("w"),
            stderr=self.err.open("w"),
            stdin=subprocess.DEVNULL,
            cwd=self.config.parent,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        )  # fmt: skip

    def start(self, env: dict | None = None, timeout: float = 60) -> str:
        """Start, wait for the banner (printed once every worker is ready); return stdout."""
        self.spawn(env)
        deadline = time.monotonic() + timeout
        while "serving on" not in self.out.read_text():
            assert self.proc.poll() is None, f"supervisor exited: {self.logs()}"
            assert time.monotonic() < deadline, f"no banner: {self.logs()}"
            time.sleep(0.05)
        return self.out.read_text()

    def logs(self) -> str:
        return f"stdout:\n{self.out.read_text()}\nstderr:\n{self.err.read_text()[-4000:]}"

    def worker_pids(self, want: int | None = None, tries: int = 400) -> dict[int, int]:
        """worker index -> pid, from /healthz on fresh connections until ``want`` are seen."""
        want = self.workers if want is None else want
        seen: dict[int, int] = {}
        for _ in range(tries):
            body = healthz(self.port)
            seen[body["worker"]] = body["pid"]
            if len(seen) >= want:
                break
        return seen

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def cluster(tmp_path):
    made: list[Cluster] = []

    def make(**kwargs) -> Cluster:
        made.append(Cluster(tmp_path, **kwargs))
        return made[-1]

    yield make
    for c in made:
        pids = []
        if c.proc and c.proc.poll() is None:
            try:
                pids = list(c.worker_pids(tries=50).values())
            except OSError:
                pass
        c.stop()
        for pid in pids:  # workers drain by themselves once the supervisor is gone
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- the checks --------------------------------------------------------------------------


def config_of(write_config, text: str):
    return load_kernel(write_config(text), environ={}).config


def test_several_workers_on_the_in_process_bus_are_refused(write_config):
    config = config_of(write_config, "[server]\nworkers = 2\n")
    with pytest.raises(ConfigError, match=r'server\.workers: 2 workers need a bus shared.*"redis"'):
        check_scaling(config)
    check_scaling(config_of(write_config, "[server]\nworkers = 2\nallow_unshared_bus = true\n"))
    check_scaling(config_of(write_config, "[server]\nworkers = 1\n"))


def test_several_workers_on_memory_storage_are_refused(write_config):
    text = '[server]\nworkers = 3\nallow_unshared_bus = true\n[storage]\nbackend = "memory"\n'
    with pytest.raises(ConfigError, match="server.workers: 3 workers need storage shared"):
        check_scaling(config_of(write_config, text))


@pytest.mark.parametrize(
    ("text", "shared_storage"),
    [
        ('[sql]\nurl = "postgresql://postgres@127.0.0.1:5432/test"\n', True),
        ('[storage]\nbackend = "mongo"\n', True),
        ('[sql]\nurl = "sqlite:///x.db"\n', False),
        ("", False),
        ('[storage]\nbackend = "memory"\n', False),
    ],
)
def test_shared_storage_needs_the_secret_in_the_config(write_config, text, shared_storage):
    config = config_of(write_config, text)
    assert storage_is_shared(config) is shared_storage
    assert not bus_is_shared(config)
    if shared_storage:
        with pytest.raises(ConfigError, match=r"server\.secret: required .*KEFU_SERVER__SECRET"):
            check_scaling(config)
        check_scaling(config_of(write_config, f'[server]\nsecret = "{SECRET}"\n{text}'))
    else:
        check_scaling(config)


def test_the_secret_comes_from_the_environment_and_an_empty_one_is_refused(write_config):
    path = write_config('[sql]\nurl = "postgresql://postgres@127.0.0.1/test"\n')
    kernel = load_kernel(path, environ={"KEFU_SERVER__SECRET": SECRET})
    check_scaling(kernel.config)
    assert kernel.secret == SECRET.encode()
    with pytest.raises(ConfigError, match="overridden by KEFU_SERVER__SECRET.*at least 32"):
        load_kernel(path, environ={"KEFU_SERVER__SECRET": ""})


def test_kefu_check_and_run_refuse_a_shared_database_without_a_secret(tmp_path):
    path = tmp_path / "kefu.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
        '[sql]\nurl = "postgresql://postgres@127.0.0.1:5432/test"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KEFU_SERVER__SECRET", None)
    for args in (["check"], ["run", "--port", "0"]):
        result = subprocess.run(
            [*KEFU, *args, "--config", str(path)],
            capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert "server.secret: required" in result.stderr
        assert "KEFU_SERVER__SECRET" in result.stderr


def test_the_cluster_example_takes_the_secret_from_the_environment():
    path = ROOT / "examples" / "config" / "cluster.toml"
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    assert raw["server"]["workers"] == 2
    assert "secret" not in raw["server"]  # it comes from KEFU_SERVER__SECRET
    assert raw["sql"]["url"] == "postgresql://postgres@127.0.0.1:5432/test"
    assert raw["bus"]["backend"] == "redis"
    assert "127.0.0.1:6379" in path.read_text(encoding="utf-8")
    if "kefu.plugins.bus_redis" not in DEFAULT_PLUGINS:
        return  # until the Redis bus plugin is built in, [bus] "redis" has no provider
    with pytest.raises(ConfigError, match="server.secret: required .*KEFU_SERVER__SECRET"):
        check_scaling(load_kernel(path, environ={}).config)
    kernel = load_kernel(path, environ={"KEFU_SERVER__SECRET": SECRET})
    check_scaling(kernel.config)
    assert kernel.secret == SECRET.encode()


POSTGRES_DSN = os.environ.get("KEFU_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def _postgres(statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def test_the_cluster_example_starts_two_workers_on_postgres_and_redis(tmp_path):
    """``kefu run --config examples/config/cluster.toml`` as is, the secret from the environment
    (a fresh schema and key prefix keep it apart from other tests)."""
    if "kefu.plugins.bus_redis" not in DEFAULT_PLUGINS:
        pytest.skip("the Redis bus plugin is not built in yet")
    import redis

    try:
        asyncio.run(_postgres("SELECT 1"))
        redis.Redis.from_url("redis://127.0.0.1:6379/0").ping()
    except Exception as exc:  # the driver's, the network's, the server's
        service_unavailable(f"PostgreSQL and Redis ({exc})")
    tag = os.urandom(4).hex()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "KEFU_SERVER__SECRET": SECRET,
        "KEFU_SERVER__PORT": str(port),
        "KEFU_SERVER__DATA_DIR": str(tmp_path / "data"),
        "KEFU_SQL__PG_SCHEMA": f"kefu_cluster_{tag}",
        "KEFU_BUS_REDIS__PREFIX": f"kefu-cluster-{tag}:",
        "KEFU_AUTH__PASSWORD_COST": "10",
    }
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    proc = subprocess.Popen(
        [*KEFU, "run", "--config", str(ROOT / "examples" / "config" / "cluster.toml")],
        stdout=out.open("w"), stderr=err.open("w"), stdin=subprocess.DEVNULL, cwd=tmp_path,
        env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "serving on" not in out.read_text():
            assert proc.poll() is None, err.read_text()[-4000:]
            assert time.monotonic() < deadline, err.read_text()[-4000:]
            time.sleep(0.1)
        assert f"serving on http://127.0.0.1:{port}/ (2 workers, " in out.read_text()
        seen = set()
        for _ in range(400):
            seen.add(healthz(port)["worker"])
            if len(seen) == 2:
                break
        assert seen == {0, 1}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0, err.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        asyncio.run(_postgres(f'DROP SCHEMA IF EXISTS "kefu_cluster_{tag}" CASCADE'))
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        for key in client.scan_iter(f"kefu-cluster-{tag}:*"):
            client.delete(key)


# -- the generated secret ---------------------------------------------------------------

RACE = """
import sys, time
from kefu.core.kernel import load_kernel
kernel = load_kernel(sys.argv[1], environ={}, defaults=(), entry_points=False)
while time.time() < float(sys.argv[2]):  # every process reaches the secret at once
    pass
sys.stdout.write(kernel.secret.decode())
"""


def test_processes_generating_the_secret_at_once_all_read_the_same_whole_one(tmp_path):
    data = tmp_path / "data"
    path = tmp_path / "kefu.toml"
    path.write_text(f'[server]\ndata_dir = "{data}"\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(2):
        (data / "secret").unlink(missing_ok=True)
        at = str(time.time() + 3)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", RACE, str(path), at], stdout=subprocess.PIPE, env=env
            )
            for _ in range(8)
        ]
        outputs = {p.communicate(timeout=60)[0].decode() for p in procs}
        assert all(p.returncode == 0 for p in procs)
        assert len(outputs) == 1, outputs  # everyone read one secret
        secret = outputs.pop()
        assert len(secret) >= 32 and (data / "secret").read_text() == secret
        assert sorted(p.name for p in data.iterdir()) == ["secret"]  # no temp file left
        assert (data / "secret").stat().st_mode & 0o777 == 0o600


def test_an_empty_secret_file_is_refused(data_dir_config, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "secret").write_text("\n")
    with pytest.raises(ConfigError, match="secret file is empty"):
        load_kernel(data_dir_config, environ={}).secret  # noqa: B018


# -- the supervisor and its workers --------------------------------------------------------


def test_two_workers_serve_one_port_and_a_killed_one_is_restarted(cluster):
    c = cluster()
    banner = c.start()
    assert banner.count("serving on") == 1, banner  # the supervisor prints it, once
    assert f"serving on http://127.0.0.1:{c.port}/ (2 workers, " in banner
    assert banner.count("demo site created") == 1  # worker 0 made it before worker 1 started
    pids = c.worker_pids()
    assert sorted(pids) == [0, 1], (pids, c.logs())
    assert len(set(pids.values())) == 2
    assert all(parent_pid(pid) == c.proc.pid for pid in pids.values())

    os.kill(pids[1], signal.SIGKILL)
    # Until every thread of the killed worker is gone its listening socket is still open, and
    # connections queued on it then are reset (tcp_migrate_req, docs/scaling.md); once the
    # supervisor has reaped it, which it logs, the port is the other worker's alone.
    deadline = time.monotonic() + 10
    while f"worker 1 (pid {pids[1]}) was killed by SIGKILL" not in c.err.read_text():
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.02)
    # the port keeps serving from worker 0 while worker 1 is restarted
    answered = []
    deadline = time.monotonic() + 30
    while True:
        body = healthz(c.port)  # fails the test if a request is refused
        answered.append(body["worker"])
        if body["worker"] == 1:
            break
        assert time.monotonic() < deadline, f"worker 1 was not restarted: {c.logs()}"
        time.sleep(0.01)
    assert answered.count(0) >= 1  # requests were answered during the restart
    restarted = c.worker_pids()
    assert restarted[0] == pids[0] and restarted[1] != pids[1]
    assert parent_pid(restarted[1]) == c.proc.pid
    errors = c.err.read_text()
    assert re.search(r"worker 1 \(pid \d+\) was killed by SIGKILL .* restarting it in", errors)
    assert "worker 1 ready again" in errors
    assert c.out.read_text().count("serving on") == 1  # no second banner


async def _connect(http: aiohttp.ClientSession, base: str, token: str):
    ws = await http.ws_connect(f"{base.replace('http', 'ws')}/v1/ws?token={token}")
    hello = orjson.loads((await ws.receive(timeout=10)).data)
    assert hello["op"] == "hello"
    return ws


async def _until_closed(ws) -> tuple[list[dict], int | None]:
    """Frames read until the close, and the close code."""
    frames = []
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            frames.append(orjson.loads(msg.data))
    return frames, ws.close_code


async def test_sigterm_drains_every_worker_and_clients_are_told_shutdown(cluster):
    c = cluster(drain_timeout=15)
    banner = c.start()
    widget_key = re.search(r"widget key '([^']+)'", banner)[1]
    pids = list(c.worker_pids().values())
    async with aiohttp.ClientSession() as http:
        clients = []
        for _ in range(8):  # fresh connections: the kernel spreads them over both workers
            async with http.post(
                f"{c.base}/v1/visitors/session", json={"widget_key": widget_key}
            ) as resp:
                assert resp.status == 200, await resp.text()
                token = (await resp.json())["token"]
            clients.append(await _connect(http, c.base, token))
        readers = [asyncio.create_task(_until_closed(ws)) for ws in clients]
        started = time.monotonic()
        c.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(c.proc.wait, 20)
        elapsed = time.monotonic() - started
        results = await asyncio.wait_for(asyncio.gather(*readers), 5)
    assert code == 0, c.logs()
    assert elapsed < 15, f"drain took {elapsed:.1f} s"
    assert not any(alive(pid) for pid in pids)
    for frames, close_code in results:
        assert close_code == 1001
        assert frames[-1]["op"] == "error" and frames[-1]["code"] == "shutdown"
    errors = c.err.read_text()
    assert "SIGTERM: draining 2 workers" in errors and "all workers stopped" in errors
    assert "killing it" not in errors


def test_a_worker_that_does_not_drain_is_killed_after_drain_timeout(cluster):
    c = cluster(drain_timeout=2)
    c.start(env={"KEFU_TEST_HANG_SHUTDOWN": "1"})
    pids = list(c.worker_pids().values())
    started = time.monotonic()
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(20) == 0
    assert 2 <= time.monotonic() - started < 10
    assert not any(alive(pid) for pid in pids)
    assert c.err.read_text().count("still running after the drain; killing it") == 2


def test_workers_drain_by_themselves_when_the_supervisor_dies(cluster):
    c = cluster()
    c.start()
    pids = list(c.worker_pids().values())
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait(10)
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"orphaned workers still run: {c.logs()}"
        time.sleep(0.05)
    assert c.err.read_text().count("the supervisor is gone: draining") == 2


def test_a_worker_failing_its_first_start_fails_start_up(cluster):
    c = cluster()
    c.spawn(env={"KEFU_TEST_FAIL_WORKER": "1"})
    assert c.proc.wait(60) == 2, c.logs()
    errors = c.err.read_text()
    assert "kefu: error: plugin 'tests.plugins.supervisor_probe' failed to start" in errors
    assert "worker 1 failed to start (exited with code 2)" in errors
    assert "serving on" not in c.out.read_text()
    # worker 0 had started and was drained: nothing is left on the port
    with pytest.raises(OSError):
        healthz(c.port, timeout=1)
