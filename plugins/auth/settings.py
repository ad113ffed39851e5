"""The ``[auth]`` section of kefu.toml."""

from __future__ import annotations

from pydantic import Field

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
    #: scrypt cost as log2(n) for new password hashes (14 = 16 MiB, tens of ms).
    password_cost: int = Field(14, ge=10, le=20)
    #: Create a demo site and an admin agent when the storage holds no site at all.
    bootstrap_demo: bool = True
