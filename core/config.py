"""Typed, validated dataclass configs that round-trip through JSON.

Each component owns a small dataclass whose ``__post_init__`` validates its own fields and
raises :class:`~vlab.errors.ConfigError` naming the field. :func:`from_dict` builds nested
configs from plain dicts (a JSON file, CLI overrides), rejecting unknown keys and wrong types
with the dotted path of the field, so a typo fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from vlab.errors import ConfigError

T = TypeVar("T")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _coerce(value: Any, tp: Any, field: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widened to floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, field)
            except ConfigError as e:
                errors.append(e)
        if len(errors) == 1:  # ``X | None``: X's own message says what is wrong
            raise errors[0]
        raise ConfigError(field, f"{value!r} does not match {tp}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(field, f"{value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=field)
    if tp in (dict, list, tuple):  # a bare annotation: the container type, items unchecked
        origin = tp
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(field, f"expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{field}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(field, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(field, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(field, f"must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(field, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursing into nested dataclass fields.

    Unknown keys and type mismatches raise :class:`ConfigError` with the dotted field path;
    validation errors from a nested ``__post_init__`` get the same prefix.
    """
    if not isinstance(data, dict):
        raise ConfigError(prefix or cls.__name__, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(_join(prefix, unknown[0]), f"unknown key (known keys: {known})")
    kwargs = {k: _coerce(v, hints[k], _join(prefix, k)) for k, v in data.items()}
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise ConfigError(_join(prefix, missing[0]), "is required (it has no default)")
    try:
        return cls(**kwargs)
    except ConfigError as e:
        if prefix and not e.field.startswith(prefix + "."):
            raise ConfigError(_join(prefix, e.field), str(e).split(": ", 1)[1]) from None
        raise


def to_dict(cfg: Any) -> dict:
    """The JSON-ready dict of a (nested) dataclass config, every default written out.

    Round-tripped through JSON so tuples become lists: the dict compares equal to the one read
    back from ``config.json``.
    """
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def deep_merge(base: dict, override: dict, prefix: str = "") -> dict:
    """``base`` updated by ``override``, merging nested mappings key by key.

    A section (mapping) and a plain value under the same key is an error naming the key
    (``--set train=5`` next to ``--steps``, say): silently keeping either would drop what
    the user wrote. None on either side replaces the other (``vision2: null`` drops a part).
    """
    out = dict(base)
    for k, v in override.items():
        here = _join(prefix, k)
        old = out.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            out[k] = deep_merge(old, v, here)
            continue
        if old is not None and v is not None and isinstance(v, dict) != isinstance(old, dict):
            section, value = (here, old) if isinstance(v, dict) else (here, v)
            raise ConfigError(
                section,
                f"is a section of settings, not a value (got {value!r}); "
                f"set its fields instead, e.g. --set {section}.FIELD=VALUE",
            )
        out[k] = v
    return out


def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the keys whose values differ between two nested dicts."""
    out = []
    for k in sorted(set(a) | set(b)):
        path = _join(prefix, k)
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(diff(va, vb, path))
        elif va != vb:
            out.append(path)
    return out


def parse_key_values(items: list[str] | None, flag: str = "--set") -> dict:
    """``["lr=3e-3", "name=x"]`` -> ``{"lr": 0.003, "name": "x"}``: values parsed as JSON
    when they are JSON (numbers, true/false, lists, objects), kept as strings otherwise."""
    from vlab.errors import VlabError

    out: dict = {}
    for item in items or []:
        if "=" not in item:
            raise VlabError(f"{flag} expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
        except (ValueError, RecursionError) as e:  # a 5,000-digit number, [[[[...]]]]
            said = str(e) or "nested too deeply"
            raise VlabError(
                f"{flag} {key.strip()}: the value cannot be read ({said[:200]})"
            ) from None
    return out


def nest(flat: dict, prefix: str = "") -> dict:
    """``{"train.lr": 1, "task": {"length": 8}}`` -> ``{"train": {"lr": 1}, "task": {...}}``:
    dotted keys become nested sections; sections named twice are merged.

    A key given both a value and settings under it (``--set a=1 --set a.b=2``, in either
    order) is a ConfigError naming it: keeping either would silently drop the other.
    """
    out: dict = {}
    for key, value in flat.items():
        parts = key.split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(_join(prefix, key), "is not a dotted field name (an empty part)")
        if isinstance(value, dict):
            value = nest(value, _join(prefix, key))
        *parents, leaf = parts
        node, path = out, prefix
        for p in parents:
            path = _join(path, p)
            if p in node and not isinstance(node[p], dict):
                raise _value_and_section(path, node[p], _join(prefix, key))
            node = node.setdefault(p, {})
        here = _join(path, leaf)
        if leaf in node and isinstance(node[leaf], dict) != isinstance(value, dict):
            section, plain = (
                (node[leaf], value)
                if isinstance(node[leaf], dict)
                else (
                    value,
                    node[leaf],
                )
            )
            inner = f"{here}.{next(iter(section))}" if section else f"{here} as {{}}"
            raise _value_and_section(here, plain, inner)
        both = isinstance(value, dict) and isinstance(node.get(leaf), dict)
        node[leaf] = deep_merge(node[leaf], value, here) if both else value
    return out


def _value_and_section(field: str, value: Any, inner: str) -> ConfigError:
    return ConfigError(
        field,
        f"given both a value ({value!r}) and settings under it ({inner}); give one or the other",
    )


def parse_assignments(items: list[str], flag: str = "--set") -> dict:
    """``["train.lr=3e-3", "task.variant=prefix"]`` -> a nested dict (see
    :func:`parse_key_values` for how values are read)."""
    return nest(parse_key_values(items, flag))


def cli_overrides(config_file: str | None, assignments: list[str] | None) -> dict:
    """What ``--config FILE`` (JSON, nested like config.json) and ``--set k=v`` describe,
    the assignments winning; a missing or malformed file is a clear error."""
    from pathlib import Path

    from vlab.errors import VlabError
    from vlab.fileio import read_json

    data: dict = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise VlabError(f"--config {path}: no such file")
        try:
            data = read_json(path)
        except (ValueError, RecursionError) as e:  # bad bytes or JSON, a 5,000-digit number
            said = str(e) or "nested too deeply"
            raise VlabError(f"--config {path}: not valid JSON ({said[:200]})") from None
        if not isinstance(data, dict):
            raise VlabError(
                f"--config {path}: expected a JSON object nested like config.json "
                f'({{"train": {{"lr": 0.001}}}}), found a {type(data).__name__}'
            )
    return deep_merge(data, parse_assignments(assignments or []))


def output_dir(value: str, flag: str = "--out") -> str:
    """A directory a command will create or resume: a non-empty path, not the current
    directory by accident (``--out ''`` or ``--out .`` would fill it with run files)."""
    from pathlib import Path

    if not value.strip():
        raise ConfigError(flag, f"{value!r} is not a directory to create; name a new folder")
    try:
        here = Path(value).resolve() == Path.cwd().resolve()
    except (RuntimeError, OSError):  # a symbolic link loop (RuntimeError before Python 3.13)
        raise ConfigError(flag, f"{value!r} leads through a loop of symbolic links") from None
    if here:
        raise ConfigError(flag, f"{value!r} is not a directory to create; name a new folder")
    return value


# argparse types: every numeric flag says its range, and 0 never quietly means "all" --------


def bounded_int(lo: int | None = 1, hi: int | None = None):
    """An argparse ``type=`` for an integer in ``[lo, hi]`` (None: unbounded on that side); a
    value outside is refused by argparse naming the flag and the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse_error(f"expected an integer {_range(lo, hi)}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse_error(f"must be an integer {_range(lo, hi)}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def bounded_float(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    """An argparse ``type=`` for a finite float in ``[lo, hi]`` (``lo_open``: ``> lo``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse_error(f"expected a number, got {text!r}") from None
        low = lo is not None and (value <= lo if lo_open else value < lo)
        if not math.isfinite(value) or low or (hi is not None and value > hi):
            where = f"> {lo:g}" if lo_open else (f">= {lo:g}" if lo is not None else "")
            where = " and ".join(w for w in (where, f"<= {hi:g}" if hi is not None else "") if w)
            raise argparse_error(
                f"must be a finite number{' ' + where if where else ''}, got {text!r}"
            )
        return value

    parse.__name__ = "number"
    return parse


def _range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"from {lo} to {hi}"
    if lo is not None:
        return f">= {lo}"
    if hi is not None:
        return f"<= {hi}"
    return ""


def argparse_error(message: str) -> Exception:
    import argparse

    return argparse.ArgumentTypeError(message)


positive_int = bounded_int(1)


def setting(config: dict, dotted: str) -> Any:
    """The value at ``dotted`` (``train.steps``) of a config as plain data (a run's, from
    sweep.json or config.json), or None where the config does not hold it (an earlier or a
    foreign config: a status line must show, whatever the config's shape; the run's trainer
    validates it in full)."""
    node: Any = config
    for key in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
