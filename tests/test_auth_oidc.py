"""Agent single sign-on (plugins/auth_oidc) against a local JWKS endpoint: each kind of
token accepted or refused as docs/security.md "Authentication providers" says."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kefu.core.web_app import create_app
from tests.chat_support import add_site, make_kernel, ws_peer

ISSUER = "https://idp.test/"
AUDIENCE = "kefu-console"


class Provider:
    """An identity provider: signing keys by ``kid`` and the JWKS document it serves."""

    def __init__(self) -> None:
        self.keys: dict[str, object] = {}
        self.published: list[str] = []
        self.fetches = 0

    def add_key(self, kid: str, kind: str = "rsa") -> None:
        if kind == "rsa":
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        self.published.append(kid)

    def jwks(self) -> dict:
        out = []
        for kid in self.published:
            key = self.keys[kid]
            algo = (
                jwt.algorithms.RSAAlgorithm
                if isinstance(key, rsa.RSAPrivateKey)
                else jwt.algorithms.ECAlgorithm
            )
            data = json.loads(algo.to_jwk(key.public_key()))
            out.append({**data, "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str, **claims) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "u-1",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        key = self.keys[kid]
        alg = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
async def idp(aiohttp_server):
    provider = Provider()
    provider.add_key("k1")

    async def jwks(request):
        provider.fetches += 1
        return web.json_response(provider.jwks())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    server = await aiohttp_server(app)
    provider.url = str(server.make_url("/jwks"))
    return provider


@pytest.fixture
async def kefu(aiohttp_client, tmp_path, idp):
    extra = (
        f'[auth_oidc]\njwks_url = "{idp.url}"\nissuer = "{ISSUER}"\naudience = "{AUDIENCE}"\n'
        "leeway_s = 30\njwks_min_refresh_s = 0\n"
    )
    return await aiohttp_client(create_app(make_kernel(tmp_path, extra)))


async def whoami(client, token: str) -> int:
    resp = await client.get("/v1/conversations", headers={"Authorization": f"Bearer {token}"})
    return resp.status


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def unsigned(claims: dict, header: dict) -> str:
    return f"{_b64(header)}.{_b64(claims)}."


async def test_each_token_accepted_or_refused_as_documented(kefu, idp):
    site = await add_site(_kernel(kefu))
    email, site_id = site.agent.email, site.site.id
    good = {"email": email, "kefu_site": site_id}
    now = int(time.time())

    assert await whoami(kefu, idp.token("k1", **good)) == 200  # valid
    assert await whoami(kefu, idp.token("k1", **{**good, "email": email.upper()})) == 200
    # clock skew: expired 10 s ago is inside the 30 s leeway, 120 s ago is not
    assert await whoami(kefu, idp.token("k1", **good, exp=now - 10)) == 200
    assert await whoami(kefu, idp.token("k1", **good, exp=now - 120)) == 401  # expired
    assert await whoami(kefu, idp.token("k1", **good, iat=now + 10, nbf=now + 10)) == 200
    assert await whoami(kefu, idp.token("k1", **good, nbf=now + 600)) == 401  # not yet valid
    assert await whoami(kefu, idp.token("k1", **good, aud="another-app")) == 401  # audience
    assert await whoami(kefu, idp.token("k1", **good, iss="https://evil.test/")) == 401  # issuer
    assert await whoami(kefu, idp.token("k1", **good, email_verified=False)) == 401
    assert await whoami(kefu, idp.token("k1", email="nobody@x.test", kefu_site=site_id)) == 401
    assert await whoami(kefu, idp.token("k1", email=email, kefu_site="other-site")) == 401

    # unknown key id: signed by a key the provider never published
    idp.add_key("rogue")
    idp.published.remove("rogue")
    assert await whoami(kefu, idp.token("rogue", **good)) == 401

    # alg none, and HS256 signed with the public key (algorithm confusion)
    header = {"alg": "none", "kid": "k1", "typ": "JWT"}
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u-1", "iat": now, "exp": now + 300, **good}
    assert await whoami(kefu, unsigned(body, header)) == 401
    public_pem = (
        idp.keys["k1"]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signed_part = unsigned(body, {"alg": "HS256", "kid": "k1", "typ": "JWT"})[:-1]
    mac = hmac.new(public_pem, signed_part.encode(), hashlib.sha256).digest()
    forged = f"{signed_part}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert await whoami(kefu, forged) == 401

    # the token carries the stored agent's roles, never claims of its own
    resp = await kefu.get(
        "/v1/agents",
        headers={"Authorization": f"Bearer {idp.token('k1', **good, roles=['admin'])}"},
    )
    assert resp.status == 403


async def test_rotated_key_is_fetched_and_a_dropped_one_refused(kefu, idp):
    site = await add_site(_kernel(kefu))
    good = {"email": site.agent.email, "kefu_site": site.site.id}
    old_token = idp.token("k1", **good)
    assert await whoami(kefu, old_token) == 200
    fetches = idp.fetches
    idp.add_key("k2", "ec")  # the provider rotates: new key published, old one retired
    idp.published.remove("k1")
    assert await whoami(kefu, idp.token("k2", **good)) == 200  # unknown kid -> one fetch
    assert idp.fetches == fetches + 1
    assert await whoami(kefu, idp.token("k2", **good)) == 200  # cached
    assert idp.fetches == fetches + 1
    # the fetch replaced the key set: a token signed by the retired key is refused now
    assert await whoami(kefu, old_token) == 401


async def test_sso_token_opens_a_websocket_and_a_disabled_agent_is_refused(kefu, idp):
    kernel = _kernel(kefu)
    site = await add_site(kernel)
    token = idp.token("k1", email=site.agent.email, kefu_site=site.site.id)
    peer = await ws_peer(kefu, token)
    await peer.close()
    admin = await kefu.post(
        "/v1/auth/login",
        json={
            "site_id": site.site.id,
            "email": site.admin.email,
            "password": "correct horse battery staple",
        },
    )
    admin_token = (await admin.json())["token"]
    resp = await kefu.post(
        f"/v1/agents/{site.agent.id}/disable", headers={"Authorization": f"Bearer {admin_token}"}
    )
    assert resp.status in (200, 204), await resp.text()
    assert await whoami(kefu, token) == 401


def _kernel(client):
    from kefu.core.web_app import KERNEL_KEY

    return client.server.app[KERNEL_KEY]
