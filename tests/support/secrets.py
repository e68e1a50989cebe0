"""Secret audits: no key, secret or token in an error's text, or anywhere reachable from an object."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from types import MappingProxyType

from tests.support.kis import REAL_KEY, REAL_SECRET, VTS_KEY, VTS_SECRET

#: Every secret the tests hand to an adapter; no error text may ever carry one of them.
KNOWN_SECRETS = (VTS_KEY, VTS_SECRET, REAL_KEY, REAL_SECRET)


def assert_no_secrets(exc: BaseException, *extra: str) -> None:
    """Neither str nor repr of ``exc`` (nor of what it was raised from) shows a key, secret or token."""
    texts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    for secret in (*KNOWN_SECRETS, *extra):
        for text in texts:
            assert secret not in text, f"a secret ({len(secret)} chars) leaked into {type(exc).__name__}"


def reachable_text(root: object, *, limit: int = 20000) -> Iterator[str]:
    """Every str/bytes reachable from ``root`` through containers, attributes and slots."""
    seen: set[int] = set()
    todo: deque[object] = deque([root])
    while todo and len(seen) < limit:
        item = todo.popleft()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, str):
            yield item
        elif isinstance(item, bytes | bytearray | memoryview):
            yield bytes(item).decode("latin-1")
        elif isinstance(item, dict | MappingProxyType):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset | deque):
            todo.extend(item)
        elif not isinstance(item, int | float | type(None) | type):
            attributes = getattr(item, "__dict__", None)
            if isinstance(attributes, dict):
                todo.extend(attributes.values())
            for cls in type(item).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if isinstance(slot, str) and hasattr(item, slot):
                        todo.append(getattr(item, slot))
