"""All dataset readers in one place: ``read_<name>(annotation file(s), image_root, split=...)``.

Each returns an iterator of :class:`~vlab.models.vlm.data.records.VLSample` streamed from the
dataset's own files (nothing is converted or cached); the formats are documented in the family
modules:

* :mod:`~vlab.models.vlm.data.readers.caption`: COCO captions, TextCaps, LLaVA pretraining,
  LLaVA-Instruct, GRIT;
* :mod:`~vlab.models.vlm.data.readers.region`: RefCOCO / RefCOCO+ / RefCOCOg, Visual Genome
  regions, Visual7W pointing;
* :mod:`~vlab.models.vlm.data.readers.qa`: VQAv2, GQA, Visual Genome QA, OCR-VQA, DocVQA,
  InfographicVQA, TextVQA and POPE (evaluation);
* :mod:`~vlab.models.vlm.data.readers.choice`: Visual7W telling, AI2D, A-OKVQA, VSR.
"""

from vlab.models.vlm.data.readers.caption import (
    grit_grounded_caption,
    read_coco_captions,
    read_grit,
    read_llava_instruct,
    read_llava_pretrain,
    read_textcaps,
    strip_image_tag,
)
from vlab.models.vlm.data.readers.choice import (
    read_ai2d,
    read_aokvqa,
    read_visual7w_telling,
    read_vsr,
)
from vlab.models.vlm.data.readers.qa import (
    read_docvqa,
    read_gqa,
    read_infographicvqa,
    read_ocrvqa,
    read_pope,
    read_textvqa,
    read_vg_qa,
    read_vqav2,
)
from vlab.models.vlm.data.readers.region import (
    read_refcoco,
    read_vg_regions,
    read_visual7w_pointing,
)

__all__ = [
    "grit_grounded_caption",
    "read_ai2d",
    "read_aokvqa",
    "read_coco_captions",
    "read_docvqa",
    "read_gqa",
    "read_grit",
    "read_infographicvqa",
    "read_llava_instruct",
    "read_llava_pretrain",
    "read_ocrvqa",
    "read_pope",
    "read_refcoco",
    "read_textcaps",
    "read_textvqa",
    "read_vg_qa",
    "read_vg_regions",
    "read_visual7w_pointing",
    "read_visual7w_telling",
    "read_vqav2",
    "read_vsr",
    "strip_image_tag",
]
