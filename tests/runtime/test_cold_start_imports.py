"""What reading the settings costs a fresh process: marshmallow's e-mail regexes compile on first use.

``runtime.config`` imports environs, which imports marshmallow; ``marshmallow.validate`` compiles
two class-level e-mail patterns at import, one of them spanning U+00A1-U+FFFF case-insensitively
(~27 ms). They are deferred to their first use, and behave exactly as before once used.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from runtime.config import _PatternOnFirstUse

EMAIL_PATTERNS = "(validate.Email.USER_REGEX, validate.Email.DOMAIN_REGEX)"


def _fresh(snippet: str) -> dict[str, object]:
    """Run ``snippet`` (which sets ``out``) in a fresh interpreter; return ``out``."""
    code = f"import json\n{snippet}\nprint(json.dumps(out))"
    done = subprocess.run(  # noqa: S603 - our interpreter, our snippet
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_reading_settings_does_not_compile_marshmallows_email_patterns() -> None:
    out = _fresh(
        "import re\n"
        "original = re.compile\n"
        "import runtime.config\n"
        "from marshmallow import validate\n"
        f"out = {{'deferred': [type(p).__name__ for p in {EMAIL_PATTERNS}],\n"
        f"       'compiled': [p._pattern is not None for p in {EMAIL_PATTERNS}],\n"
        "       're_compile_restored': re.compile is original}\n"
    )
    assert out == {
        "deferred": ["_PatternOnFirstUse", "_PatternOnFirstUse"],
        "compiled": [False, False],
        "re_compile_restored": True,
    }


def test_marshmallows_email_validation_is_unchanged_after_deferral() -> None:
    out = _fresh(
        "import runtime.config\n"
        "from marshmallow import ValidationError, fields, validate\n"
        "def ok(v, x):\n"
        "    try:\n"
        "        v(x)\n"
        "        return True\n"
        "    except ValidationError:\n"
        "        return False\n"
        "email = validate.Email()\n"
        "cases = ['user@example.com', 'kim@한국.kr', 'a.b+c@sub.example.co.kr', 'no-at-sign', 'x@@y',\n"
        "         'user@localhost', 'user@[127.0.0.1]', '\"quoted\"@example.com', 'bad@-example.com']\n"
        "out = {'email': [ok(email, c) for c in cases],\n"
        "       'field': fields.Email().deserialize('kim@example.com'),\n"
        "       'url': ok(validate.URL(), 'https://openapivts.koreainvestment.com:29443'),\n"
        "       'compiled': validate.Email.DOMAIN_REGEX._pattern is not None}\n"
    )
    # The same verdicts marshmallow gives with eagerly compiled patterns.
    assert out == {
        "email": [True, True, True, False, False, True, True, True, False],
        "field": "kim@example.com",
        "url": True,
        "compiled": True,
    }


def test_marshmallow_imported_first_is_left_alone() -> None:
    out = _fresh(
        "import marshmallow, re\n"
        "import runtime.config\n"
        "from marshmallow import validate\n"
        f"out = {{'types': [isinstance(p, re.Pattern) for p in {EMAIL_PATTERNS}]}}\n"
    )
    assert out == {"types": [True, True]}


def test_a_deferred_pattern_compiles_once_on_first_use_and_then_acts_as_the_pattern() -> None:
    lazy = _PatternOnFirstUse(r"[a-z]+\Z", re.IGNORECASE)
    assert _compiled(lazy) is None
    assert lazy.match("ABC") is not None
    compiled = _compiled(lazy)
    assert compiled is re.compile(r"[a-z]+\Z", re.IGNORECASE)
    assert lazy.match("ab1") is None
    assert lazy.pattern == r"[a-z]+\Z"
    assert _compiled(lazy) is compiled


def test_dunder_probes_do_not_compile_a_deferred_pattern() -> None:
    # ABCMeta asks every class attribute for __isabstractmethod__ while building the class.
    lazy = _PatternOnFirstUse("x", 0)
    assert getattr(lazy, "__isabstractmethod__", False) is False
    with pytest.raises(AttributeError):
        _ = lazy.__wrapped__
    assert _compiled(lazy) is None


def _compiled(lazy: _PatternOnFirstUse) -> re.Pattern[str] | None:
    return lazy._pattern
