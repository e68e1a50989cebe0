"""``qts call`` (any read-only GET, JSON out, tr_cont paging) and ``qts forget`` (drop local credentials)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from runtime.cli.commands import _env_file, _runtime, _settings, announce_mode
from runtime.cli.output import Output
from runtime.errors import InvalidRequestError

if TYPE_CHECKING:
    from runtime.auth.ports import TokenStorePort
    from runtime.broker.base import BrokerScope

__all__ = ["call", "forget", "next_page_params", "parse_params"]

#: Safety stop for ``--all``: a KIS listing that never says "last page" must not loop forever.
MAX_PAGES = 100


def parse_params(items: list[str]) -> dict[str, str]:
    """``["FID_INPUT_ISCD=005930", ...]`` to a dict; a later key wins. Raises InvalidRequestError."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidRequestError(f"{item!r} is not KEY=VALUE (e.g. FID_INPUT_ISCD=005930)")
        params[key.strip()] = value
    return params


def next_page_params(params: Mapping[str, str], body: Mapping[str, Any]) -> dict[str, str]:
    """The query for the next page: KIS hands the continuation keys back in the body
    (``ctx_area_fk100``, ``ctx_area_nk100``, ...) and expects them upper-cased in the query."""
    following = dict(params)
    for name, value in body.items():
        if name.lower().startswith("ctx_area") and isinstance(value, str):
            following[name.upper()] = value
    return following


def call(args: argparse.Namespace, out: Output) -> int:
    """``qts call TR_ID PATH [KEY=VALUE ...] [--pages N | --all]``: one GET (or its pages), JSON out."""
    params = parse_params(list(args.params))
    limit = MAX_PAGES if args.all else int(args.pages)
    if not 1 <= limit <= MAX_PAGES:
        raise InvalidRequestError(f"--pages must be between 1 and {MAX_PAGES}, got {args.pages}")
    pages: list[dict[str, Any]] = []
    # stdout is JSON even without --json: the REAL marker goes to stderr so pipes stay clean.
    with _runtime(args, out, machine_stdout=True) as kis:
        tr_cont = ""
        while True:
            answer = kis.call("GET", args.path, tr_id=args.tr_id, params=params, tr_cont=tr_cont)
            pages.append(
                {"tr_cont": answer.tr_cont, "msg_cd": answer.msg_cd, "msg1": answer.msg1, "body": answer.body}
            )
            if not answer.has_next_page or len(pages) >= limit:
                break
            params, tr_cont = next_page_params(params, answer.body), "N"
    result = {
        "tr_id": answer.tr_id or args.tr_id,
        "path": args.path,
        "pages": pages,
        "has_next_page": answer.has_next_page,
    }
    # JSON in any case: `--json` makes it one line, without it is indented for reading.
    text = json.dumps(result, ensure_ascii=False, default=dict, indent=None if out.as_json else 2)
    out.raw(text)
    return 0


def forget(args: argparse.Namespace, out: Output) -> int:
    """``qts forget [--all]``: drop the cached token(s) and approval key(s) without asking KIS.

    For when KIS is unreachable (``qts revoke`` then exits 4 and keeps the token). The token
    stays valid at KIS until it expires; the issuance ledger is kept so the one-tokenP-a-minute
    rule still holds.
    """
    from runtime.bootstrap import build_store
    from runtime.config import load_store_spec

    if args.all:
        announce_mode(args, out)
        store = build_store(load_store_spec(_env_file(args)))
        dropped = store.tokens()
        scopes = sorted({token.scope for token in dropped})
    else:
        settings = _settings(args, out)
        store = build_store(settings.token_store)
        held = store.load(settings.scope)
        dropped = [held] if held is not None else []
        if held is None:
            store.delete(settings.scope)  # an unreadable entry is a miss: drop it all the same
        scopes = [settings.scope]
    for token in dropped:
        store.delete(token.scope)
        out.line(f"forgot   {token.masked} ({token.scope.mode.value}, key {token.scope.key_fingerprint})")
    keys = _forget_approval_keys(store, scopes, out)
    if not dropped and not keys:
        out.line("no cached token to forget")
    out.data({"forgotten": [t.masked for t in dropped], "approval_keys_forgotten": keys})
    return 0


def _forget_approval_keys(store: TokenStorePort, scopes: list[BrokerScope], out: Output) -> list[str]:
    """Drop the WebSocket approval key of each scope (the other cached credential); masked ones dropped."""
    forgotten: list[str] = []
    for scope in scopes:
        key = store.load_approval(scope)
        store.delete_approval(scope)
        if key is not None:
            forgotten.append(key.masked)
            out.line(f"forgot   approval key {key.masked} ({scope.mode.value}, key {scope.key_fingerprint})")
    return forgotten
