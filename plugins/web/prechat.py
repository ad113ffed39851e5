"""The widget's pre-chat form: the fields a site asks before a visitor's first message.

The form is the site's ``settings.widget.prechat`` (``{"enabled", "fields": [{"key",
"type", "label": {"en", "zh"}, "required", "options"}]}``), checked when it is saved
(``PATCH /v1/sites/{id}``, the REST API's ``widget`` models; *Admin -> Widget*). The widget
reads it from ``GET /v1/widget/config`` and posts the answers to ``POST
/v1/widget/prechat?token=``, which checks them again here, the server being the judge, and
stores them on the visitor's profile as ``kefu.identify()`` would: ``name`` and ``email``
as the visitor's own, every other key (``phone``, custom ones) as an attribute. docs/ui.md,
"The pre-chat form".
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from aiohttp import web

from kefu.core.web_app import bearer_token, error_response

log = logging.getLogger(__name__)

FIELD_TYPES = ("text", "email", "tel", "select")
#: Answers that fill the visitor's own fields; the others go to ``attributes``.
OWN_FIELDS = ("name", "email")
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
PHONE = re.compile(r"^\+?[0-9 ()./-]{5,40}$")
MAX_ANSWER = {"text": 200, "email": 254, "tel": 40, "select": 100}
MAX_BODY = 16 * 1024


def form_of(site: Any) -> dict[str, Any]:
    """The site's pre-chat form as the widget config serves it: ``{"enabled", "fields"}``
    (no fields when it is off)."""
    prechat = _stored(site)
    fields = fields_of(site) if prechat.get("enabled") is True else []
    return {"enabled": bool(fields), "fields": fields}


def _stored(site: Any) -> dict[str, Any]:
    widget = site.settings.get("widget") if isinstance(site.settings, dict) else None
    prechat = widget.get("prechat") if isinstance(widget, dict) else None
    return prechat if isinstance(prechat, dict) else {}


def fields_of(site: Any) -> list[dict[str, Any]]:
    """The form's fields, on or off; one that is not well formed is left out (the REST API
    refuses them on save)."""
    fields = [_field(f) for f in _stored(site).get("fields") or [] if isinstance(f, dict)]
    return [f for f in fields if f is not None]


def _field(raw: dict[str, Any]) -> dict[str, Any] | None:
    key, kind, label = raw.get("key"), raw.get("type", "text"), raw.get("label")
    if not isinstance(key, str) or kind not in FIELD_TYPES or not isinstance(label, dict):
        return None
    if not isinstance(label.get("en"), str):
        return None
    options = [o for o in raw.get("options") or [] if isinstance(o, dict)]
    options = [o for o in options if isinstance(o.get("value"), str)]
    if kind == "select" and not options:
        return None
    return {
        "key": key,
        "type": kind,
        "label": {k: v for k, v in label.items() if k in ("en", "zh") and isinstance(v, str)},
        "required": raw.get("required") is True,
        "options": options if kind == "select" else [],
    }


def problems(fields: list[dict[str, Any]], answers: dict[str, str]) -> dict[str, str]:
    """Field key -> what is wrong with its answer (``required``, ``invalid_email``,
    ``invalid_phone``, ``not_an_option``, ``too_long``); empty when all is well."""
    found: dict[str, str] = {}
    for field in fields:
        value = answers.get(field["key"], "").strip()
        kind = field["type"]
        if not value:
            if field["required"]:
                found[field["key"]] = "required"
        elif len(value) > MAX_ANSWER[kind]:
            found[field["key"]] = "too_long"
        elif kind == "email" and not EMAIL.match(value):
            found[field["key"]] = "invalid_email"
        elif kind == "tel" and (not PHONE.match(value) or sum(c.isdigit() for c in value) < 5):
            found[field["key"]] = "invalid_phone"
        elif kind == "select" and value not in {o["value"] for o in field["options"]}:
            found[field["key"]] = "not_an_option"
    return found


PROBLEM_TEXT = {
    "required": "required",
    "invalid_email": "not an e-mail address",
    "invalid_phone": "not a phone number",
    "not_an_option": "not one of the options",
    "too_long": "too long",
}


def _answers_of(raw: bytes) -> dict[str, str] | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    answers = body.get("answers") if isinstance(body, dict) else None
    if not isinstance(answers, dict) or not all(isinstance(v, str) for v in answers.values()):
        return None
    return answers


def make_routes(kernel: Any, pages: Any) -> list[web.RouteDef]:
    """``POST /v1/widget/prechat``: the answers of a visitor (their token in ``?token=``);
    ``/console/prechat.json``: the fields' labels, for the console's visitor panel."""

    async def fields(request: web.Request) -> web.Response:
        principal = await pages.agent(request)
        if principal is None:
            return error_response(401, "unauthorized", "sign in to the console")
        site = await kernel.storage.get_site(principal.site_id)
        response = web.json_response({"fields": fields_of(site) if site is not None else []})
        response.headers["Cache-Control"] = "no-store"
        return response

    async def answer(request: web.Request) -> web.Response:
        principal = await kernel.hooks.authenticate(request, bearer_token(request))
        if principal is None:
            return error_response(401, "unauthorized", "a valid visitor token is required")
        if principal.kind != "visitor":
            return error_response(403, "forbidden", "only a visitor answers their pre-chat form")
        if (request.content_length or 0) > MAX_BODY:
            return error_response(413, "too_large", f"the body is over {MAX_BODY} bytes")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            return error_response(413, "too_large", f"the body is over {MAX_BODY} bytes")
        answers = _answers_of(raw)
        if answers is None:
            message = 'send {"answers": {"<field key>": "<text>", ...}}'
            return error_response(400, "invalid_request", message)
        site = await kernel.storage.get_site(principal.site_id)
        form = form_of(site) if site is not None else {"enabled": False}
        if not form["enabled"]:
            return error_response(409, "prechat_off", "this site has no pre-chat form")
        wrong = problems(form["fields"], answers)
        if wrong:
            text = "; ".join(f"{key}: {PROBLEM_TEXT[p]}" for key, p in wrong.items())
            return web.json_response(
                {"error": {"code": "prechat_invalid", "message": text, "fields": wrong}},
                status=400,
            )
        visitor = await kernel.storage.get_visitor(principal.site_id, principal.id)
        if visitor is None:
            return error_response(401, "unauthorized", "this visitor no longer exists")
        saved = []
        for field in form["fields"]:
            value = answers.get(field["key"], "").strip()
            if not value:
                continue
            if field["key"] in OWN_FIELDS:
                setattr(visitor, field["key"], value)
            else:
                visitor.attributes = {**visitor.attributes, field["key"]: value}
            saved.append(field["key"])
        await kernel.storage.upsert_visitor(visitor)
        log.debug("pre-chat answers of visitor %s: %s", visitor.id, saved)
        return web.json_response({"visitor_id": visitor.id, "saved": saved})

    return [web.post("/v1/widget/prechat", answer), web.get("/console/prechat.json", fields)]
