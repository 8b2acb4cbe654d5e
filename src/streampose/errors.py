"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""


class StreamPoseError(Exception):
    """Bad input or a missing dependency: reported to the user without a traceback."""


class DecodeError(StreamPoseError):
    """A video could not be opened or decoded. The message names the source."""


class SourceError(StreamPoseError):
    """A source specification or a fetch failed."""


class TeacherUnavailable(StreamPoseError):
    """A teacher's package, weights or model files are missing; the message says how to get them."""


class RankFailure(RuntimeError):
    """This rank stopped because of an error in a distributed run, often another rank's death (exit 1)."""
