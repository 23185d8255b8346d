"""API keys and tenants: `Authorization: Bearer KEY` (or Anthropic's `x-api-key: KEY`) ->
the tenant that salts the cache. The same keys and tenants serve every API.

The keys file is JSON, `{"sk-key": "tenant-name", ...}`. With no keys file every request
is accepted as the single tenant "default". An admin key (`admin_api_key`), if set, may
read every tenant's usage; its own requests run as tenant "admin".

Keys are looked up by their SHA-256 digest and the admin key is compared with
`hmac.compare_digest`, so the time a check takes tells nothing about how much of a
guessed key was right. Keys are never logged or stored: the books name a key by a
truncated digest (`key_id`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from promptcache.api.errors import APIError

DEFAULT_TENANT = "default"
ADMIN_TENANT = "admin"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the tenant, a digest naming the key (never the key itself),
    and whether the key is the admin key."""

    tenant: str
    key_id: str | None
    admin: bool = False


def key_id(key: str) -> str:
    """A stable, non-reversible name for an API key (for the books and reports)."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    def __init__(self, keys: dict[str, str] | None, admin_key: str | None = None) -> None:
        self.keys = keys
        self.admin_key = admin_key
        self._by_digest = {_digest(k): t for k, t in keys.items()} if keys is not None else None

    @classmethod
    def from_file(cls, path: Path | None, admin_key: str | None = None) -> KeyRing:
        if path is None:
            return cls(None, admin_key)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read API keys file {path}: {exc}") from exc
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k and v for k, v in data.items()
        ):
            raise ValueError(f"{path} must be a JSON object of key -> tenant strings")
        return cls(data, admin_key)

    @property
    def open(self) -> bool:
        return self.keys is None

    def tenant(self, authorization: str | None) -> str:
        """The caller's tenant, or a 401 in OpenAI's shape."""
        return self.caller(authorization).tenant

    def caller(self, authorization: str | None, api_key: str | None = None) -> Caller:
        """The caller (tenant, key id, admin) by `api_key` (`x-api-key`) if given, else by
        the bearer token; or a 401."""
        scheme, _, key = (authorization or "").partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if api_key:
            key = api_key.strip()
        if self.admin_key and hmac.compare_digest(_digest(key), _digest(self.admin_key)):
            return Caller(ADMIN_TENANT, key_id(key), admin=True)
        if self.keys is None:
            return Caller(DEFAULT_TENANT, None)
        return Caller(self._tenant_of(key), key_id(key))

    def _tenant_of(self, key: str) -> str:
        if not key:
            raise APIError(
                401,
                "You didn't provide an API key. You need to provide your API "
                "key in an Authorization header using Bearer auth (or in x-api-key).",
                "invalid_request_error",
                None,
                "missing_api_key",
            )
        assert self._by_digest is not None
        tenant = self._by_digest.get(_digest(key))
        if tenant is None:
            raise APIError(
                401, "Incorrect API key provided.", "invalid_request_error", None, "invalid_api_key"
            )
        return tenant
