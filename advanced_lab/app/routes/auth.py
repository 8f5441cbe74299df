"""Log in with a username and password (an OAuth2 password form, so /docs can Authorize) and see who you are."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordRequestForm

from ..auth import MAX_PASSWORD_BYTES, AuthDep, CurrentUser
from ..dependencies import LoginThrottleDep
from ..exceptions import UnauthorizedError
from ..models import Token, UserInfo
from . import error_responses

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=Token, responses=error_responses(400, 401, 413, 422, 429))
async def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], auth: AuthDep, throttle: LoginThrottleDep
) -> Token:
    """Exchange a username and password for a bearer token; a wrong password and an unknown user look alike.

    After LOGIN_MAX_FAILURES failures for one username within LOGIN_FAILURE_WINDOW, that username gets 429.
    """
    if problems := _unusable(form):
        raise RequestValidationError(problems)
    await throttle.check(form.username)
    user = await auth.authenticate_user(form.username, form.password)
    if user is None:
        await throttle.failed(form.username)
        raise UnauthorizedError("Incorrect username or password")
    await throttle.succeeded(form.username)
    token, lifetime = auth.tokens.create_access_token(user.username)
    return Token(access_token=token, expires_in=lifetime)


def _unusable(form: OAuth2PasswordRequestForm) -> list[dict[str, Any]]:
    """Credentials refused up front: bcrypt reads only 72 bytes and no NUL, and the database stores no NUL."""
    problems = []
    if len(form.password.encode()) > MAX_PASSWORD_BYTES:
        problems.append((("body", "password"), f"longer than {MAX_PASSWORD_BYTES} bytes"))
    problems += [
        (("body", field), "contains a NUL character")
        for field in ("username", "password")
        if "\x00" in getattr(form, field)
    ]
    return [{"loc": loc, "msg": msg, "type": "value_error"} for loc, msg in problems]


@router.get("/me", response_model=UserInfo, responses=error_responses(401, 403, 429))
async def me(user: CurrentUser) -> UserInfo:
    """The user the token belongs to."""
    return UserInfo(username=user.username, full_name=user.full_name, disabled=user.disabled)
