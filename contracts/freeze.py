"""Freeze Phase 2's public interface and assets (Gate C items 4 and 5).

Usage (from the repository root)::

    python contracts/freeze.py                     # (re)generate both files from the code
    python contracts/freeze.py --accept-additions  # record additions only; refuse any change
    python contracts/freeze.py --check             # report, write nothing (exit 1 on a break)

The interface snapshot is derived from the code by introspection, never written by hand: every
name in ``runtime.__all__`` (the curated public API) and every public name of the modules that
hold the ports, values and errors. For each class it records its kind (port, value, enum, error,
class), its constructor and its public methods and properties with their signatures; for value
objects their fields, types and defaults; for errors their bases, ``exit_code`` and
``retryable``. Annotations are kept as the strings the code wrote (the package uses
``from __future__ import annotations``), with whitespace normalised.

:func:`compare` splits the difference between a recorded snapshot and the code into additions
(a new class, member, enum member, error, optional parameter or defaulted trailing field: these
are allowed) and breaks (anything changed or removed: these need a new phase's decision).

A port (a Protocol) is held to more: it is implemented, not only called, so ANY change to one of
its methods' signatures (an added optional parameter included) and any method, property or
attribute added to it is a break. The fake brokers and every Phase 3 adapter stop conforming
otherwise. Such a change is recorded deliberately with ``python contracts/freeze.py`` and listed
in the change's note.

``contracts/frozen_assets.json`` holds SHA-256 digests of the files later phases must not
change: ``.env.example``, every recorded KIS payload (with its source in KIS_API.md, taken from
``tests/fixtures/kis/SOURCES.md``) and the interface snapshot itself.
"""

from __future__ import annotations

import argparse
import enum
import hashlib
import importlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_PATH = ROOT / "contracts" / "interface_snapshot.json"
ASSETS_PATH = ROOT / "contracts" / "frozen_assets.json"
FIXTURES_DIR = ROOT / "tests" / "fixtures" / "kis"
SOURCES_PATH = FIXTURES_DIR / "SOURCES.md"
ENV_EXAMPLE = ".env.example"

PHASE = "2"

#: The modules that hold ports, values and errors: all their public names are frozen.
INTERFACE_MODULES = (
    "runtime.broker.base",
    "runtime.broker.realtime",
    "runtime.auth.ports",
    "runtime.clock",
    "runtime.settings",
    "runtime.errors",
)
#: The curated public API: every name in its ``__all__`` is frozen too.
PUBLIC_PACKAGE = "runtime"

ACCEPT_HINT = (
    "If this change is deliberate and only ADDS, run `python contracts/freeze.py --accept-additions`; "
    "changing or removing a frozen item, or changing a port at all, needs a new phase's decision "
    "(see docs/gate-c.md): record it deliberately with `python contracts/freeze.py` and list it."
)
#: Why an addition to a port is a break.
PORT_RULE = "a port is implemented, not only called: every implementation (fakes, adapters) must change"

Json = dict[str, Any]


# --------------------------------------------------------------------------- snapshot


def _text(annotation: Any) -> str:
    """An annotation as one normalised line of text ('' when there is none)."""
    if annotation is inspect.Parameter.empty or annotation is inspect.Signature.empty:
        return ""
    if isinstance(annotation, str):
        text = annotation
    elif isinstance(annotation, type):
        text = annotation.__qualname__
    else:
        text = repr(annotation).replace("typing.", "")
    return " ".join(text.split())


def _default_text(default: Any) -> str | None:
    if default is inspect.Parameter.empty or default is attrs.NOTHING:
        return None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory = default.factory
        return f"factory {getattr(factory, '__qualname__', repr(factory))}"
    return " ".join(repr(default).split())


_KIND_NAMES = {
    inspect.Parameter.POSITIONAL_ONLY: "positional-only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
    inspect.Parameter.VAR_POSITIONAL: "*args",
    inspect.Parameter.KEYWORD_ONLY: "keyword",
    inspect.Parameter.VAR_KEYWORD: "**kwargs",
}


