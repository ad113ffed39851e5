"""``[bus] backend = "redis"`` and the ``[bus_redis]`` settings reach the bus."""

from __future__ import annotations

import pytest

from kefu.core.errors import ConfigError
from kefu.core.kernel import load_kernel
from kefu.plugins.bus_redis.bus import RedisBus


def _kernel(tmp_path, text: str):
    path = tmp_path / "kefu.toml"
    path.write_text(text, encoding="utf-8")
    return load_kernel(path, environ={}, entry_points=False)


def test_the_redis_backend_is_built_in_and_configured(tmp_path):
    kernel = _kernel(
        tmp_path,
        '[bus]\nbackend = "redis"\n'
        '[bus_redis]\nurl = "redis://127.0.0.1:6399/2"\nprefix = "site-a:"\nmaxlen = 500\n',
    )
    bus = kernel.make_bus()
    assert isinstance(bus, RedisBus) and bus.url == "redis://127.0.0.1:6399/2"
    assert bus._prefix == "site-a:" and bus._maxlen == 500 and not bus.cluster
    assert bus._key("t", "x") == b"site-a:t:{x}"


def test_defaults_and_the_memory_bus_stays_the_default(tmp_path):
    kernel = _kernel(tmp_path, "")
    assert kernel.config.bus.backend == "memory"
    settings = kernel.config.section("bus_redis")
    assert settings.url == "redis://127.0.0.1:6379/0" and settings.prefix == "kefu:"


def test_a_cluster_url_chooses_the_cluster_client(tmp_path):
    kernel = _kernel(
        tmp_path, '[bus]\nbackend = "redis"\n[bus_redis]\nurl = "redis+cluster://127.0.0.1:7000"\n'
    )
    assert kernel.make_bus().cluster


def test_a_prefix_with_a_hash_tag_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="bus_redis.prefix"):
        _kernel(tmp_path, '[bus_redis]\nprefix = "{kefu}:"\n')
