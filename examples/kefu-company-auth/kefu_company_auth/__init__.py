"""kefu-company-auth: agents authenticated by the company's user service.

A token that starts with ``[company_auth] token_prefix`` is sent to ``url`` as a bearer
token; a ``200 {"email", "active": true}`` answer makes the caller that agent of
``site_id`` (kefu's stored roles apply). Answers are cached ``cache_s`` seconds, so a
revoked company session stops working within that time; a service that is down refuses
(fail closed). Any other token is left to the other auth plugins (return None).
"""

from __future__ import annotations

import logging
import time

import aiohttp
from pydantic import BaseModel, ConfigDict

from kefu.core.types import Principal
from kefu.hooks import hookimpl

__version__ = "0.1.0"
log = logging.getLogger(__name__)


class CompanyAuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = ""
    site_id: str = ""
    token_prefix: str = "cs_"
    cache_s: float = 30.0
    timeout_s: float = 3.0


#: token -> (checked at, e-mail or None)
_cache: dict[str, tuple[float, str | None]] = {}


@hookimpl
def kefu_config_schema():
    return {"company_auth": CompanyAuthSettings}


async def _email_of(settings: CompanyAuthSettings, token: str) -> str | None:
    hit = _cache.get(token)
    if hit and time.monotonic() - hit[0] < settings.cache_s:
        return hit[1]
    email = None
    try:
        timeout = aiohttp.ClientTimeout(total=settings.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            headers = {"Authorization": f"Bearer {token}"}
            async with http.get(settings.url, headers=headers) as resp:
                if resp.status == 200:
                    user = await resp.json()
                    if user.get("active") is True and isinstance(user.get("email"), str):
                        email = user["email"]
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("user service %s unreachable: %s", settings.url, exc)
        return None  # fail closed, and do not cache the outage
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[token] = (time.monotonic(), email)
    return email


@hookimpl(tryfirst=True)
async def kefu_auth_authenticate(kernel, request, token):
    settings = kernel.config.section("company_auth")
    if not (settings.url and token and token.startswith(settings.token_prefix)):
        return None
    email = await _email_of(settings, token)
    if email is None:
        return None
    agent = await kernel.storage.get_agent_by_email(settings.site_id, email)
    if agent is None:
        return None
    return Principal("agent", agent.id, agent.site_id, frozenset(agent.roles))