def describe_callable(func: Callable[..., Any], *, kind: str = "function", bound: bool = False) -> Json:
    """Parameters (name, kind, annotation, default) and return annotation of ``func``.

    ``bound`` drops the first parameter (``self``/``cls``) of a method taken from a class.
    """
    try:
        signature = inspect.signature(func)
    except ValueError:  # a class that inherits a C-level __init__ (an exception without its own)
        signature = inspect.signature(lambda *args: None).replace(return_annotation=inspect.Signature.empty)
    parameters = list(signature.parameters.values())
    if bound and parameters and parameters[0].kind is not inspect.Parameter.VAR_POSITIONAL:
        parameters = parameters[1:]
    params = []
    for parameter in parameters:
        entry: Json = {"name": parameter.name, "kind": _KIND_NAMES[parameter.kind]}
        entry["annotation"] = _text(parameter.annotation)
        default = _default_text(parameter.default)
        if default is not None:
            entry["default"] = default
        params.append(entry)
    shown = signature.replace(parameters=parameters)
    return {
        "kind": kind,
        "signature": _signature_text(shown),
        "params": params,
        "returns": _text(signature.return_annotation),
    }


def _signature_text(signature: inspect.Signature) -> str:
    """One readable line, like ``str(signature)`` but with the annotations unquoted."""
    parts: list[str] = []
    parameters = list(signature.parameters.values())
    keyword_marker_needed = True
    for index, parameter in enumerate(parameters):
        if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            keyword_marker_needed = False
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and keyword_marker_needed:
            parts.append("*")
            keyword_marker_needed = False
        prefix: dict[inspect._ParameterKind, str] = {
            inspect.Parameter.VAR_POSITIONAL: "*",
            inspect.Parameter.VAR_KEYWORD: "**",
        }
        text = prefix.get(parameter.kind, "") + parameter.name
        annotation = _text(parameter.annotation)
        if annotation:
            text += f": {annotation}"
        default = _default_text(parameter.default)
        if default is not None:
            text += f" = {default}" if annotation else f"={default}"
        parts.append(text)
        is_last_positional_only = parameter.kind is inspect.Parameter.POSITIONAL_ONLY and (
            index + 1 == len(parameters)
            or parameters[index + 1].kind is not inspect.Parameter.POSITIONAL_ONLY
        )
        if is_last_positional_only:
            parts.append("/")
    returns = _text(signature.return_annotation)
    return f"({', '.join(parts)})" + (f" -> {returns}" if returns else "")


def _is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False))


_FOUNDATION_MODULES = frozenset({"builtins", "typing", "typing_extensions", "enum", "abc"})


def _own_members(cls: type) -> Json:
    """Public methods and properties a caller can use, including inherited ones (a member
    moving to a base class is not a change)."""
    members: Json = {}
    for klass in cls.__mro__:
        if klass.__module__ in _FOUNDATION_MODULES:
            continue  # object, Protocol, Exception, Enum: not part of our interface
        for name, raw in vars(klass).items():
            if name.startswith("_") or name in members:
                continue
            if isinstance(cls, enum.EnumMeta) and name in cls.__members__:
                continue
            if isinstance(raw, property):
                getter = raw.fget
                returns = _text(inspect.signature(getter).return_annotation) if getter else ""
                members[name] = {"kind": "property", "returns": returns}
            elif isinstance(raw, classmethod):
                members[name] = describe_callable(raw.__func__, kind="classmethod", bound=True)
            elif isinstance(raw, staticmethod):
                members[name] = describe_callable(raw.__func__, kind="staticmethod")
            elif inspect.isfunction(raw):
                members[name] = describe_callable(raw, kind="method", bound=True)
    return dict(sorted(members.items()))


