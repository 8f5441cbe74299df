"""Log in with a username and password (an OAuth2 password form, so /docs can Authorize) and see who you are."""

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.exceptions import RequestValidationError
from fastapi.security import OAuth2PasswordRequestForm

from ..auth import MAX_PASSWORD_BYTES, AuthDep, CurrentUser
from ..exceptions import UnauthorizedError
from ..models import Token, UserInfo
from . import error_responses

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login", response_model=Token, responses=error_responses(400, 401, 413, 422, 429))
async def login(form: Annotated[OAuth2PasswordRequestForm, Depends()], auth: AuthDep) -> Token:
    """Exchange a username and password for a bearer token; a wrong password and an unknown user look alike."""
    if len(form.password.encode()) > MAX_PASSWORD_BYTES:
        error = {"loc": ("body", "password"), "msg": f"longer than {MAX_PASSWORD_BYTES} bytes", "type": "value_error"}
        raise RequestValidationError([error])
    user = await auth.authenticate_user(form.username, form.password)
    if user is None:
        raise UnauthorizedError("Incorrect username or password")
    token, lifetime = auth.tokens.create_access_token(user.username)
    return Token(access_token=token, expires_in=lifetime)


@router.get("/me", response_model=UserInfo, responses=error_responses(401, 403, 429))
async def me(user: CurrentUser) -> UserInfo:
    """The user the token belongs to."""
    return UserInfo(username=user.username, full_name=user.full_name, disabled=user.disabled)
