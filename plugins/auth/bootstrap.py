"""First start: a demo site and an admin agent, so a new install can be tried at once."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from kefu.core.domain import Agent, Site, new_id
from kefu.core.storage import StorageError
from kefu.plugins.auth.passwords import hash_password

log = logging.getLogger(__name__)

DEMO_SITE_ID = "demo"
DEMO_ADMIN_EMAIL = "admin@example.com"


async def bootstrap_demo(kernel: Any) -> bool:
    """Create the demo site and admin when the storage holds no site; True when created.

    The password is announced once and stored only as a hash: it cannot be shown again.
    """
    if await kernel.storage.list_sites():
        return False
    password = secrets.token_urlsafe(12)
    cost = kernel.config.section("auth").password_cost
    password_hash = await asyncio.to_thread(hash_password, password, cost)
    site = Site(id=DEMO_SITE_ID, name="Demo site", widget_key=secrets.token_urlsafe(18))
    admin = Agent(
        id=new_id(),
        site_id=site.id,
        email=DEMO_ADMIN_EMAIL,
        name="Admin",
        password_hash=password_hash,
        roles=["owner", "admin", "agent"],  # the install's first administrator
    )
    try:
        await kernel.storage.create_site(site)
        await kernel.storage.create_agent(admin)
    except StorageError as exc:  # another worker process won the race
        log.info("demo bootstrap skipped: %s", exc)
        return False
    base = kernel.base_url.rstrip("/")
    kernel.announce(f"demo site created: site id {site.id!r}, widget key {site.widget_key!r}")
    kernel.announce(
        f"admin sign-in at {sign_in_page(kernel, base)}: site {site.id!r}, "
        f"e-mail {DEMO_ADMIN_EMAIL!r}, password {password!r} "
        "(shown once; change it after signing in)"
    )
    return True


def sign_in_page(kernel: Any, base: str) -> str:
    """The console's sign-in page when the web plugin serves it, else the login API."""
    web_on = any(r.name == "web" and r.enabled for r in kernel.plugins.records)
    return f"{base}/console/login" if web_on else f"POST {base}/v1/auth/login"
