"""The plain path of ``wire.structure`` answers exactly as the strict cattrs converter does.

An answer whose fields already have their declared types is built without cattrs (so a
process's first tokenP does not import it); everything else goes to cattrs. Property: for any
JSON-shaped answer, the plain path either declines or builds what cattrs builds.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from runtime.broker.kis import wire
from runtime.errors import MalformedResponseError

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**15), 10**15), st.floats(allow_nan=False),
    st.text(max_size=20), st.sampled_from(["86400", "Bearer", "", "2026-01-05 09:00:00"]),
)  # fmt: skip
_CLASSES = (wire.TokenReply, wire.ApprovalReply, wire.CallEnvelope, wire.RevokeReply)


def _answers(cls: type) -> st.SearchStrategy[dict[str, Any]]:
    names = [field.name for field in attrs.fields(cls)] + ["extra"]
    return st.dictionaries(st.sampled_from(names), _scalars, max_size=len(names))


def _by_cattrs(data: dict[str, Any], cls: type) -> object:
    try:
        return attrs.asdict(wire._converter().structure(data, cls))
    except Exception as exc:
        return type(exc)


@given(st.sampled_from(_CLASSES).flatmap(lambda cls: st.tuples(st.just(cls), _answers(cls))))
def test_the_plain_path_declines_or_agrees_with_cattrs(case: tuple[Any, dict[str, Any]]) -> None:
    cls, data = case
    plain = wire._structure_plain(data, cls)
    if plain is not None:
        assert attrs.asdict(plain) == _by_cattrs(data, cls)


@given(st.sampled_from(_CLASSES).flatmap(lambda cls: st.tuples(st.just(cls), _answers(cls))))
def test_structure_refuses_what_cattrs_refuses(case: tuple[type, dict[str, Any]]) -> None:
    cls, data = case
    expected = _by_cattrs(data, cls)
    try:
        got: object = attrs.asdict(wire.structure(data, cls, "the answer"))
    except MalformedResponseError:
        assert isinstance(expected, type)  # cattrs refused it too
    else:
        assert got == expected


def test_a_well_formed_token_answer_does_not_import_cattrs() -> None:
    code = (
        "import sys\n"
        "from runtime.broker.kis import wire\n"
        "wire.structure({'access_token': 'a' * 40, 'token_type': 'Bearer', 'expires_in': 86400,"
        " 'access_token_token_expired': '2026-01-06 09:00:00'}, wire.TokenReply, 'tokenP')\n"
        "print('cattrs' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)  # noqa: S603
    assert out.stdout.strip() == "False"
