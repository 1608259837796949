"""The one exception type users see: its message names the field or file and what to do."""

from __future__ import annotations


class VlabError(Exception):
    """An error caused by the user's input or files, printed by the CLI without a traceback."""


class ConfigError(VlabError):
    """An invalid configuration value, raised before any work starts.

    ``field`` is the dotted path of the offending key (``train.lr``, ``task.length``), so the
    message tells the user exactly what to change.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field '{field}': {message}")
