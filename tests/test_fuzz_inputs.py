"""Property-based tests (hypothesis) for input that comes from outside: labels records, config
files, option values, student configs and ONNX metadata. Each is generated from a valid one with
a part replaced by arbitrary data, and must either be accepted as valid or be refused with one
line (a StreamPoseError, or argparse's exit 2 with one `error:` line), never another exception.
The parsing functions run in-process here, for speed; `test_hostile_inputs` proves the CLI turns
their errors into exit status 2 and one line."""

from __future__ import annotations

import contextlib
import io
import json
import math
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import HEADER, JOINTS, frame, person, student_state, with_metadata, write_labels
from streampose.cli import build_parser
from streampose.config import CHECK, _value, check_values, read_config
from streampose.engine.config import TrainConfig
from streampose.errors import StreamPoseError
from streampose.model.backends import OnnxBackend
from streampose.model.checkpoint import MAX_CHANNELS, check_student, student_config
from streampose.model.export import onnx_bytes
from streampose.poses.labels import load_labels

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
)
#: Any JSON document (NaN and infinity too: Python's json reads and writes them).
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def refused_in_one_line(error: Exception) -> None:
    assert isinstance(error, StreamPoseError), f"{type(error).__name__}: {error}"
    assert "\n" not in str(error) and str(error)


# -- labels records ------------------------------------------------------------------------------

FRAME_KEYS = list(frame())
PERSON_KEYS = list(person())


@FUZZ
@given(
    part=st.sampled_from(["record", "frame", "person", "header", *FRAME_KEYS, *PERSON_KEYS]),
    value=JSON,
    drop=st.booleans(),
)
def test_a_fuzzed_labels_record_loads_valid_or_is_refused_in_one_line(part, value, drop):
    header, record = dict(HEADER), {"frame": frame()}
    if part == "record":
        record = value
    elif part == "frame":
        record = {"frame": value}
    elif part == "person":
        record["frame"]["persons"] = [value]
    elif part == "header":
        header["skeleton"] = value
    elif part in FRAME_KEYS:
        record["frame"] = _set(record["frame"], part, value, drop)
    else:
        record["frame"]["persons"] = [_set(person(), part, value, drop)]
    with tempfile.TemporaryDirectory() as folder:
        path = write_labels(Path(folder) / "labels.jsonl", record, header=header)
        try:
            _, frames = load_labels(path)
        except Exception as e:  # noqa: BLE001 - what is raised is the property under test
            refused_in_one_line(e)
            return
    for f in frames:  # accepted: then every number is usable as it is drawn and scored
        assert isinstance(f.index, int) and isinstance(f.source, str) and math.isfinite(f.timestamp)
        for p in f.persons:
            assert p.joints3d.shape == (JOINTS, 3) and p.joints2d.shape == (JOINTS, 2) and p.box.shape == (4,)
            assert all(np.isfinite(a).all() for a in (p.joints3d, p.joints2d, p.visibility, p.box))
            assert isinstance(p.track_id, int) and not isinstance(p.track_id, bool)


def _set(d: dict, key: str, value: object, drop: bool) -> dict:
    return {k: v for k, v in d.items() if k != key} if drop else d | {key: value}


# -- config files --------------------------------------------------------------------------------

CONFIG_KEYS = [f.name for f in fields(TrainConfig) if f.name != "filters"]
TOML_VALUES = (
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.lists(st.integers(-5, 5) | st.text(max_size=4), max_size=3)
)


