""":class:`kefu.core.bus.SharedState` on plain Redis keys.

Every method is one command or one small Lua script, so each is atomic on its own
and touches one key (Redis Cluster: the key's hash tag decides its slot; put
``{...}`` in keys that must share one, such as a conversation's).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Take or renew a lease: KEYS[1] the lease, ARGV[1] the owner, ARGV[2] the ttl in ms.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# Give a lease back if ARGV[1] holds it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# INCRBY, and a ttl (ARGV[2] ms, '' for none) only when the key has none (a fixed window).
_INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""

# SADD members (ARGV[2..]) and, with ARGV[1] ~= '', refresh the whole set's ttl.
_SET_ADD = """
redis.call('SADD', KEYS[1], unpack(ARGV, 2))
if ARGV[1] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1
"""


def _ms(ttl: float) -> int:
    return max(1, round(ttl * 1000))


class RedisState:
    """Shared keys under ``<prefix>s:``; values are bytes, set members strings."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}s:"
        self._lease = client.register_script(_LEASE)
        self._release = client.register_script(_RELEASE)
        self._incr = client.register_script(_INCR)
        self._set_add = client.register_script(_SET_ADD)

    def key(self, key: str) -> str:
        return self._prefix + key

    async def get(self, key: str) -> bytes | None:
        return await self._client.get(self._prefix + key)

    async def set(
        self, key: str, value: bytes, *, ttl: float | None = None, only_if_absent: bool = False
    ) -> bool:
        done = await self._client.set(
            self._prefix + key,
            value,
            px=_ms(ttl) if ttl is not None else None,
            nx=only_if_absent,
        )
        return bool(done)

    async def delete(self, key: str) -> bool:
        return bool(await self._client.delete(self._prefix + key))

    async def incr(self, key: str, amount: int = 1, *, ttl: float | None = None) -> int:
        ttl_ms = _ms(ttl) if ttl is not None else ""
        return int(await self._incr(keys=[self._prefix + key], args=[amount, ttl_ms]))

    async def lease(self, key: str, owner: str, ttl: float) -> bool:
        return bool(await self._lease(keys=[self._prefix + key], args=[owner, _ms(ttl)]))

    async def release(self, key: str, owner: str) -> bool:
        return bool(await self._release(keys=[self._prefix + key], args=[owner]))

    async def set_add(self, key: str, members: Iterable[str], *, ttl: float | None = None) -> None:
        members = list(members)
        if not members:
            if ttl is not None:
                await self._client.pexpire(self._prefix + key, _ms(ttl))
            return
        ttl_ms = _ms(ttl) if ttl is not None else ""
        for start in range(0, len(members), 1000):  # Lua's unpack has a stack limit
            chunk = members[start : start + 1000]
            await self._set_add(keys=[self._prefix + key], args=[ttl_ms, *chunk])

    async def set_remove(self, key: str, members: Iterable[str]) -> None:
        members = list(members)
        if members:
            await self._client.srem(self._prefix + key, *members)

    async def set_members(self, key: str) -> set[str]:
        return {m.decode() for m in await self._client.smembers(self._prefix + key)}
