"""Grounding accuracy against the exact reference box, as SHAKEUP's authors score RefCOCO.

The authors' ``compute_score`` (gpantaz/vl_mamba, ``src/vl_mamba/evaluation/evaluate_refcoco.py``,
commit c788f5f) scales the predicted 0-1 box by the image width and height and counts a hit
when its IoU with the annotation's pixel box (COCO ``[x, y, w, h]`` as corners) is *strictly*
greater than 0.5. Some other evaluators (Qwen-VL's ``evaluate_grounding.py``) use ``>= 0.5``;
the two differ only when the IoU is exactly 0.5. Here likewise:

* the reference is the exact box of the record (``meta["box_xywh"]`` with ``meta["width"]`` and
  ``meta["height"]`` from the region and Visual7W readers, or the target's ``box_px`` in the
  built-in shapes), never the two-decimal text the model is trained to write, which can move a
  small box's IoU across 0.5; a record without one falls back to the text;
* the prediction is the first box :func:`~vlab.models.vlm.data.records.parse_box` finds. For
  well-formed output (``[x1, y1, x2, y2]`` in 0-1, ordered) this is the authors' reading;
  unlike theirs it also reads a box with a missing bracket or extra numbers, and clamps values
  to 0-1 and orders the corners (their code then gives 0 or a signed area).

IoU is computed in pixels in double precision (theirs is float32 torch): the hit can differ
only for an IoU within about 1e-7 of 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vlab.models.vlm.data.records import box_iou, parse_box, xywh_to_xyxy

IOU_THRESHOLD = 0.5

Box = tuple[float, float, float, float]


def exact_box(meta: Mapping[str, Any]) -> tuple[Box, float, float] | None:
    """The reference box in pixel corners and the image width and height, when the record
    carries them; else None."""
    width, height = meta.get("width"), meta.get("height")
    if not (width and height):
        return None
    if meta.get("box_xywh") is not None:
        return xywh_to_xyxy(meta["box_xywh"]), float(width), float(height)
    objects, target = meta.get("objects"), meta.get("target")
    if objects and isinstance(target, int) and "box_px" in objects[target]:
        x1, y1, x2, y2 = (float(v) for v in objects[target]["box_px"])
        return (x1, y1, x2, y2), float(width), float(height)
    return None


def grounding_iou(prediction: str, reference: str, meta: Mapping[str, Any] | None = None) -> float:
    """IoU of the predicted box with the exact reference (pixels), else with the reference
    text; 0 when the prediction holds no box."""
    pred = parse_box(prediction)
    if pred is None:
        return 0.0
    exact = exact_box(meta or {})
    if exact is None:
        ref = parse_box(reference)
        return box_iou(pred, ref) if ref is not None else 0.0
    ref_px, w, h = exact
    return box_iou((pred[0] * w, pred[1] * h, pred[2] * w, pred[3] * h), ref_px)


def grounding_hit(
    prediction: str,
    reference: str,
    meta: Mapping[str, Any] | None = None,
    threshold: float = IOU_THRESHOLD,
) -> bool:
    """Accuracy@0.5 of one answer: IoU strictly above ``threshold``, as the authors' code."""
    return grounding_iou(prediction, reference, meta) > threshold
