"""The one exception type the CLI turns into a one-line error."""


class InterpError(Exception):
    """A user-facing error: bad input, a missing or corrupted file, a refused operation.

    The CLI prints ``interp: error: <message>`` and exits non-zero; no traceback.
    """
