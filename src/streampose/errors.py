"""Errors the command line reports as one line on stderr and an exit status, never a traceback.

Each carries its exit status, so `cli.main` has one handler: 2 for what the user can fix (bad
input, a missing dependency), 1 for a run that failed while running.
"""


class ReportedError(Exception):
    """Base of every error the CLI reports as `error: <message>` and `exit_code`."""

    exit_code = 1


class StreamPoseError(ReportedError):
    """Bad input or a missing dependency: reported to the user without a traceback."""

    exit_code = 2


class DecodeError(StreamPoseError):
    """A video could not be opened or decoded. The message names the source."""


class SourceError(StreamPoseError):
    """A source specification or a fetch failed."""


class TeacherUnavailable(StreamPoseError):
    """A teacher's package, weights or model files are missing; the message says how to get them."""


class ModelFileError(SourceError):
    """A model file or sample clip from the store is missing, cannot be fetched, or is corrupt."""


class ProducerError(ReportedError, RuntimeError):
    """A producer failed; raised in the consumer so the failure is not silently a stall."""

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        """The user's mistake (a bad source, a missing teacher) when that is what the producer hit."""
        return 2 if isinstance(self.__cause__, StreamPoseError) else 1


class RankFailure(ReportedError, RuntimeError):
    """This rank stopped because of an error in a distributed run, often another rank's death."""
