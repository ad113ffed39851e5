"""The ``[web]`` section of kefu.toml: widget origins, demo page, cookies."""

from __future__ import annotations

from pydantic import Field, field_validator

from kefu.core.config import Section


class WebSettings(Section):
    """Settings of the visitor widget, the agent console and the admin pages."""

    #: Origins (``https://shop.example``) whose pages may embed the widget and read the
    #: visitor endpoints cross-origin. ``"*"`` allows any page. A site's own
    #: ``settings.allowed_origins`` (admin page "Sites") replaces this list for that site.
    allowed_origins: list[str] = ["*"]
    #: Serve the sample shop page with the widget at ``/``.
    demo_page: bool = True
    #: The site whose widget the demo page shows.
    demo_site: str = "demo"
    #: Mark the session cookies ``Secure``; unset: when the request came over HTTPS.
    secure_cookies: bool | None = None
    #: Seconds over which the admin status page averages messages per second.
    rate_window_s: int = Field(10, ge=1, le=300)
    #: With a bus shared by several processes: seconds between two publications of this
    #: worker's figures (connections, messages) that every worker's status page adds up.
    cluster_interval_s: float = Field(5.0, ge=0.1, le=300)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"{origin!r}: an origin is '*' or starts with http(s)://")
        return [o.rstrip("/") for o in value]