@FUZZ
@given(values=st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(min_size=1, max_size=6), TOML_VALUES, max_size=5))
def test_a_fuzzed_config_is_valid_or_refused_in_one_line(values):
    text = "".join(f"{json.dumps(k)} = {_value(v)}\n" for k, v in values.items())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.toml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            read = read_config(path, TrainConfig)
        except Exception as e:  # noqa: BLE001
            refused_in_one_line(e)
            return
    assert not check_values(TrainConfig, read)
    TrainConfig(**read)  # accepted: a run can be configured from it


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=200))
def test_config_bytes_are_a_config_or_one_line(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.toml"
        path.write_bytes(data)
        try:
            read_config(path, TrainConfig)
        except Exception as e:  # noqa: BLE001
            refused_in_one_line(e)


# -- option values -------------------------------------------------------------------------------

PARSER = build_parser()
COMMANDS = PARSER._subparsers._group_actions[0].choices  # each command's own parser
CHECKED = {  # the train options that are TrainConfig fields with a Check
    flag: f.metadata[CHECK]
    for f in fields(TrainConfig)
    if CHECK in f.metadata and (flag := f"--{f.name.replace('_', '-')}") in COMMANDS["train"]._option_string_actions
}
OTHER = {
    "label": ["--stride", "--max-frames", "--max-side", "--max-video-mb", "--max-videos"],
    "eval": ["--stride", "--max-frames", "--max-side", "--max-video-mb", "--device"],
    "predict": ["--max-side", "--device", "--threads", "--max-persons", "--detect-every"],
}
OPTION_TEXT = (
    st.text(max_size=8)
    | st.integers(-(10**6), 10**6).map(str)
    | st.integers(-(10**30), 10**30).map(str)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
    | st.sampled_from(["auto", "cuda:1", "0", "-0", "1e309", "nan", " 3", "0x10"])
)


@settings(max_examples=150, deadline=None)
@given(flag=st.sampled_from(sorted(CHECKED)), text=OPTION_TEXT)
def test_a_train_option_value_passes_its_check_or_is_one_error_line(flag, text):
    args, err = _parse(["train", "--source", "x.mp4", f"{flag}={text}"])
    if args is None:
        assert err.count("\n") == 1 and err.startswith("error: streampose train: argument " + flag), err
        return
    value = getattr(args, flag[2:].replace("-", "_"))
    check = CHECKED[flag]
    assert value in check.words.values() or check.ok(value), (flag, text, value)


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from([(c, f) for c, flags in OTHER.items() for f in flags]), text=OPTION_TEXT)
def test_other_commands_options_are_checked_too(option, text):
    command, flag = option
    model = [] if command == "label" else ["--onnx", "s.onnx"]
    args, err = _parse([command, "x.mp4", *model, f"{flag}={text}"])
    if args is None:
        assert err.count("\n") == 1 and err.startswith(f"error: streampose {command}: argument {flag}"), err
        return
    value = getattr(args, flag[2:].replace("-", "_"))
    if isinstance(value, float | int) and not isinstance(value, bool):
        assert math.isfinite(value) and value >= 0


def _parse(argv: list[str]):
    """(namespace, "") or (None, stderr) when argparse refused `argv` (exit status 2)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            return PARSER.parse_args(argv), ""
        except SystemExit as e:
            assert e.code == 2
            return None, err.getvalue()


# -- student configs and ONNX metadata ------------------------------------------------------------

STATE = student_state()
STUDENT_KEYS = list(STATE["student"])


@FUZZ
@given(
    key=st.sampled_from([*STUDENT_KEYS, "blocks.0", "extra"]), value=JSON | st.integers(0, 40000), drop=st.booleans()
)
def test_a_fuzzed_student_config_is_checked_before_anything_is_built(key, value, drop):
    config = json.loads(json.dumps(STATE["student"]))
    if key == "blocks.0":
        config["blocks"][0] = value
    else:
        config = _set(config, key, value, drop)
    try:
        check_student(STATE | {"student": config})
    except ValueError as e:
        assert "\n" not in str(e)
        return
    parsed = student_config(config)  # accepted: then it is the network its weights fit
    assert max(parsed.neck, parsed.head, parsed.stem) <= MAX_CHANNELS


@pytest.fixture(scope="module")
def student_onnx() -> onnx.ModelProto:
    return onnx.load_from_string(onnx_bytes(STATE))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(["crop_size", "joints", "mean", "std", "mean_pose", "skeleton", "streampose.format"]),
    value=JSON.map(json.dumps) | st.integers(-(10**6), 10**6).map(str) | st.text(max_size=8),
)
def test_fuzzed_onnx_metadata_is_refused_in_one_line(student_onnx, key, value):
    model = with_metadata(student_onnx, **{key: value}).SerializeToString()
    try:
        backend = OnnxBackend(model)
    except Exception as e:  # noqa: BLE001
        refused_in_one_line(e)
        return
    assert 32 <= backend.crop_size <= 1024
    out = backend(np.zeros((1, backend.crop_size, backend.crop_size, 3), np.uint8))
    assert out["joints3d"].shape == (1, JOINTS, 3)
