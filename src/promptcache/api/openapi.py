"""The server's OpenAPI document (`GET /openapi.json`), as FastAPI derives it from the
request models, with the error responses we actually send.

FastAPI documents a 422 for every body it validates; we answer invalid bodies with a 400
in the API's own error shape (OpenAI's, or Anthropic's on `/v1/messages`), and may answer
any request with the limits' 408, 413 and 431, 401 for a bad key and 429 when full. The
request bodies (extensions included: `prompt_cache_options`, `prompt_cache_breakpoint`,
`cache_control`) are exactly the pydantic models the handlers validate against, with
unknown fields refused (`additionalProperties: false`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERRORS = {
    "400": "Invalid request: malformed JSON, a missing, invalid or unknown field",
    "401": "Missing or unknown API key",
    "404": "Unknown model or object",
    "408": "The body did not arrive within body_timeout_s",
    "413": "The body is larger than max_request_bytes",
    "429": "The server is full (max_queue requests in flight)",
    "431": "The headers are larger than max_header_bytes",
}


def _error_schema(anthropic: bool) -> dict[str, Any]:
    if anthropic:
        inner = {"type": "object", "required": ["type", "message"]}
        return {
            "type": "object",
            "required": ["type", "error"],
            "properties": {"type": {"const": "error"}, "error": inner},
        }
    inner = {"type": "object", "required": ["message", "type", "param", "code"]}
    return {"type": "object", "required": ["error"], "properties": {"error": inner}}


def install(app: FastAPI) -> None:
    """Make `app.openapi()` document our error responses instead of FastAPI's 422."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for path, operations in doc.get("paths", {}).items():
                schema = _error_schema(path.startswith("/v1/messages"))
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    responses.pop("422", None)
                    for status, text in ERRORS.items():
                        content = {"application/json": {"schema": schema}}
                        responses.setdefault(status, {"description": text, "content": content})
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
