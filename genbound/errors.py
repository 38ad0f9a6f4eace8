"""Errors the command line reports in one line, without a traceback.

- :class:`UserInputError`: bad input, the user's to fix (a file, an array, an option, a config
  value, an output path that is a folder or lies below a file). Reported as
  ``genbound <command>: error: <message>`` with exit code 2.
- :class:`OutputError`: the system refused to write a result (disk full, file size limit,
  permission, read-only file system, I/O error). Not the user's mistake, but reported the same
  way, naming the path, with exit code :data:`EXIT_OUTPUT` = 74 (``EX_IOERR`` of sysexits.h,
  distinct from 1 = a check or study that ran but failed). No partial file is left at the path
  (see :mod:`genbound.fileio`).
- :class:`PeerError`: under ``torchrun``, another rank failed with an error that is not one of
  the above (that rank reports it in full); rank 0 reports it in one line, exit code 1.
"""

EXIT_USER = 2
EXIT_OUTPUT = 74


class UserInputError(ValueError):
    """Bad input from the user (file, array, option, config value); the message says how to fix it."""


class OutputError(RuntimeError):
    """A result could not be written by the system (disk full, permission ...); the message names the path."""


class PeerError(RuntimeError):
    """Another rank of a process group failed (``torchrun``); the message names the rank and its error."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (at most ``limit`` characters), for a one-line error."""
    return (str(exc).strip().splitlines() or [""])[0][:limit]
