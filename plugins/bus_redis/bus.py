"""The Redis Streams bus: :class:`kefu.core.bus.Bus` across processes and machines.

Keys (``P`` is the ``prefix`` setting; the ``{...}`` hash tags decide a key's slot
on Redis Cluster)::

    P t:{topic}      a broadcast topic: a stream every node reads with XREAD
    P n:{node_id}    one node's stream: payloads addressed to it, field t = topic
    P q:{queue}      a work queue: a stream read by consumer groups (XREADGROUP)
    P q:{queue:dead} its dead letters
    P s:<key>        SharedState keys (:mod:`.state`)

Publishing appends to an outbox; one task sends the outbox as one pipeline at the
end of the loop tick (and the next outbox as the next pipeline while it waits). One
reader task per slot group (one on a standalone Redis) does a blocking XREAD over
every subscribed stream and this node's stream; the last id read from each stream
is this node's position in it. A change of subscribed streams restarts that reader
(its positions stay). When Redis goes away, every task retries with exponential
back-off, logged once per outage; the outbox is kept (bounded) and sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from kefu.core.bus import Handler, OrderedDelivery, Unsubscribe, WorkHandler, WorkItem
from kefu.core.errors import StartupError
from kefu.core.pressure import BatchMeter

from .state import RedisState

log = logging.getLogger(__name__)

#: errors that mean "Redis is not reachable right now": retried with back-off
UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)

#: a node's own stream expires this long after the node stopped refreshing it
NODE_STREAM_TTL_MS = 600_000
HOUSEKEEPING_EVERY = 60.0
BACKOFF_FIRST, BACKOFF_CAP = 0.05, 2.0
CATCH_UP_CHUNK = 500


def _sid(entry_id: bytes | str) -> tuple[int, int]:
    """A stream id as a comparable pair."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _pack(args: tuple) -> bytes:
    """One command in the Redis protocol (RESP)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def _name(command: tuple | bytes) -> str:
    if isinstance(command, bytes):
        return command.split(b"\r\n", 3)[2].decode(errors="replace")
    return str(command[0])


def _backoff(attempt: int) -> float:
    return min(BACKOFF_CAP, BACKOFF_FIRST * 2**attempt) * random.uniform(0.5, 1.0)


def make_client(url: str, *, cluster: bool, socket_timeout: float) -> tuple[Any, bool]:
    """A redis-py asyncio client (hiredis parses replies when it is installed)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    if url.startswith("redis+cluster://"):
        url, cluster = "redis://" + url[len("redis+cluster://") :], True
    elif url.startswith("rediss+cluster://"):
        url, cluster = "rediss://" + url[len("rediss+cluster://") :], True
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 2.0,
        "socket_keepalive": True,
        # a dropped connection is retried once or twice here; longer outages are the
        # bus's own back-off (logged once per outage)
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
    }
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **options), True
    from redis.asyncio import Redis

    return Redis.from_url(url, **options), False


class _Subscription(OrderedDelivery):
    """One handler on one topic, with its own queue so an async handler keeps order.
    While it catches up after a position (``subscribe(after=...)``) live payloads wait
    in ``catching``."""

    __slots__ = ("catching", "floor")

    def __init__(self, bus: RedisBus, topic: str, handler: Handler) -> None:
        super().__init__(topic, handler, bus._track)
        self.catching: list[tuple[int, bytes, bytes]] | None = None
        #: after a catch-up: per stream kind, the last id it delivered (live entries up
        #: to it are duplicates; the live reader may lag behind the catch-up)
        self.floor: list[tuple[int, int] | None] | None = None

    def push(self, kind: int, entry_id: bytes, payload: bytes) -> None:
        if self.catching is not None:
            self.catching.append((kind, entry_id, payload))
            return
        floor = self.floor
        if floor is not None and floor[kind] is not None:
            if _sid(entry_id) <= floor[kind]:
                return
            floor[kind] = None
            if floor[1 - kind] is None:
                self.floor = None
        self.deliver(payload)


