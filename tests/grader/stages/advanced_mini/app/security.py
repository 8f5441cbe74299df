"""Demo users and HS256 tokens made with the standard library."""

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from .errors import ApiError


@dataclass(frozen=True)
class User:
    username: str
    password: str
    full_name: str
    disabled: bool = False


USERS = {
    user.username: user
    for user in (
        User("demo", "demo-password", "Demo User"),
        User("alice", "alice-password", "Alice Example"),
        User("inactive", "inactive-password", "Inactive User", disabled=True),
    )
}
UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(signing_input: str, key: str) -> bytes:
    return hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()


def authenticate(username: str, password: str) -> User:
    user = USERS.get(username)
    if user is None or not hmac.compare_digest(user.password, password):
        raise ApiError(401, "unauthorized", "Incorrect username or password", UNAUTHORIZED)
    return user


def create_token(username: str, key: str, minutes: int) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    payload = _b64(json.dumps({"sub": username, "iat": now, "exp": now + minutes * 60}).encode())
    return f"{header}.{payload}.{_b64(_signature(f'{header}.{payload}', key))}"


def token_subject(token: str, key: str) -> str:
    """The username a valid token names; ApiError 401 for anything else."""
    try:
        header, payload, signature = token.split(".")
        if json.loads(_unb64(header)).get("alg") != "HS256":
            raise ValueError("algorithm")
        if not hmac.compare_digest(_unb64(signature), _signature(f"{header}.{payload}", key)):
            raise ValueError("signature")
        claims = json.loads(_unb64(payload))
        if claims["exp"] < time.time():
            raise ValueError("expired")
        return str(claims["sub"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise ApiError(401, "unauthorized", "Could not validate credentials", UNAUTHORIZED) from exc


def user_for(token: str, key: str) -> User:
    user = USERS.get(token_subject(token, key))
    if user is None:
        raise ApiError(401, "unauthorized", "Could not validate credentials", UNAUTHORIZED)
    if user.disabled:
        raise ApiError(403, "forbidden", "Inactive user")
    return user
