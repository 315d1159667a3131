"""The error raised for bad input: a config, data root or checkpoint that
cannot be used. Its message names the file or setting at fault and, where
there is one, the fix; the tools print it as their one-line error."""


class InputError(ValueError):
    """A config, data root or checkpoint that cannot be used, and why."""


class MissingFileError(InputError, FileNotFoundError):
    """A named file or folder does not exist (also a ``FileNotFoundError``,
    so code that catches the built-in error keeps working)."""