class _Consumer:
    __slots__ = (
        "active", "claim_idle", "group", "handler", "max_deliveries", "name", "queue", "task"
    )  # fmt: skip

    def __init__(self, queue, group, handler, claim_idle, max_deliveries, name) -> None:
        self.queue, self.group, self.handler = queue, group, handler
        self.claim_idle, self.max_deliveries, self.name = claim_idle, max_deliveries, name
        self.task: asyncio.Task | None = None
        self.active = True


class RedisBus:
    """One process's connection to the Redis bus (one node)."""

    name = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "kefu:",
        cluster: bool = False,
        maxlen: int = 10_000,
        queue_maxlen: int = 100_000,
        block_ms: int = 2000,
        count: int = 256,
        claim_idle: float = 30.0,
        max_buffer: int = 100_000,
        connect_timeout: float = 10.0,
        node_id: str | None = None,
    ) -> None:
        self.url = url
        self._socket_timeout = block_ms / 1000 + 10
        self._client, self.cluster = make_client(
            url, cluster=cluster, socket_timeout=self._socket_timeout
        )
        self.node_id = node_id or (f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}")
        self.state = RedisState(self._client, prefix)
        self._prefix = prefix
        self._maxlen, self._queue_maxlen = maxlen, queue_maxlen
        self._block_ms, self._count = block_ms, count
        self._claim_idle, self._max_buffer = claim_idle, max_buffer
        self._connect_timeout = connect_timeout
        self._node_key = self._key("n", self.node_id)
        # publishing
        self._outbox: list[tuple[tuple, asyncio.Future | None]] = []
        self._scheduled = False
        self._flusher: asyncio.Task | None = None
        #: a publish batch's round trip, for the degradation sensors (kefu.core.pressure)
        self.latency = BatchMeter("bus.redis")
        self._dropped = 0
        self._heads: dict = {}  # topic or (topic, node) -> XADD head
        self._publisher_conn: Any = None
        self._reader_conns: dict[int, Any] = {}  # standalone: a connection per reader
        # reading
        self._subs: dict[str, list[_Subscription]] = {}
        self._read_pos: dict[bytes, bytes] = {}  # stream key -> last id read
        self._key_topic: dict[bytes, str | None] = {}  # None: this node's stream
        self._topic_names: dict[bytes, str] = {}
        #: topics delivered at least once -> (broadcast id, node stream id) when the
        #: last subscription stopped (None while subscribed: the readers' positions)
        self._positions: dict[str, tuple[bytes | None, bytes | None] | None] = {}
        self._readers: dict[int, asyncio.Task] = {}
        self._restarts: set[int] = set()
        self._reading: dict[int, dict[bytes, bytes]] = {}  # group -> streams being read
        # work queues
        self._consumers: set[_Consumer] = set()
        self._consumer_ids = 0
        # bookkeeping
        self._tasks: set[asyncio.Future] = set()
        self._clock_offset = 0.0  # Redis's clock minus ours, seconds
        self._clock_error = 0.001  # how far off that may be
        self._run_id: str | None = None
        self._down_since: float | None = None
        self._opened = self._closed = self._stopping = False
        #: counters for tests, benchmarks and metrics
        self.stats = {"published": 0, "pipelines": 0, "commands": 0, "outages": 0}

    # -- keys -----------------------------------------------------------------------------
    def _key(self, kind: str, name: str) -> bytes:
        return f"{self._prefix}{kind}:{{{name}}}".encode()

    def _slot_group(self, key: bytes) -> int:
        if not self.cluster:
            return 0
        from redis.crc import key_slot

        return key_slot(key)

    # -- life cycle -------------------------------------------------------------------------
    async def open(self) -> None:
        if self._opened:
            return
        deadline = time.monotonic() + self._connect_timeout
        while True:
            try:
                await self._sync_clock()
                break
            except UNAVAILABLE as exc:
                if time.monotonic() > deadline:
                    raise StartupError(f"redis bus: cannot reach {self.url}: {exc}") from exc
                await asyncio.sleep(0.2)
        self._opened = True
        self._read_pos[self._node_key] = self._now_id()
        self._key_topic[self._node_key] = None
        for key in self._read_pos:
            self._restart(self._slot_group(key))
        self._track(asyncio.ensure_future(self._housekeeping()))

    async def close(self) -> None:
        if self._closed or self._stopping:
            return
        self._stopping = True  # readers stop after their current XREAD: wake them
        for reading in list(self._reading.values()):
            if reading:
                target = self._node_key if self._node_key in reading else next(iter(reading))
                self._send(("XADD", target, "MAXLEN", "~", self._maxlen, "*", "w", "1"), None)
        try:
            await asyncio.wait_for(self.flush(), 2.0)
        except TimeoutError:
            log.warning("redis bus: closed with %d payloads not sent", len(self._outbox))
        self._closed = True
        for consumer in self._consumers:
            self._stop_consumer(consumer)
        self._consumers.clear()
        for subs in self._subs.values():
            for sub in subs:
                sub.active = False
        self._subs.clear()
        readers = list(self._readers.values())
        if readers:
            await asyncio.wait(readers, timeout=1.0)
        with contextlib.suppress(Exception):  # nobody reads this node's stream any more
            await asyncio.wait_for(self._client.delete(self._node_key), 1.0)
        tasks = [*readers, *self._tasks]
        if self._flusher is not None:
            tasks.append(self._flusher)
        for task in tasks:
            task.cancel()
        if tasks:  # a read redis-py does not give up ends with the connections, below
            await asyncio.wait(tasks, timeout=1.0)
        self._readers.clear()
        for _, future in self._outbox:
            if future is not None and not future.done():
                future.set_exception(RedisConnectionError("the bus was closed"))
        self._outbox.clear()
        held = [self._publisher_conn, *self._reader_conns.values()]
        self._publisher_conn, self._reader_conns = None, {}
        for conn in held:
            if conn is not None:
                await self._discard(conn)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._client.aclose(), 5.0)

    def _track(self, task: asyncio.Future) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync_clock(self) -> None:
        """Learn Redis's clock (stream ids are its milliseconds) and whether it restarted."""
        best: tuple[float, float] | None = None  # (round trip, offset) of the best sample
        for _ in range(3):
            before = time.time()
            reply = await self._client.time()
            after = time.time()
            if isinstance(reply, dict):  # cluster: one answer per node
                reply = next(iter(reply.values()))
            seconds, micros = reply
            sample = (after - before, seconds + micros / 1e6 - (before + after) / 2)
            if best is None or sample[0] < best[0]:
                best = sample
        assert best is not None
        self._clock_error = best[0] / 2 + 0.001
        self._clock_offset = best[1]
        if self.cluster:
            return
        info = await self._client.info("server")
        run_id = info.get("run_id")
        if self._run_id is not None and run_id != self._run_id:
            log.warning("redis bus: Redis restarted; streams and groups are recreated as used")
            self._after_restart(float(info.get("uptime_in_seconds", 0)))
        self._run_id = run_id

    def _after_restart(self, uptime: float) -> None:
        # Stream ids are Redis's milliseconds, so reading on from our last ids gets what
        # was added since the restart; only an id ahead of the new server's clock (a
        # clock that went back) would skip entries: start those at the restart.
        now = _sid(self._now_id())
        restart = f"{max(now[0] - int(uptime * 1000) - 1000, 0)}-0".encode()
        for key, position in list(self._read_pos.items()):
            if _sid(position) > now:
                self._read_pos[key] = restart
                self._restart(self._slot_group(key))

    def _now_id(self) -> bytes:
        """A stream id just before Redis's now: reading after it gets what comes next."""
        ms = int((time.time() + self._clock_offset - self._clock_error) * 1000)
        return f"{ms}-0".encode()

    # -- outages ----------------------------------------------------------------------------
    async def _unavailable(self, exc: BaseException, attempt: int) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            self.stats["outages"] += 1
            log.warning("redis bus: %s unavailable (%s); retrying with back-off", self.url, exc)
        await asyncio.sleep(_backoff(attempt))

    def _available(self) -> None:
        if self._down_since is not None:
            log.warning(
                "redis bus: %s available again after %.1f s",
                self.url,
                time.monotonic() - self._down_since,
            )
            self._down_since = None
            self._track(asyncio.ensure_future(self._resync()))

    async def _resync(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._sync_clock()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_EVERY)
            self._send(("PEXPIRE", self._node_key, NODE_STREAM_TTL_MS), None)

    # -- publishing -------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, node: str | None = None) -> None:
        if node is None:
            head = self._heads.get(topic)
            if head is None:
                head = self._head(self._key("t", topic), None)
                self._heads[topic] = head
        else:
            head = self._heads.get((topic, node))
            if head is None:
                key = self._node_key if node == self.node_id else self._key("n", node)
                head = self._head(key, topic)
                if len(self._heads) > 10_000:
                    self._heads.clear()
                self._heads[(topic, node)] = head
        if isinstance(head, bytes):  # standalone: the command, packed once per key
            self._send(b"%s$%d\r\n%s\r\n" % (head, len(payload), payload), None)
        else:
            self._send((*head, payload), None)
        self.stats["published"] += 1

    def _head(self, key: bytes, topic: str | None) -> bytes | tuple:
        """An XADD without its payload: packed (standalone) or as arguments (cluster)."""
        args: tuple = ("XADD", key, "MAXLEN", "~", self._maxlen, "*")
        args += ("t", topic, "p") if topic is not None else ("p",)
        if self.cluster:
            return args
        packed = _pack(args)
        return b"*%d%s" % (len(args) + 1, packed[packed.index(b"\r\n") :])

    def _send(self, command: tuple | bytes, future: asyncio.Future | None) -> None:
        if self._closed:
            if future is not None:
                future.set_exception(RedisConnectionError("the bus is closed"))
            return
        self._outbox.append((command, future))
        if not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self._kick)
            except RuntimeError:
                self._scheduled = False  # no loop yet: sent by the next flush()

    def _kick(self) -> None:
        self._scheduled = False
        if self._flusher is None and self._outbox:
            self._flusher = asyncio.ensure_future(self._flush_loop())

    async def flush(self) -> None:
        while self._outbox or self._flusher is not None:
            if self._flusher is None:
                self._kick()
            flusher = self._flusher
            if flusher is not None:
                await asyncio.shield(flusher)

    async def _flush_loop(self) -> None:
        try:
            while self._outbox:
                batch, self._outbox = self._outbox, []
                attempt = 0
                while True:
                    try:
                        started = time.monotonic()
                        results = await self._execute(batch)
                        self.latency.record(time.monotonic() - started)
                        break
                    except UNAVAILABLE as exc:
                        await self._unavailable(exc, attempt)
                        attempt += 1
                        batch, self._outbox = self._bounded(batch + self._outbox), []
                if attempt:
                    self._available()
                for (command, future), result in zip(batch, results, strict=True):
                    if future is None or future.done():
                        if isinstance(result, Exception) and future is None:
                            log.warning("redis bus: %s failed: %s", _name(command), result)
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("redis bus: the publisher failed")
        finally:
            self._flusher = None
            if self._outbox and not self._closed:
                self._kick()

    def _bounded(self, batch: list) -> list:
        """During an outage keep at most ``max_buffer`` publishes: drop the oldest."""
        excess = len(batch) - self._max_buffer
        if excess <= 0:
            return batch
        kept, dropped = [], 0
        for item in batch:
            if dropped < excess and item[1] is None:
                dropped += 1
                continue
            kept.append(item)
        if not self._dropped:
            log.warning("redis bus: outage buffer full; dropping the oldest publishes")
        self._dropped += dropped
        return kept

    async def _execute(self, batch: list) -> list:
        """Send a batch in one round trip; the replies, errors as values."""
        self.stats["pipelines"] += 1
        self.stats["commands"] += len(batch)
        if self.cluster:  # redis-py's cluster pipeline splits it by node
            pipe = self._client.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)
        # Standalone: the commands packed here and written at once on a connection of
        # the publisher's own, the replies read straight from the parser (redis-py's
        # pipeline costs about 8 times the CPU per command).
        data = b"".join(c if isinstance(c, bytes) else _pack(c) for c, _ in batch)
        conn = self._publisher_conn
        if conn is None:
            conn = self._publisher_conn = await self._client.connection_pool.get_connection()
        try:
            async with asyncio.timeout(self._socket_timeout):
                await conn.send_packed_command(data, check_health=False)
                parser = conn._parser
                return [await parser.read_response() for _ in batch]
        except BaseException:
            self._publisher_conn = None
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            with contextlib.suppress(Exception):
                await self._client.connection_pool.release(conn)
            raise

    # -- subscriptions ---------------------------------------------------------------------
    def subscribe(self, topic: str, handler: Handler, *, after: str | None = None) -> Unsubscribe:
        sub = _Subscription(self, topic, handler)
        subs = self._subs.setdefault(topic, [])
        subs.append(sub)
        key = self._key("t", topic)
        if key not in self._read_pos:
            self._read_pos[key] = self._now_id()
            self._key_topic[key] = topic
            self._restart(self._slot_group(key))
        if after:
            sub.catching = []
            self._track(asyncio.ensure_future(self._catch_up(sub, after)))

        def unsubscribe() -> None:
            sub.active = False
            current = self._subs.get(topic)
            if current is not None and sub in current:
                current.remove(sub)
                if not current:
                    del self._subs[topic]
                    if topic in self._positions:  # where a resume starts from
                        node = self._read_pos.get(self._node_key)
                        self._positions[topic] = (self._read_pos.get(key), node)
                    self._read_pos.pop(key, None)
                    self._key_topic.pop(key, None)
                    self._restart(self._slot_group(key))

        return unsubscribe

    def position(self, topic: str) -> str | None:
        if topic not in self._positions:
            return None  # nothing delivered yet
        if topic in self._subs:  # live: where this node's readers are
            broadcast = self._read_pos.get(self._key("t", topic))
            node = self._read_pos.get(self._node_key)
        else:
            broadcast, node = self._positions[topic] or (None, None)
        return f"{(broadcast or b'').decode()}|{(node or b'').decode()}"

    def _restart(self, group: int) -> None:
        """The streams of a slot group changed: at the end of this tick, start its reader
        or wake it (it reads the new set on its next XREAD; its positions stay)."""
        if self._stopping or not self._opened:
            return
        if not self._restarts:
            asyncio.get_running_loop().call_soon(self._apply_restarts)
        self._restarts.add(group)

    def _apply_restarts(self) -> None:
        # A reader is never cancelled mid-command (redis-py's cluster client can lose
        # such a cancellation): it is woken by an entry without payload, which every
        # reader skips, in a stream it reads (this node's own one when it is there).
        groups, self._restarts = self._restarts, set()
        for group in groups:
            wanted = [k for k in self._read_pos if self._slot_group(k) == group]
            reader = self._readers.get(group)
            if reader is not None and not reader.done():
                reading = self._reading.get(group, ())
                if wanted and set(wanted) - set(reading) and reading:
                    target = self._node_key if self._node_key in reading else next(iter(reading))
                    self._send(("XADD", target, "MAXLEN", "~", self._maxlen, "*", "w", "1"), None)
            elif wanted:
                self._readers[group] = asyncio.ensure_future(self._read(group))

    async def _read(self, group: int) -> None:
        attempt = 0
        try:
            while not self._stopping:
                streams = {k: v for k, v in self._read_pos.items() if self._slot_group(k) == group}
                if not streams:
                    return
                self._reading[group] = streams
                try:
                    reply = await self._xread(group, streams)
                except UNAVAILABLE as exc:
                    await self._unavailable(exc, attempt)
                    attempt += 1
                    continue
                except Exception as exc:  # ResponseError, or a reply not understood
                    log.error("redis bus: XREAD failed: %r", exc)
                    await asyncio.sleep(_backoff(attempt))
                    attempt += 1
                    continue
                if attempt:
                    attempt = 0
                    self._available()
                if reply:
                    self._dispatch(reply)
        finally:
            self._reading.pop(group, None)
            if self._readers.get(group) is asyncio.current_task():
                del self._readers[group]
                if not self._stopping and any(
                    self._slot_group(k) == group for k in self._read_pos
                ):  # a stream came while it was stopping
                    self._restart(group)

    async def _xread(self, group: int, streams: dict[bytes, bytes]) -> list:
        """One blocking XREAD. Standalone: on the group's own connection, the reply
        read straight from the parser (redis-py's stream parsing is most of the cost)."""
        if self.cluster:
            return await self._client.xread(streams, count=self._count, block=self._block_ms)
        conn = self._reader_conns.get(group)
        if conn is None:
            conn = await self._client.connection_pool.get_connection()
            self._reader_conns[group] = conn
        command = ("XREAD", "COUNT", self._count, "BLOCK", self._block_ms, "STREAMS")
        try:
            async with asyncio.timeout(self._socket_timeout):
                await conn.send_packed_command(
                    _pack((*command, *streams, *streams.values())), check_health=False
                )
                reply = await conn._parser.read_response()
        except BaseException:
            self._drop_reader_conn(group)
            raise
        if isinstance(reply, Exception):
            raise reply
        if not reply:
            return []
        streams_read = reply.items() if isinstance(reply, dict) else reply  # RESP3 | RESP2
        return [
            (key, [(entry_id, dict(zip(f[::2], f[1::2], strict=True))) for entry_id, f in entries])
            for key, entries in streams_read
        ]

    def _drop_reader_conn(self, group: int) -> None:
        conn = self._reader_conns.pop(group, None)
        if conn is not None:
            self._track(asyncio.ensure_future(self._discard(conn)))

    async def _discard(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)
        with contextlib.suppress(Exception):
            await self._client.connection_pool.release(conn)

    def _dispatch(self, reply: list) -> None:
        if len(reply) > 1:  # several streams: in id order (ids are Redis's clock)
            merged = [(key, entry) for key, entries in reply for entry in entries]
            merged.sort(key=lambda item: _sid(item[1][0]))
        else:
            merged = [(reply[0][0], entry) for entry in reply[0][1]]
        read_pos, key_topic, subs_of = self._read_pos, self._key_topic, self._subs
        for key, (entry_id, fields) in merged:
            if key not in read_pos:
                continue  # unsubscribed meanwhile
            read_pos[key] = entry_id
            topic = key_topic[key]
            if topic is None:
                raw = fields.get(b"t")
                if raw is None:
                    continue
                topic = self._topic_names.get(raw)
                if topic is None:
                    topic = self._topic_names[raw] = raw.decode()
                kind = 1
            else:
                kind = 0
            subs = subs_of.get(topic)
            if not subs:
                continue
            payload = fields.get(b"p")
            if payload is None:  # a reader's wake-up
                continue
            if topic not in self._positions:
                self._positions[topic] = None
            if len(subs) == 1:
                subs[0].push(kind, entry_id, payload)
            else:
                for sub in tuple(subs):
                    sub.push(kind, entry_id, payload)

    async def _catch_up(self, sub: _Subscription, after: str) -> None:
        """Deliver what ``topic`` got after ``after``, then the live payloads held meanwhile."""
        broadcast, _, node = after.partition("|")
        starts = [broadcast.encode() or None, node.encode() or None]
        found: list[tuple[tuple[int, int], int, bytes]] = []
        attempt = 0
        while sub.active:
            try:
                found = []
                if starts[0]:
                    found += [
                        (_sid(i), 0, f[b"p"])
                        for i, f in await self._range(self._key("t", sub.topic), starts[0])
                        if b"p" in f
                    ]
                if starts[1]:
                    wanted = sub.topic.encode()
                    found += [
                        (_sid(i), 1, f[b"p"])
                        for i, f in await self._range(self._node_key, starts[1])
                        if f.get(b"t") == wanted and b"p" in f
                    ]
                break
            except UNAVAILABLE as exc:
                await self._unavailable(exc, attempt)
                attempt += 1
        found.sort(key=lambda item: item[0])
        last: list[tuple[int, int] | None] = [_sid(s) if s else None for s in starts]
        for sid, kind, _ in found:
            last[kind] = sid
        held, sub.catching = sub.catching or [], None
        later = [
            payload
            for kind, entry_id, payload in held
            if last[kind] is None or _sid(entry_id) > last[kind]
        ]
        if last[0] is not None or last[1] is not None:
            sub.floor = last
        sub.deliver_many([payload for _, _, payload in found] + later)

    async def _range(self, key: bytes, start: bytes) -> list:
        out: list = []
        while True:
            chunk = await self._client.xrange(key, min=b"(" + start, max="+", count=CATCH_UP_CHUNK)
            out += chunk
            if len(chunk) < CATCH_UP_CHUNK:
                return out
            start = chunk[-1][0]

    # -- work queues -------------------------------------------------------------------------
    def _queue_key(self, queue: str) -> bytes:
        return self._key("q", queue)

    async def enqueue(self, queue: str, payload: bytes) -> str:
        future = asyncio.get_running_loop().create_future()
        key = self._queue_key(queue)
        self._send(("XADD", key, "MAXLEN", "~", self._queue_maxlen, "*", "p", payload), future)
        entry_id = await future
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def ack(self, queue: str, group: str, ids: Sequence[str]) -> None:
        # Queued, not awaited: the XACKs of every handler in a tick go in one pipeline
        # (kept and sent again through an outage). One lost with the process only means
        # the entry is handed out again after claim_idle, as for a consumer that died.
        if ids:
            self._send(("XACK", self._queue_key(queue), group, *ids), None)

    def consume(
        self,
        queue: str,
        group: str,
        handler: WorkHandler,
        *,
        claim_idle: float | None = None,
        max_deliveries: int = 5,
    ) -> Unsubscribe:
        self._consumer_ids += 1
        consumer = _Consumer(
            queue,
            group,
            handler,
            self._claim_idle if claim_idle is None else claim_idle,
            max_deliveries,
            f"{self.node_id}-{self._consumer_ids}",
        )
        consumer.task = asyncio.ensure_future(self._consume(consumer))
        self._consumers.add(consumer)

        def unsubscribe() -> None:
            self._consumers.discard(consumer)
            self._stop_consumer(consumer)

        return unsubscribe

    def _stop_consumer(self, consumer: _Consumer) -> None:
        # What it holds stays pending, for another consumer to claim. On Redis Cluster
        # a blocked XREADGROUP is left to time out rather than cancelled (see _restart).
        consumer.active = False
        if consumer.task is not None and (not self.cluster or self._closed):
            consumer.task.cancel()

    async def _consume(self, consumer: _Consumer) -> None:
        client, key, group = self._client, self._queue_key(consumer.queue), consumer.group
        claim_every = min(max(consumer.claim_idle / 4, 0.02), 5.0)
        next_claim, cursor, created, attempt = 0.0, b"0-0", False, 0
        while consumer.active:
            try:
                if not created:
                    await self._create_group(key, group)
                    created = True
                if time.monotonic() >= next_claim:
                    items, cursor = await self._claim(key, consumer, cursor)
                    if cursor in (b"0-0", "0-0"):
                        next_claim = time.monotonic() + claim_every
                    for item in items:
                        await self._handle(consumer, item)
                    if items:
                        continue
                wait = (next_claim - time.monotonic()) * 1000
                reply = await client.xreadgroup(
                    group,
                    consumer.name,
                    {key: ">"},
                    count=self._count,
                    block=max(1, int(min(self._block_ms, wait))),
                )
                if attempt:
                    attempt = 0
                    self._available()
                for _, entries in reply or ():
                    for entry_id, fields in entries:
                        if fields is None:
                            continue
                        item = WorkItem(consumer.queue, entry_id.decode(), fields.get(b"p", b""))
                        await self._handle(consumer, item)
            except UNAVAILABLE as exc:
                await self._unavailable(exc, attempt)
                attempt += 1
            except ResponseError as exc:
                if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):  # stream gone: recreate
                    created = False
                    cursor = b"0-0"
                    continue
                log.error("redis bus: work queue %s: %s", consumer.queue, exc)
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
            except Exception:
                log.exception("redis bus: work queue %s: consumer error", consumer.queue)
                await asyncio.sleep(_backoff(attempt))
                attempt += 1

    async def _create_group(self, key: bytes, group: str) -> None:
        try:
            await self._client.xgroup_create(key, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _claim(
        self, key: bytes, consumer: _Consumer, cursor: bytes
    ) -> tuple[list[WorkItem], bytes]:
        """Take entries idle for ``claim_idle`` (their consumer died or failed on them);
        move those handed out ``max_deliveries`` times to the dead-letter queue."""
        reply = await self._client.xautoclaim(
            key,
            consumer.group,
            consumer.name,
            min_idle_time=max(1, int(consumer.claim_idle * 1000)),
            start_id=cursor,
            count=self._count,
        )
        cursor, entries = reply[0], [e for e in reply[1] if e[1] is not None]
        if not entries:
            return [], cursor
        pending = await self._client.xpending_range(
            key,
            consumer.group,
            min=entries[0][0],
            max=entries[-1][0],
            count=len(entries) + self._count,
            consumername=consumer.name,
        )
        counts = {p["message_id"]: p["times_delivered"] for p in pending}
        items, dead = [], []
        for entry_id, fields in entries:
            deliveries = counts.get(entry_id, 2)
            payload = fields.get(b"p", b"")
            if deliveries > consumer.max_deliveries:
                dead.append((entry_id, payload, deliveries))
            else:
                items.append(WorkItem(consumer.queue, entry_id.decode(), payload, deliveries))
        if dead:
            await self._dead_letter(key, consumer, dead)
        return items, cursor

    async def _dead_letter(self, key: bytes, consumer: _Consumer, dead: list) -> None:
        log.warning(
            "work queue %s: %d entries failed too often, moved to %s:dead",
            consumer.queue,
            len(dead),
            consumer.queue,
        )
        dead_key = self._queue_key(f"{consumer.queue}:dead")
        pipe = self._client.pipeline(transaction=False)
        for entry_id, payload, deliveries in dead:
            pipe.execute_command(
                "XADD", dead_key, "MAXLEN", "~", self._queue_maxlen, "*",
                "p", payload, "src", entry_id, "g", consumer.group, "n", deliveries,
            )  # fmt: skip
        pipe.execute_command("XACK", key, consumer.group, *[d[0] for d in dead])
        await pipe.execute()

    async def _handle(self, consumer: _Consumer, item: WorkItem) -> None:
        if not consumer.active:
            return  # stopped: left pending
        try:
            await consumer.handler(item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("work queue %s: consumer failed on entry %s", item.queue, item.id)
