"""A throwaway ``redis-server`` on a free loopback port, for the Redis token store's tests.

The implementation lives in contracts/support.py because the store contract needs it too and
contracts/ must not import tests/.
"""

from contracts.support import SKIP_REASON, redis_server

__all__ = ["SKIP_REASON", "redis_server"]
