"""Atomic file writes and crash-safe JSON-lines appends.

Every result file of a run is either written whole (temp file + fsync + rename) or appended
one complete line at a time, so a run killed at any instant leaves files that the next step
(resume, analysis) can read: at worst a torn last line, which readers drop.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_json_object(path: str | os.PathLike, what_to_do: str) -> dict:
    """A JSON object that a vlab step wrote (config, status, sweep files). A file that is not
    valid JSON or not an object is a :class:`~vlab.errors.VlabError` naming it and saying
    ``what_to_do``, never a traceback."""
    from vlab.errors import VlabError

    try:
        data = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VlabError(f"{path}: corrupt JSON ({e}); {what_to_do}") from None
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise VlabError(f"{path}: expected a JSON object, found a {kind}; {what_to_do}")
    return data


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON object as one line, flushed and fsynced before returning.

    A single ``write`` of a complete line keeps appends whole in practice; if the process dies
    mid-write, :func:`read_jsonl` drops the torn last line.
    """
    line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike, *, strict: bool = False) -> list[dict]:
    """Read a JSON-lines file, dropping a torn (unterminated, unparsable) last line.

    A corrupt line anywhere else is an error with ``strict=True`` and skipped otherwise, so
    analysis of a live run never fails on a line being written.
    """
    path = Path(path)
    if not path.exists():
        return []
    records: list[dict] = []
    lines = path.read_text(encoding="utf-8").split("\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == last:  # torn final line of a killed writer
                continue
            if strict:
                from vlab.errors import VlabError

                raise VlabError(f"{path}: line {i + 1} is not valid JSON ({e})") from e
    return records


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Atomically replace a JSON-lines file with ``records``."""
    text = "".join(json.dumps(r, sort_keys=True, allow_nan=True) + "\n" for r in records)
    atomic_write_text(path, text)
