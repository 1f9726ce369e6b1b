"""The schema machinery: :func:`opt` declares a field; :func:`build_config` turns a mapping (from
the CLI, a recipe stage, or ``key=value`` overrides) into a validated dataclass.

Unknown keys are an error that names the closest valid key.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import field
from typing import Any, Callable

from .. import yamlsafe
from ..errors import MhsaError, cap, closest


def opt(default: Any, help: str, *, argument: bool = False, choices: Any = None,
        min: float | None = None, max: float | None = None, min_open: bool = False,
        max_open: bool = False, cli: bool = True, recipe: bool = True,
        flag: str | tuple[str, ...] | None = None, required: bool = False, repeat: bool = False) -> Any:
    """Declare a config field.

    Args:
        default: default value (lists and dicts are copied per instance).
        help: one-line help, shown by ``--help`` and in recipe errors.
        argument: a positional CLI argument instead of an ``--option``.
        choices: a collection, or a callable returning one (e.g. a registry's keys).
        min, max: numeric range; ``min_open``/``max_open`` make it exclusive.
        cli: expose as a CLI option; recipe: accept as a recipe key.
        flag: CLI flag(s) if not ``--field-name`` (the first is the main name).
        required: the CLI option must be given (shown as required in ``--help``);
            a recipe fills it from the stage's ``from``.
        repeat: a list option given by repeating the flag (values may hold commas)
            instead of one comma-separated value.
    """
    meta = dict(help=help, argument=argument, choices=choices, min=min, max=max,
                min_open=min_open, max_open=max_open, cli=cli, recipe=recipe, flag=flag, required=required,
                repeat=repeat)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------- type handling

def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional: return (inner type, is_optional)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert ``value`` to type ``tp`` (lists accept "a,b" strings; dicts accept "k=v" lists)."""
    base, optional = _base_type(tp)
    if value is None:
        if optional:
            return None
        raise MhsaError(f"'{name}' must not be empty")
    origin = typing.get_origin(base)
    if origin is list:
        (item,) = typing.get_args(base) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        return [_coerce(name, v, item) for v in value]
    if origin is dict or base is dict:
        if isinstance(value, dict):
            return dict(value)
        if isinstance(value, (list, tuple)):
            return parse_assignments(list(value), name)
        raise MhsaError(f"'{name}' must be a mapping (key: value), got {value!r}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise MhsaError(f"'{name}' must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):  # nan, inf too
            raise MhsaError(f"'{name}' must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError, OverflowError):
            raise MhsaError(f"'{name}' must be an integer, got {cap(repr(value), 60)}") from None
    if base is float:
        if isinstance(value, bool):
            raise MhsaError(f"'{name}' must be a number, got {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise MhsaError(f"'{name}' must be a number, got {cap(repr(value), 60)}") from None
        if not math.isfinite(number):  # nan passes every range check; inf is never meant
            raise MhsaError(f"'{name}' must be a finite number, got {value!r}")
        return number
    if base is str:
        if isinstance(value, (dict, list)):
            raise MhsaError(f"'{name}' must be a string, got {value!r}")
        return str(value)
    return value


def _check_range(name: str, value: Any, meta: dict[str, Any]) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (v < lo or (meta["min_open"] and v == lo)):
            raise MhsaError(f"'{name}' must be {'>' if meta['min_open'] else '>='} {lo}, got {v}")
        if hi is not None and (v > hi or (meta["max_open"] and v == hi)):
            raise MhsaError(f"'{name}' must be {'<' if meta['max_open'] else '<='} {hi}, got {v}")


def _check_choice(name: str, value: Any, meta: dict[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is None or value is None:
        return
    choices = list(choices() if callable(choices) else choices)
    for v in value if isinstance(value, list) else [value]:
        if v not in choices:
            raise MhsaError(f"'{name}': unknown value '{v}'{closest(str(v), map(str, choices))}; "
                            f"choose from: {', '.join(map(str, choices))}")


def parse_assignments(items: list[str], what: str = "--set") -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise MhsaError(f"{what}: expected key=value, got '{item}'")
        key, raw = item.split("=", 1)
        out[key.strip()] = _scalar_or_text(raw, f"{what} {key.strip()}")
    return out


def _scalar_or_text(raw: str, source: str) -> Any:
    """A ``key=value`` value as YAML (within :mod:`.yamlsafe`'s budgets), or the raw text if it is
    not valid YAML (``--set name=a: b``). A budget or tag violation is an error, not text.
    """
    if not raw.strip():
        return ""
    try:
        return yamlsafe.load(raw, source)
    except yamlsafe.MalformedYaml:
        return raw


def build_config(cls: type, values: dict[str, Any]) -> Any:
    """Validate ``values`` against dataclass ``cls`` and return an instance.

    Raises:
        MhsaError: unknown key (closest valid key named), wrong type, out of range,
            unknown choice; ``.key`` names the offending key when there is one.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = field_types(cls)
    for key in values:
        if key not in fields:
            raise MhsaError(f"unknown key '{key}'{closest(key, fields)}", key=key)
    kwargs = {}
    for name, value in values.items():
        try:
            v = _coerce(name, value, hints[name])
            _check_range(name, v, fields[name].metadata)
            _check_choice(name, v, fields[name].metadata)
        except MhsaError as exc:
            raise MhsaError(str(exc), key=name) from None
        kwargs[name] = v
    cfg = cls(**kwargs)
    for name, f in fields.items():  # defaults must satisfy the schema too
        if name not in values:
            _check_choice(name, getattr(cfg, name), f.metadata)
    validate = getattr(cfg, "validate", None)
    if validate:
        validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Resolved settings of a config, JSON-able."""
    return dataclasses.asdict(cfg)


def load_yaml(text: str | bytes, source: str = "<string>") -> Any:
    """Parse YAML safely within budgets (:mod:`.yamlsafe`); any failure is one line ``source:line:column: ...``."""
    if isinstance(text, bytes):
        text = yamlsafe.decode(text, source)
    return yamlsafe.load(text, source)


ConfigFactory = Callable[[dict[str, Any]], Any]