def describe_class(cls: type) -> Json:
    """What a caller can rely on in ``cls``, by kind."""
    entry: Json
    if _is_protocol(cls):
        entry = {
            "kind": "port",
            "runtime_checkable": bool(getattr(cls, "_is_runtime_protocol", False)),
            "attributes": {
                name: _text(annotation)
                for name, annotation in sorted(vars(cls).get("__annotations__", {}).items())
                if not name.startswith("_")
            },
        }
    elif issubclass(cls, enum.Enum):
        members: dict[str, enum.Enum] = dict(cls.__members__)
        entry = {"kind": "enum", "members": {name: repr(member.value) for name, member in members.items()}}
    elif isinstance(cls, type) and issubclass(cls, BaseException):
        entry = {
            "kind": "error",
            "bases": [base.__qualname__ for base in cls.__bases__],
            "exit_code": getattr(cls, "exit_code", None),
            "retryable": getattr(cls, "retryable", None),
            "constructor": describe_callable(cls, kind="constructor"),
        }
    elif attrs.has(cls):
        entry = {
            "kind": "value",
            "frozen": _is_frozen(cls),
            "fields": [
                {"name": field.name, "type": _text(field.type), "default": _default_text(field.default)}
                for field in attrs.fields(cls)
            ],
        }
    else:
        entry = {"kind": "class", "constructor": describe_callable(cls, kind="constructor")}
    entry["methods"] = _own_members(cls)
    return entry


def _is_frozen(cls: type) -> bool:
    # attrs gives frozen classes a __setattr__ that always raises FrozenInstanceError.
    return getattr(getattr(cls, "__setattr__", None), "__name__", "") == "_frozen_setattrs"


def _public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        raise SystemExit(f"{module_name} has no __all__: its public interface cannot be derived")
    return sorted(names)


def build_snapshot() -> Json:
    """The public interface as the code defines it now."""
    classes: Json = {}
    functions: Json = {}

    def record(module_name: str, name: str) -> None:
        obj = getattr(importlib.import_module(module_name), name)
        if inspect.ismodule(obj):
            return
        home = getattr(obj, "__module__", module_name)
        key = f"{home}:{getattr(obj, '__qualname__', name)}"
        if isinstance(obj, type):
            if key not in classes:
                classes[key] = describe_class(obj)
        elif callable(obj):
            functions.setdefault(key, describe_callable(obj))

    for module_name in INTERFACE_MODULES:
        for name in _public_names(module_name):
            record(module_name, name)
    public = _public_names(PUBLIC_PACKAGE)
    for name in public:
        record(PUBLIC_PACKAGE, name)

    return {
        "about": (
            "Phase 2's frozen public interface, derived from the code by contracts/freeze.py. "
            "Do not edit by hand. " + ACCEPT_HINT
        ),
        "phase": PHASE,
        "exports": {PUBLIC_PACKAGE: public},
        "classes": dict(sorted(classes.items())),
        "functions": dict(sorted(functions.items())),
    }


# --------------------------------------------------------------------------- comparison


@attrs.frozen
class Difference:
    """Additions are allowed; breaks (changed or removed items) are not."""

    additions: list[str] = attrs.field(factory=list)
    breaks: list[str] = attrs.field(factory=list)


def _param_text(param: Json) -> str:
    text = param["name"]
    if param.get("annotation"):
        text += f": {param['annotation']}"
    if "default" in param:
        text += f" = {param['default']}"
    return f"{text} ({param['kind']})"


