"""A message's attachment must be an upload of its own site.

The gateway accepts any object with a ``url`` or an ``id`` as an attachment;
this pipeline processor (run before the message is stored) makes sure it
names a file that ``POST /v1/uploads`` stored for the same site, and replaces
what the client claimed (name, size, type) with what is stored. So a file
outside the allow-list, another site's upload or an outside URL never
travels as an attachment.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

from kefu.core.domain import Message
from kefu.core.types import PipelineReject, Processor
from kefu.plugins.rest_api.upload_store import open_store
from kefu.plugins.rest_api.uploads import (
    STORED_NAME_PATTERN,
    display_name,
    stored_mime,
    upload_url,
)

log = logging.getLogger(__name__)

PRIORITY = 20
_URL_PATH = re.compile(r"^/v1/uploads/([^/]+)/([^/]+)$")
_STORED = re.compile(STORED_NAME_PATTERN)


def _stored_name(attachment: dict[str, Any], site_id: str) -> str | None:
    """The stored file name the attachment points to in ``site_id``, or None."""
    reference = attachment.get("id")
    if not isinstance(reference, str):
        url = attachment.get("url")
        match = _URL_PATH.match(urlsplit(url).path) if isinstance(url, str) else None
        if match is None or match.group(1) != site_id:
            return None
        reference = match.group(2)
    return reference if _STORED.match(reference) else None


async def check_attachment(message: Message, context: dict[str, Any]) -> Message | None:
    """Refuse an attachment that is not an upload of the message's site; normalise it."""
    attachment = message.attachment
    if attachment is None:
        return None
    stored = _stored_name(attachment, message.site_id)
    size = None
    if stored is not None:
        size = await open_store(context["kernel"]).size(message.site_id, stored)
    mime = stored_mime(stored) if stored else None
    if stored is None or size is None or mime is None:
        raise PipelineReject(
            "invalid_attachment",
            "attachments must be files uploaded to this site (POST /v1/uploads)",
        )
    if message.type == "image" and not mime.startswith("image/"):
        raise PipelineReject("invalid_attachment", f"an image message cannot carry {mime}")
    message.attachment = {
        "id": stored,
        "url": upload_url(message.site_id, stored),
        "name": display_name(stored),
        "size": size,
        "mime": mime,
    }
    return message


PROCESSOR = Processor(
    "rest_api.attachments",
    PRIORITY,
    check_attachment,
    wants=lambda message: message.attachment is not None,
)
