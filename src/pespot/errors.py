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


class OutputError(PespotError):
    """An output path that cannot be created: a folder where a file is expected (or the reverse), a path under a
    file, a folder that is not writable."""


def require_keys(obj: object, keys: tuple[str, ...], where: str) -> dict:
    """``obj`` when it is a JSON object holding every key of ``keys``; else a DataError naming ``where``."""
    if not isinstance(obj, dict):
        wanted = " and ".join(f"'{k}'" for k in keys)
        raise DataError(f"{where}: expected an object with {wanted}, got {type(obj).__name__}")
    for key in keys:
        if key not in obj:
            raise DataError(f"{where}: missing key '{key}'")
    return obj