def _parameter_breaks(where: str, old: list[Json], new: list[Json]) -> tuple[list[str], list[str]]:
    """New parameters may only be optional and must not shift an existing positional one."""
    additions: list[str] = []
    breaks: list[str] = []
    new_by_name = {p["name"]: p for p in new}
    for param in old:
        now = new_by_name.get(param["name"])
        if now is None:
            breaks.append(f"{where}: parameter {param['name']!r} was removed")
        elif now != param:
            breaks.append(f"{where}: parameter changed from `{_param_text(param)}` to `{_param_text(now)}`")
    positional = ("positional-only", "positional")
    old_positional = [p["name"] for p in old if p["kind"] in positional]
    new_positional = [p["name"] for p in new if p["kind"] in positional]
    if new_positional[: len(old_positional)] != old_positional and not breaks:
        breaks.append(f"{where}: positional parameters were reordered or one was inserted before them")
    old_names = {p["name"] for p in old}
    for param in new:
        if param["name"] in old_names:
            continue
        if "default" in param or param["kind"] in ("*args", "**kwargs"):
            additions.append(f"{where}: new optional parameter {param['name']!r}")
        else:
            breaks.append(f"{where}: new required parameter {param['name']!r} breaks existing callers")
    return additions, breaks


def _compare_callable(where: str, old: Json, new: Json, diff: Difference, *, port: bool = False) -> None:
    """``port``: the callable is a port's method, where even an optional parameter is a break."""
    if old.get("kind") != new.get("kind"):
        diff.breaks.append(f"{where}: was a {old.get('kind')}, is now a {new.get('kind')}")
        return
    if old.get("returns") != new.get("returns"):
        diff.breaks.append(
            f"{where}: return type changed from {old.get('returns')!r} to {new.get('returns')!r}"
        )
    if "params" in old:
        additions, breaks = _parameter_breaks(where, old["params"], new.get("params", []))
        diff.breaks.extend(breaks)
        if port:
            diff.breaks.extend(f"{item} on a port ({PORT_RULE})" for item in additions)
        else:
            diff.additions.extend(additions)


def _compare_mapping(
    where: str,
    old: Json,
    new: Json,
    diff: Difference,
    same: Callable[[str, Any, Any], None],
    *,
    port: bool = False,
) -> None:
    """``port``: ``old`` and ``new`` are a port's members, where anything added is a break."""
    for name in old:
        if name not in new:
            diff.breaks.append(f"{where}{name}: removed")
        else:
            same(f"{where}{name}", old[name], new[name])
    added = [name for name in new if name not in old]
    if port:
        diff.breaks.extend(f"{where}{name}: added to a port ({PORT_RULE})" for name in added)
    else:
        diff.additions.extend(f"{where}{name}: added" for name in added)


def _compare_class(where: str, old: Json, new: Json, diff: Difference) -> None:
    if old["kind"] != new["kind"]:
        diff.breaks.append(f"{where}: was a {old['kind']}, is now a {new['kind']}")
        return
    for key in ("bases", "exit_code", "retryable", "frozen"):
        if key in old and old[key] != new.get(key):
            diff.breaks.append(f"{where}: {key} changed from {old[key]!r} to {new.get(key)!r}")
    if old.get("runtime_checkable") and not new.get("runtime_checkable"):
        diff.breaks.append(f"{where}: is no longer runtime_checkable")
    if "constructor" in old:
        _compare_callable(f"{where}()", old["constructor"], new["constructor"], diff)

    def same_value(item: str, before: Any, after: Any) -> None:
        if before != after:
            diff.breaks.append(f"{item}: changed from {before!r} to {after!r}")

    port = old["kind"] == "port"
    attributes_old, attributes_new = old.get("attributes", {}), new.get("attributes", {})
    _compare_mapping(f"{where}.", attributes_old, attributes_new, diff, same_value, port=port)
    _compare_mapping(f"{where}.", old.get("members", {}), new.get("members", {}), diff, same_value)

    def same_member(item: str, before: Json, after: Json) -> None:
        if before.get("kind") == "property" or after.get("kind") == "property":
            same_value(item, before, after)
        else:
            _compare_callable(item, before, after, diff, port=port)

    _compare_mapping(f"{where}.", old["methods"], new["methods"], diff, same_member, port=port)
    if "fields" in old:
        _compare_fields(where, old["fields"], new["fields"], diff)


