"""What only the ``mongo`` backend promises: config wiring, lazy pymongo, its indexes."""

from __future__ import annotations

import secrets
import sys

import pytest

from kefu.core.domain import Conversation, Message, Site, new_id
from kefu.core.errors import StartupError
from kefu.core.kernel import load_kernel


@pytest.fixture
def mongo_config(write_config, tmp_path, mongo_url):
    database = f"kefu_test_{secrets.token_hex(6)}"
    path = write_config(
        f'[server]\ndata_dir = "{tmp_path / "data"}"\n'
        '[storage]\nbackend = "mongo"\n'
        f'[mongo]\nurl = "{mongo_url}"\ndatabase = "{database}"\njournal = false\n'
    )
    return path, database


async def test_mongo_is_chosen_by_config_and_creates_its_indexes(mongo_config, mongo_url):
    from pymongo import AsyncMongoClient

    path, database = mongo_config
    kernel = load_kernel(path, environ={})
    storage = kernel.make_storage()
    assert storage.name == "mongo" and storage.database == database
    await storage.open()
    try:
        site = await storage.create_site(Site(new_id(), "s", new_id()))
        conv = await storage.create_conversation(Conversation(new_id(), site.id, "v"))
        stored, _ = await storage.append_message(Message(site.id, conv.id, "c", "visitor", "v"))
        assert stored.seq == 1
    finally:
        await storage.close()
    client: AsyncMongoClient = AsyncMongoClient(mongo_url)
    try:
        info = await client[database].messages.index_information()
        unique = sorted(tuple(k for k, _ in i["key"]) for i in info.values() if i.get("unique"))
        assert unique == [
            ("site_id", "conversation_id", "cid"),
            ("site_id", "conversation_id", "seq"),
        ]
    finally:
        await client.drop_database(database)
        await client.close()


def test_without_pymongo_kefu_loads_and_choosing_mongo_says_what_to_install(
    write_config, tmp_path, monkeypatch
):
    for name in [m for m in sys.modules if m == "pymongo" or m.startswith("pymongo.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delitem(sys.modules, "kefu.plugins.storage_mongo.backend", raising=False)
    monkeypatch.setitem(sys.modules, "pymongo", None)  # "import pymongo" now fails
    path = write_config(f'[server]\ndata_dir = "{tmp_path}"\n[storage]\nbackend = "mongo"\n')
    kernel = load_kernel(path, environ={})  # the plugin itself loads without pymongo
    assert kernel.plugins.record("storage_mongo").enabled
    with pytest.raises(StartupError, match=r"pip install 'kefu\[mongo\]'"):
        kernel.make_storage()
