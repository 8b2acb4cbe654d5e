"""Run configs as TOML files whose keys are a config dataclass's fields.

A run folder's saved config is itself a valid `--config`, so a run can be repeated with one
change: `streampose train --config runs/x/config.toml --steps 5000 --out runs/y`. TOML has no
null, so fields that are None are listed under the reserved key `unset` instead of being
left out (left out means "the default", which is not always None).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streampose.errors import StreamPoseError
from streampose.files import atomic_write

UNSET = "unset"


def read_config(path: str | Path, cls: type) -> dict[str, Any]:
    """The fields a TOML config sets for dataclass `cls`; unknown keys are an error that names them."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise StreamPoseError(f"{path}: cannot read the config ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StreamPoseError(f"{path}: not a valid TOML config ({e})") from None
    data = _with_unset(data)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise StreamPoseError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(a {cls.__name__} has: {', '.join(sorted(fields))})"
        )
    wrong = [f"{k} must be {kind}, not {type(data[k]).__name__}" for k, kind in _wrong_types(cls, data).items()]
    if wrong:
        raise StreamPoseError(f"{path}: {'; '.join(wrong)}")
    return data


def _wrong_types(cls: type, data: dict[str, Any]) -> dict[str, str]:
    """Keys whose value does not fit the field's annotation (an int where a float goes is fine), and
    what would: a config's typo must fail here, not hours into a run."""
    hints = typing.get_type_hints(cls)
    wrong = {}
    for key, value in data.items():
        hint = hints[key]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kinds = {typing.get_origin(t) or t for t in options}
        if float in kinds:
            kinds.add(int)
        if not isinstance(value, tuple(kinds)) or (isinstance(value, bool) and bool not in kinds):
            wrong[key] = " or ".join(sorted("none" if k is type(None) else k.__name__ for k in kinds))
    return wrong


def _with_unset(table: dict[str, Any]) -> dict[str, Any]:
    """A TOML table with the keys listed in its `unset` set to None, nested tables likewise."""
    unset = table.pop(UNSET, [])
    return {k: _with_unset(v) if isinstance(v, dict) else v for k, v in table.items()} | dict.fromkeys(unset)


def config_toml(config: Any, **extra: Any) -> str:
    """`config` (a dataclass instance) as TOML that `read_config` reads back to the same values."""
    values = dataclasses.asdict(config) | extra
    tables = {k: v for k, v in values.items() if isinstance(v, Mapping)}
    lines = _key_values({k: v for k, v in values.items() if k not in tables})
    for name, table in tables.items():
        lines += ["", f"[{name}]", *_key_values(table)]
    return "\n".join(lines) + "\n"


def _key_values(table: Mapping[str, Any]) -> list[str]:
    unset = [k for k, v in table.items() if v is None]
    lines = [f"{UNSET} = {_value(unset)}"] if unset else []
    return lines + [f"{k} = {_value(v)}" for k, v in table.items() if v is not None]


def write_config(config: Any, path: str | Path, **extra: Any) -> Path:
    text = config_toml(config, **extra)
    return atomic_write(path, lambda f: f.write(text.encode()))


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to a TOML config")
