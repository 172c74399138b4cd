"""One exception type for every user-facing error.

The CLI prints ``PespotError`` messages as one line on stderr and exits non-zero; anything else is a bug
and keeps its traceback.
"""


class PespotError(Exception):
    """A clear, one-line error about the user's input: names the file, video or key and what was expected."""


class ConfigError(PespotError):
    """A bad configuration key, value or combination."""


class DataError(PespotError):
    """A bad label file, frame store or video."""
