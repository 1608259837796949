"""vlm-shapes: Pythia-VL vs Mamba-VL, task-agnostic vs task-aware, 3 seeds, on a CPU.

The VLM question of both papers at a size two CPU cores finish in about 20 minutes (12 runs, 2
local workers): the ``tiny-shapes`` preset (tiny LMs, the raw-patch encoder) on the built-in
shapes dataset, scored per task on held-out scenes, so the report's Table 1/2 groups the
summary tasks (caption, VQA) against the retrieval tasks (grounding: name the box of one
object; dense caption: name the object in one box) and Table 11 pairs the orderings by seed.

What differs from ``tiny-shapes``, and why (measured in session 8, on both arms alike):

* 48 px scenes of at most 3 objects of 12-19 px (a 6 x 6 patch grid, 36 visual tokens instead
  of 64): the shorter sequence makes a step cheaper, so more of them fit; objects of 8-14 px
  gave the same scores but for grounding (0.00-0.05 against 0.05-0.07 at 1,500-2,000 steps).
* Four tasks, not six: image-text matching and POPE stayed at chance (every answer "no") for
  both tiny LMs after 1,500 steps of the six-task mixture at 64 px (Pythia-VL also after 2,000
  at 48 px), and Pythia-VL's even after 800 steps of POPE or ITM alone (held-out loss flat at
  ln 2 / 2 per answer token). Left in, they would take a third of every batch and score 0.5;
  ``vlm-tiny-shapes`` keeps all six.
* 1,200 stage-2 steps (100 of stage 1), one CPU thread per run, 240 held-out scenes (60 per
  task) evaluated every 300 steps. The whole sweep took 11.5 min with 2 local workers on a
  quiet 2-core machine (Pythia-VL runs about 1.5 min, Mamba-VL about 2.5), which leaves room
  for slower CPUs; the held-out curves of caption and grounding still rise at the end.

Seeds change the initialisation of stage 1 (the LM, the connector) and stage 2's random
stream; the data (``data.shapes.seed``) is the same scenes in every run, so that the
orderings and arms see identical examples.
"""

from vlab.slurm.spec import SweepSpec

SEEDS = (0, 1, 2)
_TRAIN = {"threads": 1}

SPEC = SweepSpec(
    name="vlm-shapes",
    kind="vlm",
    description="Tiny Pythia-VL vs Mamba-VL on 48 px shapes scenes (caption, VQA, grounding, "
    "dense caption), task-agnostic vs task-aware, 3 seeds; about 12 min on 2 cores.",
    base={
        "preset": "tiny-shapes",
        "model": {"vision": {"image_size": 48}},
        "data": {
            "shapes": {
                "image_size": 48,
                "max_objects": 3,
                "min_object_frac": 0.25,
                "max_object_frac": 0.4,
                "tasks": ["caption", "vqa", "grounding", "dense_caption"],
            },
            "n_heldout": 240,
        },
        "stage1": {**_TRAIN, "steps": 100},
        "stage2": {**_TRAIN, "steps": 1200, "eval_every": 300},
    },
    axes={
        "model.lm.arch": ["pythia", "mamba"],
        "model.sequence.ordering": ["task_agnostic", "task_aware"],
    },
    runs=[{"stage1.seed": s, "stage2.seed": s} for s in SEEDS],
    name_keys=["model.lm.arch", "model.sequence.ordering", "stage1.seed"],
)
