"""The one test-support package. What lives where:

- ``kis``: KIS payload builders, test credentials, settings, and the shared call constants
  (``PRICE_PATH``, ``PRICE_TR_ID``, ``PRICE_PARAMS``, ``TOKEN_PATH``, ``REVOKE_PATH``).
- ``fakes``: ``FakeBroker`` (defined in contracts/support.py, held to the broker contract there).
- ``emulator``: ``running_emulator`` / ``Emulators``, the one way tests start a KIS emulator;
  hand-driven clocks for it and a small raw KIS client.
- ``servers``: loopback HTTP and raw-socket servers (capture, silent, reset, backlog-full).
- ``scripted_kis``: a scripted KIS on loopback and a ``qts`` runner for the hostile suite.
- ``cli``: ``qts`` child processes with a leak check on every run.
- ``processes``: child ``qts`` processes started together against one store.
- ``redis``: a throwaway ``redis-server`` (defined in contracts/support.py).
- ``secrets``: audits that no key, secret or token is reachable from an error or object.
"""
