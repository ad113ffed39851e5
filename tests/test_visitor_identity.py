"""Signed visitor identity (plugins/visitor_identity) over real sockets: the company's
backend signs its user id with the site's secret, the widget's session carries it, and the
same user on two devices is one contact. docs/security.md, "Signed visitor identity"."""

from __future__ import annotations

import pytest

from kefu.plugins.visitor_identity.keys import user_hash
from tests.chat_support import add_site, app_kernel, login, start_client, ws_peer
from tests.rest_support import bearer


@pytest.fixture
async def client(aiohttp_client, tmp_path):
    return await start_client(aiohttp_client, tmp_path)


async def site_with_secret(client, grace_s: float | None = None):
    site = await add_site(app_kernel(client.app))
    admin = bearer(await login(client, site.site.id, site.admin.email))
    secret = await rotate(client, admin, grace_s)
    return site, admin, secret


async def rotate(client, admin, grace_s: float | None = None) -> str:
    body = {} if grace_s is None else {"grace_s": grace_s}
    resp = await client.post("/v1/identity/secrets", json=body, headers=admin)
    assert resp.status == 201, await resp.text()
    settings = await resp.json()
    assert settings["secrets"][0]["current"] is True
    return settings["secrets"][0]["secret"]


async def identify(client, widget_key: str, user_id: str, hashed: str | None, **extra):
    body = {"widget_key": widget_key, "user_id": user_id, **extra}
    if hashed is not None:
        body["user_hash"] = hashed
    resp = await client.post("/v1/visitors/session", json=body)
    return resp.status, await resp.json()


def code(answer: dict) -> str:
    return answer["error"]["code"]


async def test_a_signed_user_id_is_verified_and_wrong_or_missing_hashes_are_refused(client):
    site, admin, secret = await site_with_secret(client)
    key = site.site.widget_key
    status, answer = await identify(
        client, key, "user-42", user_hash(secret, "user-42"), name="Ada Lovelace", email="a@x.test"
    )
    assert status == 200, answer
    assert answer["identity"] == {"user_id": "user-42", "verified": True}
    visitor = await app_kernel(client.app).storage.get_visitor(site.site.id, answer["visitor_id"])
    assert (visitor.name, visitor.email) == ("Ada Lovelace", "a@x.test")
    # the console's view of it
    resp = await client.get(f"/v1/visitors/{answer['visitor_id']}/identity", headers=admin)
    assert (await resp.json())["verified"] is True and (await resp.json())["user_id"] == "user-42"

    status, answer = await identify(client, key, "user-42", user_hash(secret, "user-43"))
    assert (status, code(answer)) == (401, "identity_invalid")
    status, answer = await identify(client, key, "user-42", user_hash("idsec_guess", "user-42"))
    assert (status, code(answer)) == (401, "identity_invalid")
    status, answer = await identify(client, key, "user-42", None)
    assert (status, code(answer)) == (401, "identity_unsigned")
    resp = await client.post("/v1/visitors/session", json={"widget_key": key, "user_hash": "00"})
    assert resp.status == 200 and (await resp.json())["identity"] is None  # claims nothing
    status, answer = await identify(client, key, "bad\x00id", user_hash(secret, "bad\x00id"))
    assert (status, code(answer)) == (400, "invalid_field")

    # a site without a secret cannot verify anything
    bare = await add_site(app_kernel(client.app))
    status, answer = await identify(client, bare.site.widget_key, "user-42", "00" * 32)
    assert (status, code(answer)) == (401, "identity_not_configured")
    # secrets are the site admins': an agent neither sees nor rotates them
    agent = bearer(await login(client, site.site.id, site.agent.email))
    assert (await client.get("/v1/identity", headers=agent)).status == 403
    assert (await client.post("/v1/identity/secrets", json={}, headers=agent)).status == 403


async def test_a_rotated_secret_is_accepted_within_its_grace_period_and_refused_after(client):
    site, admin, first = await site_with_secret(client)
    key = site.site.widget_key
    second = await rotate(client, admin)  # the default grace period (7 days)
    assert second != first
    for secret in (first, second):
        status, answer = await identify(client, key, "u1", user_hash(secret, "u1"))
        assert status == 200 and answer["identity"]["verified"], answer
    listing = await (await client.get("/v1/identity", headers=admin)).json()
    assert [s["secret"] for s in listing["secrets"]] == [second, first]
    assert listing["secrets"][1]["expires_at"] > listing["secrets"][0]["created_at"]

    third = await rotate(client, admin, grace_s=0)  # the older ones end now
    for secret in (first, second):
        status, answer = await identify(client, key, "u1", user_hash(secret, "u1"))
        assert (status, code(answer)) == (401, "identity_invalid")
    status, answer = await identify(client, key, "u1", user_hash(third, "u1"))
    assert status == 200 and answer["identity"]["verified"]


