"""One warning per process about a degraded kernel or a missing hook, shared by the ops
(``selective_scan``, ``ssd``) so neither imports the other for it."""

from __future__ import annotations

import warnings

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """Warn about a degraded backend or a missing hook once per process, however often the
    scan runs or models are built (keys must differ between the modules that share this)."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
