"""YOLOX-Nano person detector on onnxruntime (COCO weights from the model store).

The ONNX file is YOLOX's raw head (exported with `decode_in_inference=False`): for each of the
3549 anchor points of a 416x416 input (strides 8, 16, 32 -> 52x52 + 26x26 + 13x13 grid cells,
in that order, row-major) it gives (x, y, log w, log h, objectness, 80 class scores), the last
81 already through a sigmoid. Decoding, as YOLOX documents it: centre = (x, y + cell) * stride,
size = exp(log w, log h) * stride, score = objectness * class score. Its input is YOLOX's
letterbox: BGR, 0-255 floats, the image resized by one ratio into the top-left corner and padded
with grey 114.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from streampose import store
from streampose.detect.boxes import nms
from streampose.errors import ModelFileError

INPUT = 416
STRIDES = (8, 16, 32)
PERSON = 0  # COCO class index


def _grid() -> tuple[np.ndarray, np.ndarray]:
    cells, strides = [], []
    for s in STRIDES:
        n = INPUT // s
        ys, xs = np.mgrid[0:n, 0:n]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((n * n, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def letterbox(image_rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """(1x3x416x416 float32 input, resize ratio) for one RGB frame."""
    h, w = image_rgb.shape[:2]
    ratio = min(INPUT / h, INPUT / w)
    nh, nw = max(1, round(h * ratio)), max(1, round(w * ratio))
    canvas = np.full((INPUT, INPUT, 3), 114, np.uint8)
    canvas[:nh, :nw] = cv2.resize(image_rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    return canvas.transpose(2, 0, 1)[None].astype(np.float32), ratio


def decode(raw: np.ndarray, ratio: float, *, min_score: float, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) in frame pixels, scores (N,)) of persons in one raw (3549, 85) output, after NMS."""
    cells, strides = _GRID
    scores = raw[:, 4] * raw[:, 5 + PERSON]
    keep = scores >= min_score
    raw, scores, cells, strides = raw[keep], scores[keep], cells[keep], strides[keep]
    centre = (raw[:, :2] + cells) * strides
    half = np.exp(np.minimum(raw[:, 2:4], 10.0)) * strides / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1) / ratio
    # Pixel edges -> pixel centres at integer coordinates (the project's 2D convention).
    boxes -= 0.5
    order = nms(boxes, scores, iou)
    return boxes[order].astype(np.float32), scores[order].astype(np.float32)


_GRID = _grid()


def _providers(ort) -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class PersonDetector:
    """Person boxes and scores for RGB frames of any size."""

    def __init__(
        self, *, min_score: float = 0.3, iou: float = 0.45, threads: int | None = None, model: str | Path | None = None
    ) -> None:
        """`model`: a YOLOX-Nano ONNX file of the user's; by default the model store's."""
        import onnxruntime as ort

        if model is not None and not Path(model).is_file():
            raise ModelFileError(f"{model}: no such detector file")
        model = Path(model) if model is not None else store.path("yolox-nano")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Its worker threads would otherwise spin after each run, taking CPU the landmark graphs
        # (and other producers) need: 3 ms of CPU per labelled person on 2 cores (docs/teachers.md, "Top-down").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        try:
            self._session = ort.InferenceSession(str(model), options, providers=_providers(ort))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelFileError(
                f"yolox-nano: onnxruntime cannot load {model} ({type(e).__name__}); "
                "run `streampose models fetch yolox-nano`"
            ) from None
        self._input = self._session.get_inputs()[0].name
        self.min_score, self.iou = min_score, iou

    def __call__(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        tensor, ratio = letterbox(image_rgb)
        (raw,) = self._session.run(None, {self._input: tensor})
        return decode(raw[0], ratio, min_score=self.min_score, iou=self.iou)
