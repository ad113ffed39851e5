"""The OpenAPI 3.1 document of ``/v1``, generated from the endpoint table and its models."""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kefu.plugins.rest_api.endpoint import Endpoint
from kefu.plugins.rest_api.models import JSON_VALUE_SCHEMA, ErrorResponse

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Invalid input (`invalid_json`, `invalid_request`, `invalid_query`, ...).",
    401: "Missing, invalid or expired token (`unauthorized`).",
    403: "The caller is not allowed to do this (`forbidden`).",
    404: "No such record in the caller's site (`not_found`).",
    409: "The request conflicts with the current state: a unique value is taken (`conflict`), "
    "or the record is not in a state that allows it (the code says which).",
    413: "The body or file is too large (`too_large`).",
    429: "Too many failed attempts; see `Retry-After` (`too_many_attempts`).",
    415: "Unsupported body or file type (`unsupported_media_type`, `unsupported_type`).",
    416: "The byte range starts past the end of the file (`range_not_satisfiable`); "
    "`Content-Range: bytes */<size>` gives the size.",
    503: "A required plugin is missing.",
}
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "An agent or visitor token."},
    "queryToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The same token as a query parameter, where no header can be set.",
    },
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent rather than null: drop the ``null`` branch."""
    branches = [s for s in schema.get("anyOf", ()) if s.get("type") != "null"]
    if len(branches) != 1:
        return schema
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    merged.update(branches[0])
    return merged


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    assert "$defs" not in schema, f"{model.__name__}: query fields must be flat"
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        prop = _non_null(prop)
        prop.pop("title", None)
        if prop.get("default") is None:
            prop.pop("default", None)
        parameter = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if "description" in prop:
            parameter["description"] = prop.pop("description")
        parameters.append(parameter)
    return parameters


def _operation(endpoint: Endpoint, refs: dict[tuple[type, str], dict]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id,
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "security": [{"bearer": []}, {"queryToken": []}] if endpoint.auth else [],
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": endpoint.pattern(name)},
        }
        for name in endpoint.path_params
    ]
    if endpoint.query is not None:
        parameters += query_parameters(endpoint.query)
    extra = copy.deepcopy(endpoint.openapi)
    parameters += extra.pop("parameters", [])  # headers (Range), after the path and query
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        schema = refs[(endpoint.body, "validation")]
        operation["requestBody"] = {"required": True, "content": _json(schema)}
    responses: dict[str, Any] = {}
    if endpoint.response is not None:
        schema = refs[(endpoint.response, "serialization")]
        responses[str(endpoint.status)] = {"description": "Success.", "content": _json(schema)}
    elif endpoint.status == 204:
        responses["204"] = {"description": "Done; no content."}
    error_schema = refs[(ErrorResponse, "serialization")]
    for status in endpoint.error_statuses():
        responses[str(status)] = {"description": ERROR_TEXT[status], "content": _json(error_schema)}
    responses.update(extra.pop("responses", {}))
    operation["responses"] = dict(sorted(responses.items()))
    operation.update(extra)
    return operation


def build_document(endpoints: tuple[Endpoint, ...], *, version: str) -> dict[str, Any]:
    """The whole document; deterministic for a given table."""
    inputs = sorted({e.body for e in endpoints if e.body}, key=lambda m: m.__name__)
    outputs = {e.response for e in endpoints if e.response} | {ErrorResponse}
    pairs = [(m, "validation") for m in inputs]
    pairs += [(m, "serialization") for m in sorted(outputs, key=lambda m: m.__name__)]
    refs, definitions = models_json_schema(pairs, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "kefu REST API",
            "version": version,
            "description": "Conversations, visitors, agents, sites and uploads of one site. "
            'Errors are `{"error": {"code", "message"}}`. The real-time protocol '
            "(WebSocket and long-polling) is described in docs/protocol.md.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": dict(
                sorted({**definitions.get("$defs", {}), "JsonValue": JSON_VALUE_SCHEMA}.items())
            ),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
