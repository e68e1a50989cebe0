"""The admin HTTP API under ``/__emulator__/``: JSON in, JSON out, same operations as Python.

Admin requests never count as traffic and never receive faults. Errors answer
``{"error": "..."}`` with 400 (bad input), 404 (unknown admin path), 405 (wrong method)
or 409 (the clock cannot be advanced).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from datetime import timedelta
from typing import Any, Final

from .app import ADMIN_PREFIX, EmulatorApp
from .clock import ClockNotAdvanceableError
from .config import EmulatorConfig
from .wire import Reply, Request, json_reply, kis_time

# Config fields that make sense over JSON; holdings stay Python-only.
_HTTP_CONFIG_FIELDS: Final = frozenset(
    {
        "token_lifetime",
        "token_reuse_window",
        "token_request_interval",
        "token_error_status",
        "max_rps",
        "new_token_revokes_previous",
        "cash",
        "page_size",
        "ws_tick_interval",
        "ws_ping_interval",
        "ws_unanswered_pings",
        "ws_multi_record_every",
    }
)


class AdminError(Exception):
    """An admin request that cannot be served; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def config_to_json(config: EmulatorConfig) -> dict[str, Any]:
    """The config as JSON: durations in seconds, holdings as a count."""
    result: dict[str, Any] = {}
    for item in fields(config):
        value = getattr(config, item.name)
        if isinstance(value, timedelta):
            value = value.total_seconds()
        elif item.name == "holdings":
            value = len(value)
        result[item.name] = value
    return result


def _body(request: Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    try:
        payload = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise AdminError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise AdminError(400, "body must be a JSON object")
    return payload


def _now(app: EmulatorApp, request: Request) -> object:
    del request
    now = app.now()
    return {"now": now.isoformat(), "now_kst": kis_time(now)}


def _advance(app: EmulatorApp, request: Request) -> object:
    seconds = _body(request).get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise AdminError(400, "advance needs a numeric 'seconds'")
    try:
        now = app.advance(seconds)
    except ClockNotAdvanceableError as exc:
        raise AdminError(409, str(exc)) from exc
    except ValueError as exc:
        raise AdminError(400, str(exc)) from exc
    return {"now": now.isoformat(), "now_kst": kis_time(now)}


def _counters(app: EmulatorApp, request: Request) -> object:
    del request
    return app.counters()


def _orders(app: EmulatorApp, request: Request) -> object:
    del request
    return {"orders": app.orders()}


def _faults(app: EmulatorApp, request: Request) -> object:
    if request.method == "POST":
        body = _body(request)
        kind = body.pop("kind", None)
        count = body.pop("count", 1)
        path = body.pop("path", None)
        if not isinstance(kind, str):
            raise AdminError(400, "fault needs a 'kind' string")
        try:
            app.inject_fault(kind, count, path, **body)
        except ValueError as exc:
            raise AdminError(400, str(exc)) from exc
    return {"pending": app.pending_faults()}


def _void_tokens(app: EmulatorApp, request: Request) -> object:
    del request
    return {"voided": app.void_tokens()}


def _void_approval_keys(app: EmulatorApp, request: Request) -> object:
    del request
    return {"voided": app.realtime.void_approval_keys()}


def _stream_counters(app: EmulatorApp, request: Request) -> object:
    del request
    return app.stream_counters()


def _stream_drop(app: EmulatorApp, request: Request) -> object:
    del request
    return {"dropped": app.realtime.drop_all()}


def _stream_faults(app: EmulatorApp, request: Request) -> object:
    body = _body(request)
    kind, after, seconds = body.get("kind"), body.get("after_frames", 0), body.get("seconds", 0)
    if not isinstance(kind, str) or type(after) is not int or isinstance(seconds, bool):
        raise AdminError(
            400, "a stream fault needs 'kind' (drop, bad_frame, silence) and an int 'after_frames'"
        )
    if not isinstance(seconds, int | float):
        raise AdminError(400, "'seconds' must be a number")
    try:
        app.realtime.inject(kind, after_frames=after, seconds=float(seconds))
    except ValueError as exc:
        raise AdminError(400, str(exc)) from exc
    return {"queued": kind}


def _reset(app: EmulatorApp, request: Request) -> object:
    del request
    app.reset()
    return {"reset": True}


def _config(app: EmulatorApp, request: Request) -> object:
    if request.method == "POST":
        changes = _body(request)
        unknown = set(changes) - _HTTP_CONFIG_FIELDS
        if unknown:
            allowed = sorted(_HTTP_CONFIG_FIELDS)
            raise AdminError(400, f"cannot set {sorted(unknown)} over HTTP; allowed: {allowed}")
        try:
            app.set_config(**changes)
        except (TypeError, ValueError) as exc:
            raise AdminError(400, str(exc)) from exc
    return config_to_json(app.config)


_Handler = Callable[[EmulatorApp, Request], object]
_ROUTES: Final[dict[str, tuple[frozenset[str], _Handler]]] = {
    "now": (frozenset({"GET"}), _now),
    "advance": (frozenset({"POST"}), _advance),
    "counters": (frozenset({"GET"}), _counters),
    "orders": (frozenset({"GET"}), _orders),
    "faults": (frozenset({"GET", "POST"}), _faults),
    "void-tokens": (frozenset({"POST"}), _void_tokens),
    "void-approval-keys": (frozenset({"POST"}), _void_approval_keys),
    "stream": (frozenset({"GET"}), _stream_counters),
    "stream/drop": (frozenset({"POST"}), _stream_drop),
    "stream/faults": (frozenset({"POST"}), _stream_faults),
    "reset": (frozenset({"POST"}), _reset),
    "config": (frozenset({"GET", "POST"}), _config),
}


def handle_admin(app: EmulatorApp, request: Request) -> Reply:
    """Serve one ``/__emulator__/...`` request."""
    name = request.path[len(ADMIN_PREFIX) :].strip("/")
    route = _ROUTES.get(name)
    try:
        if route is None:
            raise AdminError(404, f"unknown admin path {request.path!r}; known: {sorted(_ROUTES)}")
        methods, handler = route
        if request.method not in methods:
            raise AdminError(405, f"{request.path} accepts {sorted(methods)}")
        return json_reply(200, handler(app, request))
    except AdminError as exc:
        return json_reply(exc.status, {"error": str(exc)})
