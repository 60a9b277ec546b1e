"""The one error type kdlens raises for bad input: the message says what is wrong and how to fix it.

The CLI prints a KdlensError as ``kdlens: error: <message>`` and exits with status 2, without a
traceback; any other exception is a bug and keeps its traceback.
"""


class KdlensError(Exception):
    """Bad input or configuration, explained in words a user can act on."""


# the characters str.splitlines breaks a line at
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(message: object) -> str:
    """``message`` as one line, for ``kdlens: error: ...``: each line break in it (a file's own bytes
    can carry a form feed or a line separator into a message) written as its escape, e.g. ``\\x0c``."""
    return str(message).strip().translate(_LINE_BREAKS)
