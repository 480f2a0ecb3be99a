"""The one exception type whose message is shown to users as a single line."""


class ZooError(Exception):
    """A problem the user can fix (bad name, bad value, missing data); the CLI prints it as one
    line and exits non-zero, without a traceback."""

    exit_code = 2


class RunDiverged(ZooError):
    """Training produced a non-finite loss; the run is recorded as `diverged`."""

    exit_code = 3


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a library's multi-line message would break ours)."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