async def test_a_claim_signed_for_one_site_is_refused_by_another(client):
    site_a, _, secret_a = await site_with_secret(client)
    site_b, _, secret_b = await site_with_secret(client)
    status, in_a = await identify(client, site_a.site.widget_key, "u7", user_hash(secret_a, "u7"))
    assert status == 200
    status, answer = await identify(client, site_b.site.widget_key, "u7", user_hash(secret_a, "u7"))
    assert (status, code(answer)) == (401, "identity_invalid")
    # site A's token does not carry the identity into site B either
    body = {"widget_key": site_b.site.widget_key, "token": in_a["token"]}
    body |= {"user_id": "u7", "user_hash": user_hash(secret_a, "u7")}
    resp = await client.post("/v1/visitors/session", json=body)
    assert (resp.status, code(await resp.json())) == (401, "identity_invalid")
    # the same user id in site B, signed by B, is B's own contact
    status, in_b = await identify(client, site_b.site.widget_key, "u7", user_hash(secret_b, "u7"))
    assert status == 200 and in_b["site_id"] == site_b.site.id
    assert in_b["visitor_id"] != in_a["visitor_id"]


async def test_the_same_user_on_two_devices_is_one_contact_with_one_history(client):
    site, _, secret = await site_with_secret(client)
    key, signed = site.site.widget_key, user_hash(secret, "user-9")
    # device 1 chatted anonymously first, then the user signed in on the company's site
    anonymous = await client.post("/v1/visitors/session", json={"widget_key": key})
    first = await anonymous.json()
    status, phone = await identify(client, key, "user-9", signed, token=first["token"])
    assert status == 200 and phone["visitor_id"] == first["visitor_id"]  # the lead becomes the user
    device1 = await ws_peer(client, phone["token"])
    await device1.send(op="start", ref="s")
    conversation_id = (await device1.expect("started"))["conversation"]["id"]
    await device1.send(op="send", conversation_id=conversation_id, cid="p1", text="from my phone")
    assert (await device1.expect("ack", cid="p1"))["seq"] >= 1

    status, laptop = await identify(client, key, "user-9", signed)  # a new browser, no token
    assert status == 200 and laptop["visitor_id"] == phone["visitor_id"]
    device2 = await ws_peer(client, laptop["token"])
    await device2.send(op="start", ref="s")
    started = await device2.expect("started")
    assert started["conversation"]["id"] == conversation_id and not started["created"]
    await device2.send(op="resume", conversation_id=conversation_id, after_seq=0)
    shown = await device2.expect("message", cid="p1")
    assert shown["text"] == "from my phone"
    await device2.send(op="send", conversation_id=conversation_id, cid="l1", text="and my laptop")
    await device2.expect("ack", cid="l1")
    await device1.send(op="watch", conversation_id=conversation_id)
    await device1.expect("message", cid="l1", within=5)
    await device1.close()
    await device2.close()

    # another user signing in on the laptop does not inherit user-9's contact
    status, other = await identify(
        client, key, "user-10", user_hash(secret, "user-10"), token=laptop["token"]
    )
    assert status == 200 and other["visitor_id"] != phone["visitor_id"]


async def test_unverified_claims_are_kept_as_claims_when_the_site_accepts_them(client):
    site, admin, secret = await site_with_secret(client)
    key = site.site.widget_key
    resp = await client.patch("/v1/identity", json={"unverified": "accept"}, headers=admin)
    assert resp.status == 200 and (await resp.json())["unverified"] == "accept"
    status, verified = await identify(client, key, "user-5", user_hash(secret, "user-5"))
    assert status == 200
    status, claimed = await identify(client, key, "user-5", "f" * 64)  # a forged hash
    assert status == 200 and claimed["identity"] == {"user_id": "user-5", "verified": False}
    assert claimed["visitor_id"] != verified["visitor_id"]  # never the real user's contact
    resp = await client.get(f"/v1/visitors/{claimed['visitor_id']}/identity", headers=admin)
    assert (await resp.json())["verified"] is False
    status, unsigned = await identify(client, key, "user-5", None, token=verified["token"])
    assert status == 200 and unsigned["visitor_id"] == verified["visitor_id"]  # its own token
    resp = await client.get(f"/v1/visitors/{verified['visitor_id']}/identity", headers=admin)
    assert (await resp.json())["verified"] is True  # an unverified claim does not downgrade
