"""File helpers shared by the readers: JSON / JSON-lines / pickle loading, image paths and sizes.

Every failure becomes a :class:`~vlab.errors.VlabError` naming the file and what looks wrong,
so a wrong path or a file of another format fails with a message, not a KeyError deep inside a
reader.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image

from vlab.errors import ConfigError, VlabError

PathLike = str | os.PathLike


def load_json(path: PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise VlabError(f"annotation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise VlabError(f"{path} is not valid JSON ({e})") from None


def load_jsonl(path: PathLike) -> Iterator[dict]:
    """Rows of a JSON-lines file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise VlabError(f"annotation file {path} does not exist")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise VlabError(f"{path}:{n} is not valid JSON ({e})") from None


class _DataOnlyUnpickler(pickle.Unpickler):
    """Refuses every class or function: the RefCOCO pickles hold only lists, dicts and strings,
    so nothing in them needs code, and a tampered file cannot run any."""

    def find_class(self, module: str, name: str) -> Any:
        raise VlabError(f"refusing to load {module}.{name} from a data pickle")


def load_pickle(path: PathLike) -> Any:
    """A data-only pickle (Python 2 strings decoded as UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise VlabError(f"annotation file {path} does not exist")
    data = path.read_bytes()
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), encoding="utf-8", errors="replace").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise VlabError(f"{path} is not a readable pickle ({e})") from None


class ImageLocator(os.PathLike):
    """Where a dataset's relative image paths lie on disk, when not all under one folder.

    ``folders`` maps a leading part of the dataset's path to the folder holding what follows it
    (the longest match wins): TallyQA's ``"VG_100K_2/1.jpg"`` with ``{"VG_100K_2":
    "/d/vg/VG_100K_2"}`` is ``/d/vg/VG_100K_2/1.jpg``; LLaVA-665K's ``"ocr_vqa/images/1.jpg"``
    with ``{"ocr_vqa/images": "/d/ocrvqa/images"}`` is ``/d/ocrvqa/images/1.jpg``. A path no
    prefix matches is joined to ``root``. ``more_roots`` are further folders tried in order for
    a path not under ``root`` (VSR names COCO 2017 files without saying whether they are in
    ``train2017`` or ``val2017``); a file found nowhere keeps the ``root`` path, so loading it
    names the place it was expected. Each folder is listed once, on first use.

    It stands in for the image root given to a reader (``os.fspath`` of it is ``root``):
    :func:`image_path` asks it.
    """

    def __init__(
        self,
        root: PathLike,
        folders: dict[str, str] | None = None,
        more_roots: tuple[str, ...] | list[str] = (),
    ):
        self.root = Path(root)
        self.folders = {
            tuple(PurePosixPath(k).parts): Path(v) for k, v in sorted((folders or {}).items())
        }
        self.more_roots = [Path(r) for r in more_roots]
        self._listed: dict[Path, set[str]] = {}

    def __fspath__(self) -> str:
        return str(self.root)

    def _has(self, folder: Path, relative: str) -> bool:
        if "/" in relative:
            return (folder / relative).is_file()
        if folder not in self._listed:
            self._listed[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        return relative in self._listed[folder]

    def path(self, relative: str) -> str:
        parts = PurePosixPath(relative).parts
        for n in range(len(parts) - 1, 0, -1):
            if parts[:n] in self.folders:
                return str(self.folders[parts[:n]].joinpath(*parts[n:]))
        if self.more_roots and not self._has(self.root, relative):
            for folder in self.more_roots:
                if self._has(folder, relative):
                    return str(folder / relative)
        return str(self.root / relative)


def image_path(image_root: PathLike | ImageLocator, relative: str) -> str:
    """The dataset's relative image path joined to the image root given to the reader (or
    placed by an :class:`ImageLocator`)."""
    if isinstance(image_root, ImageLocator):
        return image_root.path(relative)
    return str(Path(image_root) / relative)


def image_size(path: PathLike) -> tuple[int, int]:
    """(width, height) from the image header (the pixels are not decoded)."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise VlabError(f"image {path} does not exist (needed for its size)") from None
    except OSError as e:
        raise VlabError(f"cannot read image {path} ({e})") from None


def check_split(split: str, allowed: tuple[str, ...]) -> str:
    if split not in allowed:
        raise ConfigError("split", f"{split!r} is not one of {', '.join(allowed)}")
    return split


@contextlib.contextmanager
def format_errors(path: PathLike, what: str) -> Iterator[None]:
    """Turn a missing field or a wrongly shaped record into a VlabError naming the file."""
    try:
        yield
    except KeyError as e:
        raise VlabError(f"{path} does not look like {what}: a record has no field {e}") from None
    except (TypeError, ValueError, IndexError, AttributeError) as e:
        raise VlabError(f"{path} does not look like {what}: {e}") from None
