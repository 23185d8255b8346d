"""API keys and tenants: `Authorization: Bearer KEY` -> the tenant that salts the cache.

The keys file is JSON, `{"sk-key": "tenant-name", ...}`. With no keys file every request
is accepted as the single tenant "default".
"""

from __future__ import annotations

import json
from pathlib import Path

from promptcache.api.errors import APIError

DEFAULT_TENANT = "default"


class KeyRing:
    def __init__(self, keys: dict[str, str] | None) -> None:
        self.keys = keys

    @classmethod
    def from_file(cls, path: Path | None) -> KeyRing:
        if path is None:
            return cls(None)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read API keys file {path}: {exc}") from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()
        ):
            raise ValueError(f"{path} must be a JSON object of key -> tenant strings")
        return cls(data)

    @property
    def open(self) -> bool:
        return self.keys is None

    def tenant(self, authorization: str | None) -> str:
        """The caller's tenant, or a 401 in OpenAI's shape."""
        if self.keys is None:
            return DEFAULT_TENANT
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise APIError(
                401,
                "You didn't provide an API key. You need to provide your API "
                "key in an Authorization header using Bearer auth.",
                "invalid_request_error",
                None,
                "missing_api_key",
            )
        tenant = self.keys.get(key.strip())
        if tenant is None:
            raise APIError(
                401, "Incorrect API key provided.", "invalid_request_error", None, "invalid_api_key"
            )
        return tenant
