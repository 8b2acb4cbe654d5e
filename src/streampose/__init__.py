"""stream-pose: train a 3D human-pose student from a teacher's labels on streamed video."""

__version__ = "0.1.0"
