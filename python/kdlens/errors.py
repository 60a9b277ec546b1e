"""The one error type kdlens raises for bad input: the message says what is wrong and how to fix it.

The CLI prints a KdlensError as ``kdlens: error: <message>`` and exits with status 2, without a
traceback; any other exception is a bug and keeps its traceback.
"""


class KdlensError(Exception):
    """Bad input or configuration, explained in words a user can act on."""
