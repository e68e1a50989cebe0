"""The per-key call budget: one module per technology behind ``CallBudgetPort``.

- :mod:`.gcra` -- the algorithm, pure (GCRA with reservations, first come first served);
- :mod:`.memory` -- one process (the memory token store);
- :mod:`.file` -- every process of the user on one host, a lock-protected state file beside
  the token files (the file token store);
- :mod:`.redis` -- every host on one Redis server, one Lua script on Redis's own clock;
- :mod:`.fallback` -- a shared budget that degrades to a conservative local share while its
  state cannot be reached.
"""
