"""Declarative endpoints: one table drives both the aiohttp routes and the OpenAPI document.

Each :class:`Endpoint` names its query, body and response models; the
wrapper built by :func:`to_route` authenticates the caller, validates the
inputs and serialises the output, so handlers only hold the business rules.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from kefu.core.errors import ApiError
from kefu.core.jsonlimits import MAX_DEPTH, too_deep
from kefu.core.kernel import Kernel
from kefu.core.types import Principal, RestEndpoint
from kefu.core.web_app import KERNEL_KEY, error_response, request_principal
from kefu.plugins.rest_api.models import ID_PATTERN

log = logging.getLogger(__name__)

MAX_JSON_BODY = 64 * 1024


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


@dataclass(slots=True)
class Call:
    """What a handler receives: the validated request."""

    request: web.Request
    kernel: Kernel
    principal: Principal | None
    params: dict[str, str]
    query: Any = None
    body: Any = None

    async def require(self, action: str, resource: Any) -> None:
        """403 unless the auth plugins permit ``action`` on ``resource``."""
        if not await self.kernel.hooks.permits(self.principal, action, resource):
            raise ApiError(403, "forbidden", f"not allowed: {action}")

    @property
    def site_id(self) -> str:
        assert self.principal is not None
        return self.principal.site_id


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """One operation. ``handler=None`` documents a route another plugin serves."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    handler: Handler | None
    response: type[BaseModel] | None = None
    status: int = 200
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    auth: bool = True
    description: str = ""
    #: Path parameter -> regular expression; a value that does not match is a 404.
    path_patterns: dict[str, str] = field(default_factory=dict)
    #: The aiohttp path when it differs from ``path`` (a regex keeping a sibling route apart).
    route_path: str = ""
    #: Extra OpenAPI fragments for operations whose body or response is not JSON.
    openapi: dict[str, Any] = field(default_factory=dict)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.path)

    def pattern(self, param: str) -> str:
        return self.path_patterns.get(param, ID_PATTERN)

    def error_statuses(self) -> list[int]:
        statuses = set(self.errors)
        if self.auth:
            statuses |= {401, 403}
        if self.query or self.body:
            statuses.add(400)
        if self.body:
            statuses |= {413, 415}
        if self.path_params:
            statuses.add(404)
        return sorted(statuses)


def contributed(endpoint: RestEndpoint) -> Endpoint:
    """An endpoint another plugin contributed (``kefu_rest_endpoints``), as this table's kind."""
    return Endpoint(
        endpoint.method.upper(),
        endpoint.path,
        endpoint.operation_id,
        endpoint.summary,
        endpoint.tag,
        endpoint.handler,
        response=endpoint.response,
        status=endpoint.status,
        query=endpoint.query,
        body=endpoint.body,
        errors=endpoint.errors,
        auth=endpoint.auth,
        description=endpoint.description,
        path_patterns=dict(endpoint.path_patterns),
        openapi=dict(endpoint.openapi),
    )


#: The bounds pydantic names in an error's ``ctx``; the first one found is the error's ``limit``.
LIMITS = ("max_length", "min_length", "le", "ge", "lt", "gt")


def validation_details(exc: ValidationError, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
    """For programs: the first error's ``field`` (dotted), ``problem`` (pydantic's error type,
    e.g. ``string_too_long``) and ``limit`` when it has one. The console words the error from
    them in the agent's language (``static/lib/errors.js``)."""
    first = exc.errors()[0]
    where = ".".join([*prefix, *(str(p) for p in first["loc"])]) or "body"
    details: dict[str, Any] = {"field": where, "problem": first["type"]}
    ctx = first.get("ctx") or {}
    limit = next((ctx[k] for k in LIMITS if k in ctx), None)
    if isinstance(limit, int | float) and not isinstance(limit, bool):
        details["limit"] = limit
    return details


def validation_message(exc: ValidationError) -> str:
    """``field: problem`` for the first few errors, short enough for a UI."""
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def read_bounded(stream: Any, limit: int) -> bytes:
    """Read a whole body (``StreamReader``) or multipart part (``BodyPartReader``);
    413 as soon as it passes ``limit`` bytes."""
    read = getattr(stream, "read_chunk", None) or stream.read
    chunks, size = [], 0
    while chunk := await read(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, model: type[BaseModel]) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    if (request.content_length or 0) > MAX_JSON_BODY:
        raise ApiError(413, "too_large", f"the body is over {MAX_JSON_BODY} bytes")
    raw = await read_bounded(request.content, MAX_JSON_BODY)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON") from None
    if too_deep(data):
        raise ApiError(400, "invalid_json", f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        # strict: JSON has types, so `false` is not a number and `"5"` is not an integer
        return model.model_validate(data, strict=True)
    except ValidationError as exc:
        raise ApiError(
            400, "invalid_request", validation_message(exc), **validation_details(exc)
        ) from None


def read_query(request: web.Request, model: type[BaseModel]) -> Any:
    values = {key: request.query.getone(key) for key in model.model_fields if key in request.query}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise ApiError(
            400, "invalid_query", validation_message(exc), **validation_details(exc)
        ) from None


def render(endpoint: Endpoint, result: Any) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if result is None:
        return web.Response(status=204)
    body = orjson.dumps(result.model_dump(mode="json"))
    return web.Response(body=body, status=endpoint.status, content_type="application/json")


async def _prepare(endpoint: Endpoint, request: web.Request) -> Call:
    kernel = request.app[KERNEL_KEY]
    principal = None
    if endpoint.auth:
        principal = await request_principal(request)
        if principal is None:
            raise ApiError(401, "unauthorized", "a valid bearer token is required")
    params = dict(request.match_info)
    for name, value in params.items():
        if not re.fullmatch(endpoint.pattern(name), value):
            raise ApiError(404, "not_found", f"no such {name}")
    call = Call(request, kernel, principal, params)
    if endpoint.query is not None:
        call.query = read_query(request, endpoint.query)
    if endpoint.body is not None:
        call.body = await read_json(request, endpoint.body)
    return call


def to_route(endpoint: Endpoint) -> web.RouteDef:
    """The aiohttp route serving ``endpoint``."""
    handler = endpoint.handler
    assert handler is not None, f"{endpoint.operation_id} is served by another plugin"

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return render(endpoint, await handler(await _prepare(endpoint, request)))
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.extra)

    handle.__name__ = endpoint.operation_id
    path = endpoint.route_path or endpoint.path
    return web.route(endpoint.method, path, handle, name=endpoint.operation_id)
