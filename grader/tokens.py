"""Making JSON Web Tokens for the auth checks: expired, forged and unsigned variants of a real one (HS256)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(value: dict[str, Any]) -> str:
    return _encode(json.dumps(value, separators=(",", ":")).encode())


def claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without checking its signature (ValueError if it is not a JWT)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("a JWT has three dot-separated parts")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    value = json.loads(base64.urlsafe_b64decode(payload))
    if not isinstance(value, dict):
        raise ValueError("the JWT's claims are not an object")
    return value


def sign(payload: dict[str, Any], key: str) -> str:
    """An HS256 JWT of `payload` signed with `key`."""
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{_segment(payload)}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_encode(signature)}"


def unsigned(payload: dict[str, Any]) -> str:
    """A JWT that claims `alg: none` and carries no signature: a server must never accept it."""
    return f"{_segment({'alg': 'none', 'typ': 'JWT'})}.{_segment(payload)}."


def with_claims_of(token: str, payload: dict[str, Any]) -> str:
    """`token`'s header and signature around other claims: a tampered token."""
    header, _, signature = token.split(".")
    return f"{header}.{_segment(payload)}.{signature}"
