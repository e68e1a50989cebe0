"""One HTTP exchange with KIS over an injected urllib3 PoolManager, with typed failures.

This module is where urllib3 exceptions stop: everything leaves as a QTSError. Bodies are
read with a cap so a hostile or broken gateway cannot make us buffer without limit.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import attrs
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from runtime.deadline import Deadline
from runtime.errors import BrokerUnavailableError, MalformedResponseError, TLSVerificationError

__all__ = ["MAX_BODY_BYTES", "HttpReply", "exchange"]

#: KIS answers are a few KiB; a balance page is well under 100 KiB.
MAX_BODY_BYTES = 1024 * 1024
_CHUNK = 64 * 1024
_CONNECT_TIMEOUT_S = 5.0
# One attempt, no redirects: retries are decided by the adapter, which knows the deadline
# and which calls are safe to repeat (tokenP is rate limited, POSTs may have effects).
_NO_RETRY = urllib3.Retry(total=0, connect=0, read=0, redirect=0, status=0, other=0, raise_on_redirect=True)


@attrs.frozen
class HttpReply:
    """Status, lower-cased headers and the raw body of one answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def exchange(
    http: urllib3.PoolManager,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    deadline: Deadline,
    body: bytes | None = None,
    query: Mapping[str, Any] | None = None,
) -> HttpReply:
    """Send one request and read the whole answer; connect and read are each bounded by the
    time ``deadline`` has left when the request starts.

    Raises BrokerUnavailableError (``request_sent`` False when it never left this host),
    TLSVerificationError, MalformedResponseError (body over MAX_BODY_BYTES).
    """
    timeout_s = deadline.remaining()
    timeout = urllib3.Timeout(connect=min(_CONNECT_TIMEOUT_S, timeout_s), read=timeout_s)
    try:
        response = http.request(
            method,
            url,
            headers=headers,
            body=body,
            fields=dict(query) if query else None,
            timeout=timeout,
            retries=_NO_RETRY,
            redirect=False,
            preload_content=False,
        )
    except MaxRetryError as exc:
        raise _unavailable(exc.reason or exc) from exc
    except HTTPError as exc:
        raise _unavailable(exc) from exc
    except OSError as exc:
        raise BrokerUnavailableError(f"network error talking to KIS: {type(exc).__name__}") from exc
    try:
        data = _read_capped(response)
    except HTTPError as exc:
        raise BrokerUnavailableError(
            f"the connection broke while reading KIS's answer ({type(exc).__name__})"
        ) from exc
    except OSError as exc:
        raise BrokerUnavailableError(
            f"the connection broke while reading KIS's answer: {type(exc).__name__}"
        ) from exc
    finally:
        response.release_conn()
    # urllib3's HTTPHeaderDict is already a case-insensitive mapping: no copy per call.
    return HttpReply(response.status, response.headers, data)


def _read_capped(response: urllib3.BaseHTTPResponse) -> bytes:
    length = response.length_remaining if isinstance(response, urllib3.HTTPResponse) else None
    if (
        length is not None
        and length <= MAX_BODY_BYTES
        and response.headers.get("content-encoding", "identity") == "identity"
    ):
        # The usual KIS answer: an unencoded body of known size under the cap. One read takes
        # exactly that many bytes; streaming in chunks costs a second read and a buffer per call.
        return response.read()
    chunks: list[bytes] = []
    size = 0
    for chunk in response.stream(_CHUNK, decode_content=True):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            # Do not return a half-read connection to the pool.
            response.close()
            raise MalformedResponseError(f"KIS's answer is larger than {MAX_BODY_BYTES} bytes; refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _unavailable(reason: BaseException) -> BrokerUnavailableError | TLSVerificationError:
    if isinstance(reason, SSLError | ssl.SSLError):
        return TLSVerificationError(
            "TLS verification of the KIS host failed; if a corporate proxy re-signs traffic, "
            "point KIS_CA_BUNDLE at its CA file"
        )
    if isinstance(reason, NameResolutionError):
        return BrokerUnavailableError("cannot resolve the KIS host name (DNS)", request_sent=False)
    # NewConnectionError subclasses ConnectTimeoutError in urllib3 2: test it first.
    if isinstance(reason, NewConnectionError):
        return BrokerUnavailableError(
            "could not connect to KIS (connection refused or unreachable)", request_sent=False
        )
    if isinstance(reason, ConnectTimeoutError):
        return BrokerUnavailableError("timed out connecting to KIS", request_sent=False)
    if isinstance(reason, ReadTimeoutError):
        return BrokerUnavailableError("KIS did not answer in time (read timeout)")
    if isinstance(reason, ProtocolError):
        return BrokerUnavailableError("the connection to KIS broke (reset or closed early)")
    return BrokerUnavailableError(f"network error talking to KIS: {type(reason).__name__}")
