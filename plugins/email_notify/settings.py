"""The ``[email]`` section of kefu.toml: the SMTP server and what is sent.

Example::

    [email]
    host = "smtp.example.com"
    port = 587
    starttls = true
    username = "kefu@example.com"
    password = { env = "KEFU_SMTP_PASSWORD" }
    sender = "Example Support <support@example.com>"

Nothing is sent while ``host`` is empty (the default).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kefu.core.config import Section


class EmailSettings(Section):
    #: The SMTP server; "" sends nothing (and the transcript endpoint is not served).
    host: str = ""
    port: int = Field(25, ge=1, le=65535)
    #: Upgrade the connection with STARTTLS (submission, port 587) ...
    starttls: bool = False
    #: ... or speak TLS from the start (port 465).
    tls: bool = False
    username: str = ""
    password: str = ""
    #: The From: of every message.
    sender: str = "kefu <kefu@localhost>"
    timeout_s: float = Field(15.0, gt=0, le=300)
    #: Attempts of one message (1, 2, 4 s apart) before it is logged as not sent.
    attempts: int = Field(3, ge=1, le=10)
    #: Language of the agents' notices when the site sets none (``settings.language``).
    language: Literal["en", "zh"] = "en"
    #: Tell the site's agents about a message left while nobody could answer.
    notify_offline: bool = True
    #: Tell them about a chat that waited this long with nobody answering (0: never).
    missed_after_s: float = Field(300.0, ge=0, le=86400)
    #: Who of the site gets the notices: every agent, or the admins only.
    recipients: Literal["agents", "admins"] = "agents"
    #: Where the links in the notices point (default: the server's own URL).
    public_url: str = ""
