"""BlazePose GHUM 3D's landmark model, run directly on a batch of person crops.

MediaPipe's Python API runs this model only inside its own graph, behind its own person detector,
one person per graph, and loads it only from its own install folder. Run through LiteRT instead
(`ai-edge-litert`, Google's TFLite runtime), the model labels exactly the person a crop is
centred on, a whole batch of crops in one call, and the lite, full and heavy files come from the
model store like every other model. What MediaPipe's graph did around the model is done here:
crops scaled to [0, 1], the sigmoid on visibility, landmarks from crop pixels back to the frame
(`crops.invert_affine`), world landmarks turned back by the crop's angle, and the next crop from
the two alignment points the model predicts past the 33 joints (hips' centre and a point that
sets the body's scale and direction), framed as MediaPipe frames its tracking region.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from streampose import store
from streampose.errors import TeacherUnavailable
from streampose.teachers.quiet import native_chatter_filtered

CROP = 256  # the landmark model's input side
JOINTS = 33
#: store asset of each landmark model
MODELS = {"lite": "blazepose-lite", "full": "blazepose-full", "heavy": "blazepose-heavy"}
#: crop side / (2 x distance between the two alignment points), as MediaPipe's tracking region
ROI_SCALE = 1.25


@dataclass
class CropPoses:
    """The landmark model's output for a batch of N crops, in crop pixels (pixel centres at
    integer coordinates), before any gate."""

    joints2d: np.ndarray  # (N, 33, 2)
    visibility: np.ndarray  # (N, 33) in [0, 1]
    joints3d: np.ndarray  # (N, 33, 3) metres, hips' centre at the origin, axes of the crop
    alignment: np.ndarray  # (N, 2, 2): hips' centre, then the scale-and-direction point
    presence: np.ndarray  # (N,) the model's score that a person fills the crop
    mask: np.ndarray  # (N, 256, 256) uint8: the model's person segmentation, probability x 255


def roi_from_alignment(hips: np.ndarray, top: np.ndarray) -> tuple[tuple[float, float], float, float]:
    """(centre, side, angle) of the crop that frames a body whose alignment points are `hips` and
    `top` (frame pixels): centred on the hips, turned so `top` is straight above them."""
    v = np.asarray(top, np.float64) - np.asarray(hips, np.float64)
    side = 2.0 * ROI_SCALE * float(np.hypot(*v))
    return (float(hips[0]), float(hips[1])), side, float(np.arctan2(v[0], -v[1]))


class Landmarker:
    """One LiteRT interpreter of a BlazePose landmark model; batch in, batch out."""

    def __init__(self, model: str = "full", threads: int | None = None) -> None:
        if model not in MODELS:
            raise TeacherUnavailable(f"unknown landmark model {model!r}; known: {', '.join(MODELS)}")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise TeacherUnavailable(f"BlazePose needs ai-edge-litert ({e}); run `make install`") from None
        self.model = model
        path = str(store.path(MODELS[model]))
        self._interpreter = Interpreter(model_path=path, num_threads=threads or os.cpu_count())
        self._input = self._interpreter.get_input_details()[0]["index"]
        # Outputs told apart by shape (their order differs between the files): 39 x 5 image
        # landmarks, 39 x 3 world landmarks, one presence score, the person's segmentation (logits
        # at the input's size); the heatmap is unused.
        by_shape = {tuple(d["shape"][1:]): d["index"] for d in self._interpreter.get_output_details()}
        self._landmarks, self._world, self._presence = by_shape[(195,)], by_shape[(117,)], by_shape[(1,)]
        self._mask = by_shape[(CROP, CROP, 1)]
        self._batch = 0

    def __call__(self, crops: np.ndarray) -> CropPoses:
        """Poses of (N, 256, 256, 3) uint8 RGB crops, N >= 1."""
        n = len(crops)
        if n != self._batch:  # resized only when the batch size changes
            self._interpreter.resize_tensor_input(self._input, [n, CROP, CROP, 3])
            with native_chatter_filtered():  # LiteRT announces its CPU delegate as it allocates
                self._interpreter.allocate_tensors()
            self._batch = n
        self._interpreter.set_tensor(self._input, np.asarray(crops, np.float32) * np.float32(1 / 255))
        self._interpreter.invoke()
        landmarks = self._interpreter.get_tensor(self._landmarks).reshape(n, -1, 5)
        world = self._interpreter.get_tensor(self._world).reshape(n, -1, 3)
        # x, y are in input pixels with 0 at the crop's edge: minus 0.5 for pixel centres.
        points = landmarks[:, :, :2] - 0.5
        mask_logits = self._interpreter.get_tensor(self._mask).reshape(n, CROP, CROP)
        return CropPoses(
            joints2d=points[:, :JOINTS].astype(np.float32),
            visibility=(1 / (1 + np.exp(-landmarks[:, :JOINTS, 3]))).astype(np.float32),
            joints3d=world[:, :JOINTS].astype(np.float32),
            alignment=points[:, JOINTS : JOINTS + 2].astype(np.float32),
            presence=self._interpreter.get_tensor(self._presence).reshape(n).astype(np.float32),
            mask=(255 * expit(mask_logits)).astype(np.uint8),
        )

    def close(self) -> None:
        self._interpreter = None
