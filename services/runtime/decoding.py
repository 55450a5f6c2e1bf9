"""Config files into typed structures: TOML-shaped dicts decoded by msgspec, errors in words.

``decode(value, SomeStruct, source=..., at=...)`` runs ``msgspec.convert(strict=True)``:
a string is never taken as a number or a boolean, a float never as an integer, a boolean
never as a number, and (with ``forbid_unknown_fields=True`` on the Structs) an unknown key
or section is refused. Every failure becomes one ``ConfigError`` line::

    {source}: {key path} {what is wrong}; {what to do}

e.g. ``config file /etc/fleet.toml: gateway.port must be an integer, not the string "7496";
write it without quotes: port = 7496``. ``source`` names the file (or the command line),
``at`` is the dotted key path of ``value`` inside it (``"risk.strategies.mr1"``).

A dict whose keys are names (symbols, strategies) is decoded one key at a time
(``decode_map``): msgspec writes such keys as ``[...]`` and the message must name them.
"""
from __future__ import annotations

import difflib
import json
import math
import re
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

#: numbers the files may hold: never negative (0 switches a limit off) / strictly positive,
#: and finite (TOML can write inf and nan; neither is a limit, a tick or a timeout)
FINITE = sys.float_info.max
NonNegativeFloat = typing.Annotated[float, msgspec.Meta(ge=0, le=FINITE)]
NonNegativeInt = typing.Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = typing.Annotated[float, msgspec.Meta(gt=0, le=FINITE)]
PositiveInt = typing.Annotated[int, msgspec.Meta(gt=0)]
#: a price or quantity increment (a tick, a lot): at least 1e-10, which is far below any IB
#: min tick (FX 5e-5, crypto 0.01) or size increment (fractional shares 1e-4), and refuses a
#: denormal such as 5e-324 that would pass ``> 0`` and make every price a multiple of it
Increment = typing.Annotated[float, msgspec.Meta(ge=1e-10, le=FINITE)]
Port = typing.Annotated[int, msgspec.Meta(ge=1, le=65535)]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says which file, which key, and why."""


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The parsed TOML file; ``what`` ("config file", "strategy config") opens each error."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {path} is not valid TOML: {exc}") from None


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is Path and isinstance(obj, (str, Path)):
        return Path(obj)
    raise TypeError(f"Expected `{type_.__name__}`, got `{type(obj).__name__}`")


def decode(value: Any, type_: type[T], *, source: str, at: str = "") -> T:
    """``value`` as ``type_`` (strict), or ConfigError naming ``source`` and the key path."""
    try:
        return msgspec.convert(value, type_, strict=True, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(str(exc), value, type_, source, at)) from None


def decode_map(value: Any, type_: type[T], *, source: str, at: str) -> dict[str, T]:
    """A table of named tables (``[instruments.ES]``...), each value decoded as ``type_``."""
    table = decode(value, dict[str, Any], source=source, at=at)
    return {name: decode(item, type_, source=source, at=f"{at}.{name}")
            for name, item in table.items()}


# -- error messages --------------------------------------------------------------------------
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_TYPE = re.compile(r"^Expected `(?P<want>\w+)(?: \| null)?`, got `(?P<got>\w+)`$")
_BOUND = re.compile(r"^Expected `(?P<want>\w+)` (?P<op>>=|>|<=|<) (?P<n>[-\d.e+]+)$")
_LENGTH = re.compile(r"^Expected `(?P<want>\w+)` of length >= (?P<n>\d+)$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>.*)`$", re.S)
_MISSING = re.compile(r"^Object missing required field `(?P<key>.*)`$", re.S)

_WANT = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
         "array": "a list", "object": "a table", "Path": "a path (a string)"}
_OP = {">=": "at least", ">": "greater than", "<=": "at most", "<": "less than"}
_ABSENT = object()


def explain(text: str, value: Any, type_: Any, source: str, at: str) -> str:
    """msgspec's ``text`` about ``value`` (decoded as ``type_``) as a sentence for a person."""
    match = _AT.match(text)
    what, path = (match["what"], match["path"] or "") if match else (text, "")
    segments = [m[1] if m[1] is not None else int(m[2]) if m[2].isdigit() else "..."
                for m in _SEGMENT.finditer(path)]
    key = _join(at, segments)
    leaf = str(segments[-1]) if segments else at.rpartition(".")[2]
    found = _lookup(value, segments)
    if m := _UNKNOWN.match(what):
        known = _fields_at(type_, segments)
        guess = difflib.get_close_matches(m["key"], known, n=1)
        if isinstance(_lookup(found, [m["key"]]), dict):  # a whole table: [gatway]
            hint = f" (did you mean [{_join(key, guess)}]?)" if guess else ""
            line = f"unknown section [{_join(key, [m['key']])}]{hint}"
        else:
            hint = f" (did you mean {guess[0]}?)" if guess else ""
            line = f"unknown key(s) in [{key}]: {m['key']}{hint}" if key else \
                f"unknown key {m['key']}{hint}"
        line += f"; known: {', '.join(sorted(known))}; correct the spelling or remove it"
    elif m := _MISSING.match(what):
        line = f"'{_join(key, [m['key']])}' is required; add it"
    elif m := _TYPE.match(what):
        subject = f"[{key}]" if m["want"] == "object" else key
        line = (f"{subject} must be {_WANT.get(m['want'], m['want'])}, not {_show(found)}"
                f"{_hint(m['want'], found, leaf)}")
    elif (m := _BOUND.match(what)) and isinstance(found, float) and not math.isfinite(found):
        line = f"{key} must be a finite number, not {_show(found)}"
    elif m:
        bound = m["n"][:-2] if m["n"].endswith(".0") else m["n"]
        line = f"{key} must be {_OP[m['op']]} {bound}, not {_show(found)}"
    elif m := _LENGTH.match(what):
        line = f"{key} must not be empty" if m["n"] == "1" else \
            f"{key} must have at least {m['n']} items"
    else:
        subject = f"[{key}]" if isinstance(found, dict) else key or "the top level"
        line = f"{subject} {what}"
    return f"{source}: {line}".replace("\n", "\\n")


