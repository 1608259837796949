"""vlm-finetune-shapes: ``paper-finetune`` at CPU size, on the built-in shapes dataset.

From each arm's ``vlm-tiny-shapes`` run (task-agnostic), finetune on one task at 64, 96 and
128 px (the tiny preset's 8 px patches: 8 x 8, 12 x 12 and 16 x 16 visual tokens; 64 px is the
resolution stage 2 trained at) with three learning rates around stage 2's 2e-3, batch 64,
150 steps, AdamW, cosine, warmup 0.03, then score the task's held-out scenes at the same
resolution. Tasks: ``vqa`` (summary: colour, shape, counts) and ``grounding`` (retrieval:
one object's box), the split the papers study. 4 arms x 3 resolutions x 3 lrs x 2 tasks = 72
runs of one to four minutes each on a CPU core (at 128 px about one step a second), some
three hours in all. Scenes are rendered at the finetune's resolution.

``VLAB_VLM_SWEEP`` names the ``vlm-tiny-shapes`` sweep directory whose
``runs/<arch>-task_agnostic`` runs are finetuned (or give each arm's run with
``--set-arch ARCH:source=RUN``).
"""

from __future__ import annotations

from pathlib import Path

from vlab.slurm.spec import SweepSpec, environment

ARCHS = ["pythia", "mamba", "mamba2", "hybrid"]


def sweep() -> SweepSpec:
    """The spec, with the source runs read from the environment."""
    env = environment(
        "vlm-finetune-shapes",
        {
            "VLAB_VLM_SWEEP": "the vlm-tiny-shapes sweep directory whose task-agnostic runs "
            "are finetuned"
        },
    )
    runs = Path(env["VLAB_VLM_SWEEP"]) / "runs"
    return SweepSpec(
        name="vlm-finetune-shapes",
        kind="vlm-finetune",
        description="Tiny VLMs (four arms) from vlm-tiny-shapes finetuned on vqa or grounding "
        "at 64/96/128 px x 3 lrs, batch 64; held-out scores at the same resolution (CPU).",
        base={"train": {"steps": 150, "batch_size": 64, "eval_every": 50}},
        axes={
            "arch": ARCHS,
            "task": ["vqa", "grounding"],
            "resolution": [64, 96, 128],
            "train.lr": [5e-4, 1e-3, 2e-3],
        },
        per_arch={arch: {"source": str(runs / f"{arch}-task_agnostic")} for arch in ARCHS},
    )