def _field_text(field: Json) -> str:
    default = "" if field["default"] is None else f" = {field['default']}"
    return f"`{field['name']}: {field['type']}{default}`"


def _compare_fields(where: str, old: list[Json], new: list[Json], diff: Difference) -> None:
    """Fields are the positional constructor: existing ones keep place, type and default."""
    for index, field in enumerate(old):
        if index >= len(new) or new[index] != field:
            now = next((f for f in new if f["name"] == field["name"]), None)
            state = "removed" if now is None else f"changed from {_field_text(field)} to {_field_text(now)}"
            diff.breaks.append(f"{where}.{field['name']}: field {state}")
    for field in new[len(old) :]:
        if any(f["name"] == field["name"] for f in old):
            continue
        if field["default"] is None:
            diff.breaks.append(f"{where}.{field['name']}: new field without a default breaks constructors")
        else:
            diff.additions.append(f"{where}.{field['name']}: new field")


def compare(old: Json, new: Json) -> Difference:
    """What changed from the recorded snapshot ``old`` to the code's ``new``."""
    diff = Difference()
    for package, names in old.get("exports", {}).items():
        now = set(new.get("exports", {}).get(package, []))
        diff.breaks.extend(f"{package}.__all__: {name!r} removed" for name in names if name not in now)
        diff.additions.extend(f"{package}.__all__: {name!r} added" for name in sorted(now - set(names)))

    _compare_mapping(
        "",
        old.get("classes", {}),
        new.get("classes", {}),
        diff,
        lambda w, a, b: _compare_class(w, a, b, diff),
    )
    _compare_mapping(
        "",
        old.get("functions", {}),
        new.get("functions", {}),
        diff,
        lambda w, a, b: _compare_callable(w, a, b, diff),
    )
    return diff


# --------------------------------------------------------------------------- assets


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_SOURCE_ROW = re.compile(r"^\|\s*`(?P<file>[^`]+)`\s*\|(?P<what>[^|]*)\|(?P<source>[^|]*)\|\s*$")


def fixture_sources(sources_md: Path = SOURCES_PATH) -> dict[str, str]:
    """``file -> source in KIS_API.md`` from the table in tests/fixtures/kis/SOURCES.md."""
    sources: dict[str, str] = {}
    for line in sources_md.read_text(encoding="utf-8").splitlines():
        match = _SOURCE_ROW.match(line.strip())
        if match:
            sources[match["file"]] = "KIS_API.md " + " ".join(match["source"].split())
    return sources


