"""User-facing errors: one line that names the file, row or parameter at fault."""


class TsdsError(Exception):
    """Bad input or an impossible request; the CLI prints it as one line and exits non-zero."""


class InputError(TsdsError, ValueError):
    """A file or array that cannot be used as given."""


class ParameterError(TsdsError, ValueError):
    """A parameter outside its valid range."""
