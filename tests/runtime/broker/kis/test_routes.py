"""Requests go straight to the manager's pool: same bytes on the wire, same pool life cycle.

``runtime.broker.kis.routes`` remembers how each URL splits and which key its pool is filed
under, and skips ``PoolManager.request``'s per-call URL parsing. What must not change: the
request target KIS receives (path and query, exactly as urllib3 encodes ``fields``), and that a
pool the manager has dropped (``clear()``, a forked child's fresh container) is never used again.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler

import pytest
import urllib3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.broker.kis import routes
from runtime.broker.kis.transport import _fresh_pools, exchange
from runtime.clock import SystemClock
from runtime.deadline import Deadline
from tests.support.servers import LoopbackHTTPServer, Reply

PATH = "/uapi/domestic-stock/v1/quotations/inquire-price"


class TargetServer(LoopbackHTTPServer):
    """Records each request target (path and query) exactly as it arrived."""

    def __init__(self) -> None:
        self.targets: list[str] = []
        self._lock = threading.Lock()
        super().__init__()

    def answer(self, request: BaseHTTPRequestHandler, body: bytes) -> Reply:
        with self._lock:
            self.targets.append(request.path)
        return Reply(200, b'{"rt_cd":"0"}')


@pytest.fixture(scope="module")
def server() -> Iterator[TargetServer]:
    target_server = TargetServer()
    try:
        yield target_server
    finally:
        target_server.close()


_text = st.text(st.characters(codec="utf-8"), max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(_text.filter(bool), _text, min_size=1, max_size=4))
def test_the_query_goes_out_exactly_as_urllib3_encodes_fields(
    server: TargetServer, query: Mapping[str, str]
) -> None:
    http = urllib3.PoolManager()
    deadline = Deadline.after(SystemClock(), 5.0)
    exchange(http, "GET", server.url + PATH, headers={}, deadline=deadline, query=query)
    urllib3.PoolManager().request("GET", server.url + PATH, fields=dict(query))
    ours, theirs = server.targets[-2:]
    assert ours == theirs


def test_a_pool_the_manager_dropped_is_never_used_again(server: TargetServer) -> None:
    http = urllib3.PoolManager()
    first = _pool(http, server.url + PATH)
    assert _pool(http, server.url + PATH) is first  # remembered key, same pool
    http.clear()
    second = _pool(http, server.url + PATH)
    assert second is not first
    assert http.connection_from_url(server.url) is second  # the one the manager now holds


def test_a_forked_childs_fresh_container_gets_fresh_pools(server: TargetServer) -> None:
    http = urllib3.PoolManager()
    parents = _pool(http, server.url + PATH)
    _fresh_pools(http)  # what runs in a child after fork()
    assert _pool(http, server.url + PATH) is not parents


def test_a_proxy_manager_keeps_its_own_path() -> None:
    proxy = urllib3.ProxyManager("http://127.0.0.1:9")
    assert routes.pool_and_target(proxy, "http://127.0.0.1:1" + PATH) is None


def test_the_target_keeps_the_path_and_any_query_of_the_url(server: TargetServer) -> None:
    route = routes.pool_and_target(urllib3.PoolManager(), server.url + PATH + "?a=1")
    assert route is not None
    assert route[1] == PATH + "?a=1"


def test_what_is_remembered_of_a_manager_goes_with_it(server: TargetServer) -> None:
    http = urllib3.PoolManager()
    _pool(http, server.url + PATH)
    key = id(http)
    assert key in routes._KEYS
    del http
    gc.collect()
    assert key not in routes._KEYS


def _pool(http: urllib3.PoolManager, url: str) -> object:
    route = routes.pool_and_target(http, url)
    assert route is not None
    return route[0]