def fixture_files() -> list[Path]:
    return sorted(FIXTURES_DIR.glob("*.json"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def build_assets(snapshot: Json | None = None) -> Json:
    """Digests of every asset later phases must not change, as the files are now.

    ``snapshot`` is the interface snapshot about to be written (default: the file on disk).
    """
    sources = fixture_sources()
    assets: Json = {
        ENV_EXAMPLE: {
            "sha256": sha256(ROOT / ENV_EXAMPLE),
            "what": "the .env layout and variables (seed §6: the .env branching structure)",
        }
    }
    for path in fixture_files():
        source = sources.get(path.name)
        if not source:
            raise SystemExit(
                f"{_rel(path)} has no row in {_rel(SOURCES_PATH)}: record its KIS_API.md source first"
            )
        assets[_rel(path)] = {"sha256": sha256(path), "what": "recorded KIS payload", "source": source}
    snapshot_bytes = (
        SNAPSHOT_PATH.read_bytes() if snapshot is None else (dumps(snapshot) + "\n").encode("utf-8")
    )
    assets[_rel(SNAPSHOT_PATH)] = {
        "sha256": hashlib.sha256(snapshot_bytes).hexdigest(),
        "what": "the Adapter <-> Runtime interface snapshot (Gate C item 4)",
    }
    return {
        "about": (
            "SHA-256 digests of the assets later phases must not change (Gate C item 5), written by "
            "contracts/freeze.py and checked by contracts/test_frozen_assets.py. " + ACCEPT_HINT
        ),
        "phase": PHASE,
        "algorithm": "sha256",
        "assets": assets,
    }


def compare_assets(old: Json, new: Json) -> Difference:
    """A frozen asset may not change or disappear; a new one (a new recorded payload) may appear."""
    diff = Difference()
    recorded, current = old.get("assets", {}), new.get("assets", {})
    for name, entry in recorded.items():
        now = current.get(name)
        if now is None:
            diff.breaks.append(f"{name}: removed")
        elif now["sha256"] != entry["sha256"]:
            diff.breaks.append(
                f"{name}: content changed (sha256 {entry['sha256'][:12]}… -> {now['sha256'][:12]}…)"
            )
        elif now.get("source") != entry.get("source"):
            diff.breaks.append(
                f"{name}: source changed from {entry.get('source')!r} to {now.get('source')!r}"
            )
    diff.additions.extend(f"{name}: new asset" for name in current if name not in recorded)
    return diff


# --------------------------------------------------------------------------- files and CLI


def load(path: Path) -> Json:
    data: Json = json.loads(path.read_text(encoding="utf-8"))
    return data


def dumps(data: Any, indent: str = "") -> str:
    """JSON for people reading a diff: anything that fits on one line stays on one line."""
    compact = json.dumps(data, ensure_ascii=False)
    if len(indent) + len(compact) <= _LINE or not isinstance(data, dict | list) or not data:
        return compact
    inner = indent + "  "
    if isinstance(data, dict):
        items = [
            f"{inner}{json.dumps(key, ensure_ascii=False)}: {dumps(value, inner)}"
            for key, value in data.items()
        ]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    return "[\n" + ",\n".join(f"{inner}{dumps(value, inner)}" for value in data) + f"\n{indent}]"


_LINE = 110


def write(path: Path, data: Json) -> None:
    path.write_text(dumps(data) + "\n", encoding="utf-8")


def _report(title: str, lines: Iterable[str]) -> None:
    lines = list(lines)
    if lines:
        print(f"{title} ({len(lines)}):")
        for line in lines:
            print(f"  - {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--accept-additions",
        action="store_true",
        help="record additions only; refuse when a frozen item changed or was removed",
    )
    group.add_argument("--check", action="store_true", help="compare and report; write nothing")
    args = parser.parse_args(argv)

    snapshot = build_snapshot()
    interface = compare(load(SNAPSHOT_PATH), snapshot) if SNAPSHOT_PATH.exists() else Difference()
    _report("interface additions", interface.additions)
    _report("interface BREAKS (changed or removed)", interface.breaks)

    if args.check or args.accept_additions:
        old_assets = load(ASSETS_PATH) if ASSETS_PATH.exists() else {"assets": {}}
        current_assets = build_assets(snapshot)
        # The snapshot's own digest is about to be rewritten: judge it by the interface diff.
        snapshot_key = _rel(SNAPSHOT_PATH)
        old_assets.get("assets", {}).pop(snapshot_key, None)
        current_assets["assets"].pop(snapshot_key, None)
        assets = compare_assets(old_assets, current_assets)
        _report("asset additions", assets.additions)
        _report("asset BREAKS (changed or removed)", assets.breaks)
        if interface.breaks or assets.breaks:
            print(
                "\nRefusing: frozen items changed or were removed. Changing or removing a frozen item "
                "needs a new phase's decision (see docs/gate-c.md); then run `python contracts/freeze.py`.",
                file=sys.stderr,
            )
            return 1
        if args.check:
            print(
                "interface and assets match the frozen records"
                if not (interface.additions or assets.additions)
                else "only additions: run `python contracts/freeze.py --accept-additions` to record them"
            )
            return 0

    write(SNAPSHOT_PATH, snapshot)
    write(ASSETS_PATH, build_assets(snapshot))
    print(f"wrote {_rel(SNAPSHOT_PATH)} and {_rel(ASSETS_PATH)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
