"""Run configs as TOML files whose keys are a config dataclass's fields.

A run folder's saved config is itself a valid `--config`, so a run can be repeated with one
change: `streampose train --config runs/x/config.toml --steps 5000 --out runs/y`. TOML has no
null, so fields that are None are listed under the reserved key `unset` instead of being
left out (left out means "the default", which is not always None).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streampose.errors import StreamPoseError
from streampose.files import atomic_write, read_limited

UNSET = "unset"
MAX_CONFIG_BYTES = 1 << 20  # a run config is a few hundred bytes; anything near this is not one
CHECK = "check"  # the dataclass field metadata key of a field's `Check`


@dataclasses.dataclass(frozen=True)
class Check:
    """What one option or config value must be, checked where it enters (an option, a config file),
    so a zero, a NaN or a typo fails in one line before a run starts, not as a traceback hours in.

    `kind` int or float (floats must be finite); `low`/`high` inclusive bounds, `above` an
    exclusive lower bound; `words` strings also accepted and what each stands for (``auto``);
    `pattern` a regular expression a string value must match instead of a number."""

    kind: type = int
    low: float | None = None
    high: float | None = None
    above: float | None = None
    words: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    pattern: str | None = None
    describe: str = ""  # for a pattern: what it accepts, in words
    multiple: int = 1  # an int must be a multiple of this

    def __str__(self) -> str:
        if self.pattern:
            return self.describe
        if self.kind is int and self.low == 1 and self.high is None:
            what = "a positive whole number"
        else:
            what = "a whole number" if self.kind is int else "a finite number"
            bounds = [f">= {self.low:g}"] if self.low is not None else []
            bounds += [f"> {self.above:g}"] if self.above is not None else []
            bounds += [f"<= {self.high:g}"] if self.high is not None else []
            what += f" {' and '.join(bounds)}" if bounds else ""
            what += f", a multiple of {self.multiple}" if self.multiple > 1 else ""
        return what + "".join(f" or {w}" for w in self.words)

    def ok(self, value: Any) -> bool:
        """Whether a parsed value (a TOML value, an option after `parse`) passes."""
        if isinstance(value, str):
            return value in self.words or bool(self.pattern and re.fullmatch(self.pattern, value))
        if self.pattern or isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind is int and (not isinstance(value, int) or value % self.multiple):
            return False
        return (
            (math.isfinite(value) if isinstance(value, float) else abs(value) < 2**63)  # what a C int64 holds
            and (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
            and (self.above is None or value > self.above)
        )

    def parse(self, text: str) -> Any:
        """An argparse `type`: the option's text as its value, or one line saying what it must be."""
        if text in self.words:
            return self.words[text]
        try:
            value = text if self.pattern else self.kind(text)
        except ValueError:
            value = None
        if value is None or not self.ok(value):
            raise argparse.ArgumentTypeError(f"must be {self}, not {text!r}")
        return value


POSITIVE = Check(int, low=1)
COUNT = Check(int, low=0)
POSITIVE_FLOAT = Check(float, above=0)
NON_NEGATIVE_FLOAT = Check(float, low=0)
WEIGHT = NON_NEGATIVE_FLOAT
MAX_SIDE = Check(int, low=0)  # pixels; 0: frames at full size
#: auto, cpu, mps, cuda or cuda:N (torch's spelling), checked before torch is imported.
DEVICE = Check(pattern=r"auto|cpu|mps|cuda(:\d{1,2})?", describe="auto, cpu, mps, cuda or cuda:N")
THREADS = Check(int, low=1, words={"auto": None})  # auto (None): torch's default


def check_values(cls: type, data: Mapping[str, Any]) -> list[str]:
    """What is wrong with `data`'s values by the `Check`s in `cls`'s field metadata (None passes:
    it is TOML's `unset`, the option left out)."""
    checks = {f.name: f.metadata[CHECK] for f in dataclasses.fields(cls) if CHECK in f.metadata}
    return [
        f"{key} must be {checks[key]}, not {value!r}"
        for key, value in data.items()
        if key in checks and value is not None and not checks[key].ok(value)
    ]


def checked(default: Any, check: Check) -> Any:
    """A dataclass field with a default and the `Check` its values must pass."""
    return dataclasses.field(default=default, metadata={CHECK: check})


def read_config(path: str | Path, cls: type) -> dict[str, Any]:
    """The fields a TOML config sets for dataclass `cls`; unknown keys, values of the wrong type and
    values out of range (`check_values`) are an error that names them."""
    text = read_limited(path, MAX_CONFIG_BYTES, "config")
    try:
        data = _with_unset(tomllib.loads(text.decode("utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StreamPoseError(f"{path}: not a valid TOML config ({e})") from None
    except RecursionError:
        raise StreamPoseError(f"{path}: not a valid TOML config (nested too deeply)") from None
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise StreamPoseError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"(a {cls.__name__} has: {', '.join(sorted(fields))})"
        )
    wrong = [f"{k} must be {kind}, not {type(data[k]).__name__}" for k, kind in _wrong_types(cls, data).items()]
    wrong = wrong or check_values(cls, data)
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
    if not isinstance(unset, list) or not all(isinstance(k, str) for k in unset):
        raise tomllib.TOMLDecodeError(f"{UNSET} must be a list of key names")
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
