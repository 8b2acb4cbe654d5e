"""stream-pose: train a 3D human-pose student from a teacher's labels on streamed video."""

import os

# onnxruntime (1.29 and later) records usage events in ~/.cache/Microsoft/DeveloperTools, leaves a
# session file in TMPDIR and uploads the events. A tool that promises to write nothing but what it
# is asked for turns that off before anything imports onnxruntime; a user can set it to 0.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
