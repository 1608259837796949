"""paper-finetune: SHAKEUP's Figure 3, finetuning stage-2 VLMs on one task at higher resolution.

From each arm's stage-2 run (the 1.4B task-agnostic runs of a ``paper-vlm`` sweep), finetune
on VQAv2 for 1 epoch and on RefCOCOg (grounding) for 3 epochs at 336, 448, 476 and 560 px,
lr in {1e-5, 5e-5, 1e-4}, batch 64, AdamW, cosine decay, warmup ratio 0.03, then score
VQAv2 val (VQA score) and RefCOCOg val (accuracy at IoU >= 0.5) at the same resolution
(``eval/heldout/``, the sets followed during training), and RefCOCOg test, the split the paper
reports, as a phase of its own (``eval/refcocog_test/``; VQAv2's reported split is val itself):
2 arms x 4 resolutions x 3 learning rates x 2 tasks = 48 runs (GPU). 336 px is the
resolution stage 2 trained at: the finetuning gain without more visual tokens.

Resolutions: EVA-02-L/14 has 14 px patches, so the paper's 480 px is not a multiple of the
patch: the patch convolution would cut the last 4 px of every image off and give the grid of
476 px (34 x 34). We run 476 px: the same grid and token count, the whole image seen, boxes
addressing exactly what the model sees. 560 px is 40 x 40 patches: 1,642 image tokens in the
paper layout, max_length 1024 + 1040 = 2064 (more than Pythia's 2048 trained positions).

Where things are comes from two environment variables, as for ``paper-vlm``:

* ``VLAB_DATA``: the paper's datasets (``vlab.models.vlm.data.paper_data``'s layout), for the
  VQAv2 / RefCOCOg training and validation files;
* ``VLAB_VLM_SWEEP``: the ``paper-vlm`` sweep directory; each arm starts from its
  ``runs/<arch>-1.4b-task_agnostic`` run (override one with
  ``--set-arch ARCH:source=RUN``). Its stage 2 must be finished when a finetune starts.
"""

from __future__ import annotations

from pathlib import Path

from vlab.slurm.spec import SweepSpec, environment

ARCHS = ["pythia", "mamba"]
RESOLUTIONS = [336, 448, 476, 560]
LRS = [1e-5, 5e-5, 1e-4]
TASKS = [{"task": "vqav2", "epochs": 1}, {"task": "refcocog", "epochs": 3}]


def sweep() -> SweepSpec:
    """The spec, with the data root and the source runs read from the environment."""
    env = environment(
        "paper-finetune",
        {
            "VLAB_DATA": "the paper's datasets in vlab.models.vlm.data.paper_data's layout",
            "VLAB_VLM_SWEEP": "the paper-vlm sweep directory whose 1.4B task-agnostic runs are "
            "finetuned",
        },
    )
    runs = Path(env["VLAB_VLM_SWEEP"]) / "runs"
    return SweepSpec(
        name="paper-finetune",
        kind="vlm-finetune",
        description="SHAKEUP Fig. 3: stage-2 Pythia-VL / Mamba-VL 1.4B finetuned on VQAv2 "
        "(1 epoch) and RefCOCOg (3 epochs) at 336-560 px x 3 lrs, batch 64 (GPU).",
        base={
            "data_root": env["VLAB_DATA"],
            "train": {"batch_size": 64, "warmup_ratio": 0.03, "eval_fraction": 0.1},
        },
        axes={"arch": ARCHS, "resolution": RESOLUTIONS, "train.lr": LRS},
        runs=TASKS,
        per_arch={arch: {"source": str(runs / f"{arch}-1.4b-task_agnostic")} for arch in ARCHS},
        name_keys=["arch", "task", "resolution", "train.lr"],
    )
