"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""


class StreamPoseError(Exception):
    """Bad input or a missing dependency: reported to the user without a traceback."""


class DecodeError(StreamPoseError):
    """A video could not be opened or decoded. The message names the source."""


class SourceError(StreamPoseError):
    """A source specification or a fetch failed."""


class TeacherUnavailable(StreamPoseError):
    """A teacher's package, weights or model files are missing; the message says how to get them."""


class ModelFileError(SourceError):
    """A model file or sample clip from the store is missing, cannot be fetched, or is corrupt."""
