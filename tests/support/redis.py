"""A throwaway ``redis-server`` on a free loopback port, for the Redis tests.

The implementation lives in contracts/support.py because the store contract needs it too and
contracts/ must not import tests/. ``start_redis`` also hands over the process, for tests that
pause (SIGSTOP) or kill the server.
"""

from contracts.support import SKIP_REASON, RedisProcess, redis_server, start_redis

__all__ = ["SKIP_REASON", "RedisProcess", "redis_server", "start_redis"]
