"""Exceptions for bad input: the library raises them with one line saying what to do."""


class ZiCoUserError(ValueError):
    """Bad input (a file, an argument, a batch, a model): the CLI prints the message and exits 2."""


class DataError(ZiCoUserError):
    """Data that cannot be read or used: names the file or batch, and what was expected."""
