"""Test doubles: a fake broker that behaves like KIS at the port, without HTTP.

FakeBroker lives in contracts/support.py: the broker contract holds it to BrokerAuthPort, and
contracts/ must not import tests/. Tests import it from here.
"""

from contracts.support import FakeBroker

__all__ = ["FakeBroker"]
