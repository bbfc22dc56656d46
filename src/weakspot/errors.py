"""Exceptions a user can cause. Each message says what was wrong and what to do.

Tracebacks are for bugs; anything raised because of user input (a file, a
parameter, a config) is a :class:`WeakspotError` and the CLI prints its message.
"""

from __future__ import annotations


class WeakspotError(Exception):
    """Base class of every error caused by user input."""


class InvalidParameterError(WeakspotError, ValueError):
    """A parameter is outside its valid range or of the wrong type."""

    def __init__(self, name: str, value: object, valid: str, hint: str = "") -> None:
        self.name, self.value, self.valid = name, value, valid
        msg = f"invalid value for '{name}': {value!r}; valid: {valid}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


class InvalidImageError(WeakspotError, ValueError):
    """An image tensor or file cannot be used (shape, dtype, NaN, range, decoding)."""


class UnknownNameError(WeakspotError, KeyError):
    """A registry name (degradation, model, data source) does not exist."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        msg = f"unknown {kind} '{name}'"
        if close:
            msg += f"; did you mean: {', '.join(close)}?"
        else:
            msg += f"; run 'weakspot list' to see the {len(known)} available"
        self.kind, self.name = kind, name
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(WeakspotError):
    """A configuration file is missing, unreadable or fails validation."""


class DataError(WeakspotError):
    """A data set cannot be read (missing folder, bad labels, empty)."""


class ModelLoadError(WeakspotError):
    """A model or its weights cannot be loaded."""
