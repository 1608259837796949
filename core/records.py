"""The reading layer: every file vlab reads back is parsed into a typed record before it is used.

Configs are validated field by field when they are built (:mod:`vlab.config`); the files a run
or a sweep writes and later reads back (``status.json``, ``metrics.jsonl``, checkpoints,
``sweep.json``, ``submissions.jsonl``, lock files, ``examples.json``) get the same rules here.
A record class is a frozen dataclass whose annotated fields are the keys vlab relies on; other
keys are kept as they are (a later vlab may add some, and metrics lines carry each task's own
numbers). A damaged or foreign file is a :class:`DamagedFile`: one line naming the file, the
field and what to do, never a traceback.

A path component that comes from a file or an argument (a run name in ``sweep.json``, an
evaluation ``--name``, an image in ``examples.json``) is joined to its directory only through
:func:`join_name` (one plain name) or :func:`join_relative` (a relative path that stays inside),
so no file can make vlab read or write outside the directory it belongs to.

Pure Python, no torch: readers of run directories (status, reports) import it cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import reprlib
import types
import typing
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar, get_args, get_origin

from vlab.config import _coerce
from vlab.errors import ConfigError, VlabError

R = TypeVar("R")

MAX_NAME = 200  # characters in one path component vlab creates (filesystems allow 255 bytes)


class DamagedFile(VlabError):
    """A file vlab wrote and reads back is not what vlab writes: truncated, another type, a
    field of the wrong type, a path that escapes. ``path`` and ``field`` say where."""

    def __init__(self, path: str | os.PathLike, field: str | None, problem: str, what_to_do: str):
        self.path = Path(path)
        self.field = field
        where = f"{path}: field '{field}'" if field else f"{path}"
        super().__init__(f"{where}: {problem}; {what_to_do}")


class Real(float):
    """A record field that holds any JSON number, NaN and infinities included (a diverged
    run's loss is written as NaN). Used as an annotation only."""


class NonNegative(int):
    """A record field holding an integer >= 0 (steps, counts). Used as an annotation only."""


def _check(value: Any, tp: Any, field: str) -> Any:
    """``value`` checked against annotation ``tp``: the config rules, plus :class:`Real`
    and :class:`NonNegative`, which configs do not have."""
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _check(value, inner[0], field)
    if tp is Any:
        return value
    if tp is Real:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"expected a number, got {_show(value)}")
        return value
    if tp is NonNegative:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(field, f"expected an integer >= 0, got {_show(value)}")
        return value
    if tp is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(field, f"must be a finite number, got {_show(value)}")
    # The plain types are checked here rather than by the config rules: a bare ``dict`` or
    # ``list`` annotation is checked too, and a message never repeats a megabyte-long value.
    if tp in (str, int, bool) and not _is(value, tp):
        names = {str: "a string", int: "an integer", bool: "true or false"}
        raise ConfigError(field, f"expected {names[tp]}, got {_show(value)}")
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected an object, got {_show(value)}")
        return dict(value)
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {_show(value)}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_check(v, item_tp, f"{field}[{i}]") for i, v in enumerate(value)]
    return _coerce(value, tp, field)


def _is(value: Any, tp: type) -> bool:
    """``isinstance`` where true/false is no integer (JSON tells them apart)."""
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxdict, _SHORT.maxlist, _SHORT.maxtuple = 2, 4, 4, 4
_SHORT.maxstring = _SHORT.maxother = 60


def _show(value: Any) -> str:
    """A short repr for messages: a damaged file may hold megabytes in one field."""
    text = _SHORT.repr(value)  # never the whole repr of a large list or state dict
    return text if len(text) <= 60 else text[:57] + "..."


