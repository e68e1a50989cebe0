"""Token stores: one module per technology behind one port (:class:`runtime.auth.ports.TokenStorePort`).

- :mod:`.memory` -- ``InMemoryTokenStore``, one process;
- :mod:`.file` -- ``FileTokenStore``, every process of the user on one host (``flock``);
- :mod:`.redis` -- ``RedisTokenStore``, every host (needs the ``redis`` extra);
- :mod:`.document` -- the stored document the file and Redis stores share.

Nothing is imported here, so choosing the memory store never loads the file store or redis-py.
"""
