"""Why the engine refuses or stops serving a request (mapped to HTTP statuses by the API)."""

from __future__ import annotations


class RequestError(ValueError):
    """A request the engine cannot take; `code` names why (OpenAI's error codes) and
    `param`, where set, the request field at fault (else the API adapter names one)."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code = code
        self.param = param


class EngineOverloaded(RuntimeError):
    """The request queue is full (HTTP 429)."""


class EngineDead(RuntimeError):
    """The engine hit an internal error or was shut down (HTTP 500)."""


class RequestTimedOut(TimeoutError):
    """The request ran longer than the server's `request_timeout_s` and was aborted (HTTP
    504)."""
