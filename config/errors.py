"""The root of lienthong's exception tree, and the configuration's own error.

They live here, not in `lienthong.sync.errors`, for one reason: `config/` may import
nothing of the rest of the project, yet its errors belong to the one tree. So the
root sits in this dependency-free module, which every layer may import, and
`lienthong.sync.errors` re-exports both and draws the whole tree. Import them from
there; only `config/` itself imports this module.
"""

from __future__ import annotations


class LienthongError(Exception):
    """An expected failure, told to the operator in one sentence and a hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(LienthongError):
    """The configuration file is missing or has bad values; the message names the field path and the value."""
