"""The ``/oauth2/*`` endpoints: tokenP, revokeP and Approval.

These speak the token-endpoint error shape (``error_code``/``error_description``, HTTP 403),
except that a key of the other mode gets the gateway's rt_cd-shaped EGW02004 with HTTP 500,
as on every endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .codes import REVOKE_OK_MESSAGE, TOKEN_ERROR_TEXT
from .config import EmulatorConfig
from .tokens import TokenBook, TokenRateLimitedError
from .wire import Reply, Request, json_reply, kis_time, rt_error, token_error

TOKEN_ERROR_STATUS = 403  # observed for EGW00103/00105/00133 (KIS_API.md §4)


class KeyProblem(Exception):
    """An app key/secret check failed. ``code`` is the EGW code, ``text`` the rt_cd msg1 if any."""

    def __init__(self, code: str, text: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.text = text


KeyChecker = Callable[[object, object], str]
"""``check(app_key, app_secret)``: returns the accepted app key, raises ``KeyProblem`` otherwise."""


def token_endpoint_error(code: str) -> Reply:
    """403 with the token-endpoint error shape and the standard text for ``code``."""
    return token_error(TOKEN_ERROR_STATUS, code, TOKEN_ERROR_TEXT[code])


def key_problem_reply(problem: KeyProblem) -> Reply:
    """Token-endpoint reply for a failed key check (EGW02004 keeps the gateway shape)."""
    if problem.text is not None:
        return rt_error(500, problem.code, problem.text)
    return token_endpoint_error(problem.code)


def parse_json_object(request: Request) -> dict[str, Any] | Reply:
    """The request body as a JSON object, or the token-endpoint error for a bad request."""
    content_type = (request.header("content-type") or "").lower()
    if "json" not in content_type:
        return token_endpoint_error("EGW00132")
    try:
        payload = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return token_endpoint_error("EGW00101")
    if not isinstance(payload, dict):
        return token_endpoint_error("EGW00101")
    return payload


def _grant_problem(body: dict[str, Any]) -> Reply | None:
    grant_type = body.get("grant_type")
    if grant_type is None or grant_type == "":
        return token_endpoint_error("EGW00115")
    if grant_type != "client_credentials":
        return token_endpoint_error("EGW00112")
    return None


@dataclass
class OAuthEndpoints:
    """Handlers for the three OAuth endpoints of one host; the caller holds the state lock."""

    tokens: TokenBook
    check_key: KeyChecker
    config: Callable[[], EmulatorConfig]
    issue_approval: Callable[[str], str]

    def token(self, request: Request, now: datetime) -> Reply:
        """``POST /oauth2/tokenP``: issue (or re-serve within 6 h) an access token."""
        app_key = self._granted_key(request, "appsecret")
        if isinstance(app_key, Reply):
            return app_key
        config = self.config()
        try:
            issued = self.tokens.issue(app_key, now, config)
        except TokenRateLimitedError:
            return token_endpoint_error("EGW00133")
        record = issued.record
        return json_reply(
            200,
            {
                "access_token": record.token,
                "access_token_token_expired": kis_time(record.expires_at),
                "token_type": "Bearer",
                "expires_in": max(0, int((record.expires_at - now).total_seconds())),
            },
        )

    def revoke(self, request: Request, now: datetime) -> Reply:
        """``POST /oauth2/revokeP``: revoke one token of the calling app key."""
        del now  # revocation does not depend on time; the signature matches the other handlers
        body = parse_json_object(request)
        if isinstance(body, Reply):
            return body
        try:
            app_key = self.check_key(body.get("appkey"), body.get("appsecret"))
        except KeyProblem as failed:
            return key_problem_reply(failed)
        token = body.get("token")
        if not isinstance(token, str) or not self.tokens.revoke(app_key, token):
            return token_endpoint_error("EGW00121")
        return json_reply(200, {"code": 200, "message": REVOKE_OK_MESSAGE})

    def approval(self, request: Request, now: datetime) -> Reply:
        """``POST /oauth2/Approval``: a WebSocket approval key (note the ``secretkey`` field)."""
        del now
        app_key = self._granted_key(request, "secretkey")
        if isinstance(app_key, Reply):
            return app_key
        return json_reply(200, {"approval_key": self.issue_approval(app_key)})

    def _granted_key(self, request: Request, secret_field: str) -> str | Reply:
        """The checks tokenP and Approval share: JSON body, grant_type, then the key pair
        (the secret is ``appsecret`` for tokenP, ``secretkey`` for Approval)."""
        body = parse_json_object(request)
        if isinstance(body, Reply):
            return body
        problem = _grant_problem(body)
        if problem is not None:
            return problem
        try:
            return self.check_key(body.get("appkey"), body.get(secret_field))
        except KeyProblem as failed:
            return key_problem_reply(failed)