def _join(at: str, segments: list) -> str:
    key = at
    for seg in segments:
        key = f"{key}[{seg}]" if isinstance(seg, int) or seg == "..." else \
            f"{key}.{seg}" if key else str(seg)
    return key


def _lookup(value: Any, segments: list) -> Any:
    for seg in segments:
        try:
            value = value[seg]
        except (KeyError, IndexError, TypeError):
            return _ABSENT
    return value


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "that"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value}"


def _hint(want: str, value: Any, leaf: str) -> str:
    """What to write instead: the one thing a person most likely meant."""
    if isinstance(value, str) and want == "bool":
        if value.strip().lower() in ("true", "false"):
            return f"; write it without quotes: {leaf} = {value.strip().lower()}"
        return "; write true or false without quotes (a string is never taken as a boolean)"
    if isinstance(value, str) and want in ("int", "float"):
        try:
            (int if want == "int" else float)(value.strip())
        except ValueError:
            return f"; write {_WANT[want]} without quotes"
        return f"; write it without quotes: {leaf} = {value.strip()}"
    if isinstance(value, float) and want == "int":
        if value.is_integer():
            return f"; write it without a decimal point: {leaf} = {int(value)}"
        return "; write a whole number"
    if isinstance(value, bool) and want in ("int", "float"):
        return f"; write {_WANT[want]}"
    return ""


def _fields_at(type_: Any, segments: list) -> list[str]:
    """The keys the Struct at ``segments`` inside ``type_`` accepts (for 'known: ...')."""
    type_ = _struct_of(type_)
    for seg in segments:
        if type_ is None or isinstance(seg, int) or seg == "...":
            return []
        field = next((f for f in msgspec.structs.fields(type_) if f.encode_name == seg), None)
        type_ = _struct_of(field.type) if field else None
    return [f.encode_name for f in msgspec.structs.fields(type_)] if type_ is not None else []


def _struct_of(type_: Any) -> Any:
    if typing.get_origin(type_) is typing.Annotated:
        type_ = typing.get_args(type_)[0]
    if isinstance(type_, type) and issubclass(type_, msgspec.Struct):
        return type_
    for arg in typing.get_args(type_):  # a union such as ``Struct | None``
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg
    return None
