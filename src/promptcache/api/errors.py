"""API errors in the shape of the API that was called, with its status codes.

OpenAI's endpoints: `{"error": {"message", "type", "param", "code"}}`. Anthropic's
(`/v1/messages`): `{"type": "error", "error": {"type", "message"}, "request_id": null}`,
its error type named by the status (400 invalid_request_error, 401 authentication_error,
403 permission_error, 404 not_found_error, 413 request_too_large, 429 rate_limit_error,
500 api_error, 503 overloaded_error, 504 timeout_error).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from promptcache.engine.errors import RequestError


class APIError(Exception):
    """An error to send to the client as OpenAI does."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )
        self.headers: dict[str, str] = {}  # extra response headers (e.g. WWW-Authenticate)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


ANTHROPIC_PATH = "/v1/messages"
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_body(err: APIError) -> dict[str, Any]:
    kind = _ANTHROPIC_TYPES.get(err.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": err.message}, "request_id": None}


def _anthropic(request: Request | None) -> bool:
    return request is not None and request.url.path.startswith(ANTHROPIC_PATH)


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def error_response(err: APIError, request: Request | None = None) -> JSONResponse:
    """The error in the shape of the API `request` called (OpenAI's by default)."""
    body = anthropic_body(err) if _anthropic(request) else err.body()
    return JSONResponse(body, status_code=err.status, headers=err.headers or None)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(exc, request)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Pydantic validation -> 400 naming the first offending parameter."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if _anthropic(request):  # Anthropic names the field, then the problem
        what = "invalid JSON body" if kind == "json_invalid" else first.get("msg", "invalid")
        err = invalid(f"{param}: {what}" if param and kind != "json_invalid" else what, param)
    elif kind == "extra_forbidden":
        err = invalid(
            f"Unrecognized request argument supplied: {param}", param, "unknown_parameter"
        )
    elif kind == "json_invalid" or not loc:
        err = invalid(
            "We could not parse the JSON body of your request. (HINT: This likely "
            "means you aren't using your HTTP library correctly.)",
            None,
            "invalid_json",
        )
    elif kind == "missing":
        err = invalid(
            f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
        )
    else:
        err = invalid(
            f"Invalid value for '{param}': {first.get('msg', 'invalid')}.", param, "invalid_value"
        )
    return error_response(err, request)


# What each endpoint calls the answer's format (the engine says "format").
FORMAT_PARAM = {"/v1/chat/completions": "response_format", "/v1/responses": "text.format"}


def refusal(exc: RequestError, param: str | None, format_param: str) -> APIError:
    """An engine refusal as a 400 naming the field: the engine's own `param` where it names
    one ("format" becomes `format_param`), else `param`."""
    if exc.param == "format":
        return invalid(str(exc).replace(" format ", f" {format_param} "), format_param, exc.code)
    return invalid(str(exc), exc.param or param, exc.code)


async def request_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """An engine refusal that surfaced after submission (a router's worker refused): 400."""
    assert isinstance(exc, RequestError)
    fmt = FORMAT_PARAM.get(request.url.path, "format")
    return error_response(refusal(exc, None, fmt), request)


async def timeout_handler(request: Request, exc: Exception) -> JSONResponse:
    """A request that ran past `request_timeout_s` (it was aborted): 504."""
    return error_response(APIError(504, str(exc), "server_error", None, "request_timeout"), request)


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error_response(APIError(exc.status_code, str(exc.detail), type_), request)


async def unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    err = APIError(500, f"internal error: {type(exc).__name__}", "server_error")
    return error_response(err, request)