def parse_record(
    cls: type[R], data: Any, path: str | os.PathLike, what_to_do: str, field: str = ""
) -> R:
    """``data`` (parsed JSON, a checkpoint's dict) as record ``cls``, or :class:`DamagedFile`.

    Every annotated field of ``cls`` is checked for its type; one without a default must be
    present. Keys ``cls`` does not name are kept in its ``extra`` field when it has one.
    ``__post_init__`` may raise :class:`ConfigError` for value rules (a state name, a bound).
    ``field`` prefixes field names in messages (``runs[3].name``).
    """

    def named(key: str) -> str:
        return f"{field}.{key}" if field else key

    if not isinstance(data, dict):
        raise DamagedFile(
            path, field or None, f"expected a JSON object, found {_kind(data)}", what_to_do
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for name, spec in fields.items():
        if name == "extra":
            continue
        if name not in data:
            required = (
                spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
            )
            if required:
                raise DamagedFile(path, named(name), "missing", what_to_do)
            continue
        try:
            kwargs[name] = _check(data[name], hints[name], named(name))
        except ConfigError as e:
            raise DamagedFile(path, e.field, _problem(e), what_to_do) from None
    if "extra" in fields:
        kwargs["extra"] = {k: v for k, v in data.items() if k not in fields}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise DamagedFile(path, named(e.field), _problem(e), what_to_do) from None


def _problem(e: ConfigError) -> str:
    """A ConfigError's message without its "config field 'x': " prefix."""
    return str(e).split(": ", 1)[1] if ": " in str(e) else str(e)


def _kind(data: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false"}
    names.update({int: "a number", float: "a number"})
    if data is None:
        return "null"
    return names.get(type(data), f"a {type(data).__name__}")


def read_json_file(path: str | os.PathLike, what_to_do: str) -> Any:
    """The JSON value in ``path``; a missing, unreadable, non-UTF-8 or invalid file, or a
    directory where the file belongs, is a :class:`DamagedFile` naming it."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise DamagedFile(path, None, "is not a regular file (a directory?)", what_to_do)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise DamagedFile(path, None, "missing", what_to_do) from None
    except UnicodeDecodeError as e:
        raise DamagedFile(path, None, f"not UTF-8 text (byte {e.start})", what_to_do) from None
    except OSError as e:
        raise DamagedFile(path, None, f"cannot be read ({e.strerror})", what_to_do) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DamagedFile(path, None, f"not valid JSON ({e})", what_to_do) from None
    except ValueError:  # an integer of more digits than Python converts
        raise DamagedFile(path, None, "holds a number too long to read", what_to_do) from None
    except RecursionError:
        raise DamagedFile(path, None, "nested too deeply to be vlab's", what_to_do) from None


def read_record(cls: type[R], path: str | os.PathLike, what_to_do: str) -> R:
    """Record ``cls`` read from the JSON file ``path`` (see :func:`parse_record`)."""
    return parse_record(cls, read_json_file(path, what_to_do), path, what_to_do)


def read_record_lines(
    cls: type[R], path: str | os.PathLike, what_to_do: str, *, torn_last_line: bool = True
) -> list[R]:
    """Each line of the JSON-lines file ``path`` as record ``cls``; [] when it is missing.

    A torn last line (no newline at the end and not valid JSON: a writer killed mid-append)
    is dropped when ``torn_last_line``; any other bad line is a :class:`DamagedFile` naming the
    line, so no evaluation or submission is ever skipped silently.
    """
    return [
        parse_record(cls, value, path, what_to_do, field=f"line {number}")
        for number, value in read_json_lines(path, what_to_do, torn_last_line=torn_last_line)
    ]


def read_json_lines(
    path: str | os.PathLike, what_to_do: str, *, torn_last_line: bool = True
) -> list[tuple[int, Any]]:
    """``(line number, JSON value)`` of each line of ``path``, by the rules of
    :func:`read_record_lines`; for readers that check each value themselves and keep it as
    it is (a metrics line stays the dict the report reads)."""
    path = Path(path)
    if not path.exists():
        if path.is_symlink():  # dangling or a loop: lines that are somewhere, not none
            raise DamagedFile(path, None, "is a link that leads nowhere", what_to_do)
        return []
    if not path.is_file():
        raise DamagedFile(path, None, "is not a regular file (a directory?)", what_to_do)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DamagedFile(path, None, f"cannot be read ({e.strerror})", what_to_do) from None
    lines = raw.split(b"\n")
    out: list[tuple[int, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        torn = torn_last_line and i == len(lines) - 1  # no newline after it
        try:
            value = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # bad bytes, bad JSON, a 5,000-digit integer
            if torn:
                continue
            problem = "not UTF-8" if isinstance(e, UnicodeDecodeError) else "not valid JSON"
            raise DamagedFile(path, None, f"line {i + 1} is {problem}", what_to_do) from None
        out.append((i + 1, value))
    return out


# --- names and paths ---------------------------------------------------------------------


def plain_name(value: Any, what: str) -> str:
    """``value`` if it is one plain path component vlab may create; else a VlabError naming
    ``what`` (``run name``, ``--name``). Refused: empty, ``.`` and ``..``, separators, NUL and
    other control characters, a leading dot (hidden, and vlab's own temporary files) or dash
    (read as an option), leading or trailing spaces, more than :data:`MAX_NAME` characters."""
    problem = _name_problem(value)
    if problem:
        raise VlabError(f"{what} {_show(value)} is not a plain name: {problem}")
    return value


def _name_problem(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {_kind(value)}"
    if not value:
        return "it is empty"
    if value in (".", ".."):
        return "it names a directory"
    if "/" in value or "\\" in value:
        return "it holds a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "it holds a control character"
    if value[0] in ".-":
        return f"it starts with {value[0]!r}"
    if value != value.strip():
        return "it starts or ends with a space"
    if len(value) > MAX_NAME:
        return f"it is longer than {MAX_NAME} characters"
    try:  # a lone surrogate (JSON allows "\ud800") cannot be a file name
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    if len(encoded) > MAX_NAME:  # filesystems count bytes: 150 "é" are 300
        return f"it is longer than {MAX_NAME} bytes in UTF-8"
    return None


def join_name(base: str | os.PathLike, name: Any, what: str, suffix: str = "") -> Path:
    """``base / (name + suffix)`` for a ``name`` from a file or an argument: the one place
    such a name meets a directory (see :func:`plain_name`)."""
    return Path(base) / f"{plain_name(name, what)}{suffix}"


def resolved(path: str | os.PathLike) -> Path:
    """``path`` made absolute through its links (``~`` expanded); a loop of symbolic links is a
    :class:`~vlab.errors.VlabError` naming it (a RuntimeError before Python 3.13)."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):
        raise VlabError(f"{path}: leads through a loop of symbolic links") from None


def join_relative(base: str | os.PathLike, relative: Any, what: str) -> Path:
    """``base / relative`` for a relative path read from a file (an image in
    ``examples.json``): refused when absolute, holding ``..``, or resolving (through links)
    outside ``base``."""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise VlabError(f"{what} {_show(relative)} is not a relative path")
    parts = PurePosixPath(relative).parts
    if PurePosixPath(relative).is_absolute() or ".." in parts or "\\" in relative:
        raise VlabError(f"{what} {_show(relative)} must be a path inside {base}")
    try:
        root = Path(base).resolve()
        target = (root / relative).resolve()
    except (RuntimeError, OSError):  # a symbolic link loop (RuntimeError before Python 3.13)
        raise VlabError(f"{what} {_show(relative)} leads through a loop of links") from None
    if target != root and root not in target.parents:
        raise VlabError(f"{what} {_show(relative)} leads outside {base}")
    return Path(base) / relative
