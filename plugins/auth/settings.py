"""The ``[auth]`` section of kefu.toml."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from kefu.core.config import Section


class AuthSettings(Section):
    """Token lifetimes, login throttling, password hashing cost, demo bootstrap."""

    #: Lifetime of an agent's token after login, in seconds (default 12 hours).
    agent_token_ttl: int = Field(12 * 3600, ge=60)
    #: Lifetime of a visitor's token, in seconds (default 30 days); renewed on each session.
    visitor_token_ttl: int = Field(30 * 86400, ge=60)
    #: Failed logins allowed per client address and e-mail within ``login_window`` seconds.
    login_max_failures: int = Field(5, ge=1)
    login_window: float = Field(300.0, gt=0)
    #: Failed logins of the whole install within ``login_window`` before every login
    #: attempt is delayed (``login_global_delay_s``) instead of refused: a flood costs
    #: the attackers time without locking anybody out.
    login_global_failures: int = Field(1000, ge=1)
    login_global_delay_s: float = Field(1.0, ge=0, le=30)
    #: Password checks (scrypt) run at once in one process; more wait their turn, and
    #: past ``login_queue_max`` waiting, logins answer 503 with ``Retry-After``.
    login_concurrency: int = Field(4, ge=1, le=64)
    login_queue_max: int = Field(64, ge=0)
    #: Addresses of reverse proxies whose ``X-Forwarded-For`` is believed (exact
    #: addresses or CIDR networks). Empty: the header is ignored and the peer address counts.
    trusted_proxies: list[str] = Field(default_factory=list)
    #: Earlier token secrets still accepted (tokens signed with them keep working)
    #: for ``rotation_grace_s`` seconds after a worker first started with them listed.
    previous_secrets: list[Annotated[str, StringConstraints(min_length=32)]] = Field(
        default_factory=list
    )
    rotation_grace_s: float = Field(7 * 86400.0, ge=0)
    #: scrypt cost as log2(n) for new password hashes (14 = 16 MiB, tens of ms).
    password_cost: int = Field(14, ge=10, le=20)
    #: Create a demo site and an admin agent when the storage holds no site at all.
    bootstrap_demo: bool = True
