"""The VLM data layer: one record type, dataset readers, filters, packing, the shapes dataset.

Pipeline (each step a plain function over iterables of :class:`VLSample`)::

    readers.read_<dataset>(...)          -> VLSample per example (images as paths)
    filters.filter_<dataset>(...)        -> the spec's subsets (VG, GRIT, OCR-VQA)
    multiple_choice.expand_rotations(...) -> correct option at every letter
    packing.pack_samples(...)            -> several pairs per sequence, capped and length-limited
    mixture.mixture_order(...)           -> one deterministic shuffle over all sources

``shapes.shapes_samples(cfg, split, n)`` is the offline stand-in for all of it: rendered
scenes with exact ground truth for every task, so the summary-vs-retrieval comparison runs on a
CPU. Sequence assembly (tokens, image markers, label masks) is
:mod:`vlab.models.vlm.sequence`; the instruction of a task is
:func:`instructions.instruction_for`.
"""

from vlab.models.vlm.data.instructions import INSTRUCTIONS, instruction_for
from vlab.models.vlm.data.records import (
    PACK_KEY,
    TASKS,
    Turn,
    VLSample,
    box_iou,
    format_box,
    format_norm_box,
    parse_box,
)

__all__ = [
    "INSTRUCTIONS",
    "PACK_KEY",
    "TASKS",
    "Turn",
    "VLSample",
    "box_iou",
    "format_box",
    "format_norm_box",
    "instruction_for",
    "parse_box",
]
