"""Signed visitor identity: the company's own site tells kefu who its visitor is.

The company's backend signs its user id with the site's identity secret
(``user_hash = hex(HMAC-SHA256(secret, user_id))``, like Intercom's identity
verification); the widget passes ``user_id`` and ``user_hash`` when it opens a session
(``kefu.identify({...})``). This plugin answers :func:`kefu_auth_visitor_identity`: the
hash is compared in constant time with every accepted secret of the site (the current one
and, after a rotation, the previous ones for their grace period), and a verified user is
linked to one contact, so the same user on two devices continues one history. An unsigned
or wrongly signed claim is refused (``identity_unsigned``, ``identity_invalid``,
``identity_not_configured``) unless the site accepts unverified claims, which are kept,
shown as unverified in the console, and never linked.

When two contacts are merged (``visitor.merged``), the merged one's verified user moves
to the kept contact. Secrets and policy: ``/v1/identity`` (admins; Admin > Identity); records in
:mod:`~kefu.plugins.visitor_identity.keys`. docs/security.md, "Signed visitor identity".
"""

from __future__ import annotations

from pydantic import Field

from kefu.core.config import Section
from kefu.hooks import hookimpl, listens_to
from kefu.plugins.visitor_identity import keys
from kefu.plugins.visitor_identity.api import MAX_GRACE_S, make_endpoints


class VisitorIdentitySettings(Section):
    #: Seconds a rotated-out secret stays accepted (unless the rotation names its own).
    grace_s: float = Field(7 * 86400.0, ge=0, le=MAX_GRACE_S)


@hookimpl
def kefu_config_schema():
    return {"visitor_identity": VisitorIdentitySettings}


@hookimpl
def kefu_rest_endpoints(kernel):
    return make_endpoints()


@hookimpl
async def kefu_auth_visitor_identity(kernel, site, claim, visitor_id):
    return await keys.check(kernel.storage, site.id, claim, visitor_id)


@hookimpl
@listens_to("visitor.merged")
async def kefu_event(kernel, event):
    if event.type == "visitor.merged" and kernel.storage is not None and event.site_id:
        data = event.data
        await keys.merged(kernel.storage, event.site_id, data["visitor_id"], data["merged_id"])
