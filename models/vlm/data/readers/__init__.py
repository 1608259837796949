"""All dataset readers in one place: ``read_<name>(annotation file(s), image_root, split=...)``.

Each returns an iterator of :class:`~vlab.models.vlm.data.records.VLSample` streamed from the
dataset's own files (nothing is converted or cached, except AI2D's lettered diagrams, drawn
once where the dataset's ``abc_images`` lacks one); the formats are documented in the family
modules:

* :mod:`~vlab.models.vlm.data.readers.caption`: COCO captions (2017 files or Karpathy's
  split), NoCaps, TextCaps, LLaVA pretraining, LLaVA-Instruct, LVIS-Instruct4V,
  LRV-Instruction, GRIT;
* :mod:`~vlab.models.vlm.data.readers.region`: RefCOCO / RefCOCO+ / RefCOCOg, Visual Genome
  regions, Visual7W pointing;
* :mod:`~vlab.models.vlm.data.readers.qa`: VQAv2, GQA, Visual Genome QA, OCR-VQA, DocVQA,
  InfographicVQA, and (evaluation) TextVQA, POPE, VizWiz, TallyQA;
* :mod:`~vlab.models.vlm.data.readers.choice`: Visual7W telling, AI2D (with its lettered
  diagrams), A-OKVQA, VSR.
"""

from vlab.models.vlm.data.readers.caption import (
    grit_grounded_caption,
    read_coco_captions,
    read_coco_karpathy,
    read_grit,
    read_llava_instruct,
    read_llava_pretrain,
    read_lrv_instruct,
    read_lvis_instruct4v,
    read_nocaps,
    read_textcaps,
    strip_image_tag,
)
from vlab.models.vlm.data.readers.choice import (
    ai2d_letter_image,
    draw_text_labels,
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
    read_tallyqa,
    read_textvqa,
    read_vg_qa,
    read_vizwiz,
    read_vqav2,
)
from vlab.models.vlm.data.readers.region import (
    read_refcoco,
    read_vg_regions,
    read_visual7w_pointing,
)

__all__ = [
    "ai2d_letter_image",
    "draw_text_labels",
    "grit_grounded_caption",
    "read_ai2d",
    "read_aokvqa",
    "read_coco_captions",
    "read_coco_karpathy",
    "read_docvqa",
    "read_gqa",
    "read_grit",
    "read_infographicvqa",
    "read_llava_instruct",
    "read_llava_pretrain",
    "read_lrv_instruct",
    "read_lvis_instruct4v",
    "read_nocaps",
    "read_ocrvqa",
    "read_pope",
    "read_refcoco",
    "read_tallyqa",
    "read_textcaps",
    "read_textvqa",
    "read_vg_qa",
    "read_vg_regions",
    "read_visual7w_pointing",
    "read_visual7w_telling",
    "read_vizwiz",
    "read_vqav2",
    "read_vsr",
    "strip_image_tag",
]
