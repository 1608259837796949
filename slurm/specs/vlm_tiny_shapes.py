"""vlm-tiny-shapes: the four LM arms as tiny VLMs on the built-in shapes dataset, both orderings.

Each run trains stage 1 (projector) and stage 2 (projector + LM) of the ``tiny-shapes`` preset,
then scores stage 2 on the preset's held-out scenes, one benchmark per task
(``RUN/eval/heldout/results.json``: caption, VQA, POPE, ITM are the summary tasks; grounding
and dense captions need one object retrieved). Image first (task-agnostic) vs instruction
first (task-aware) is the ordering question of the papers. Eight runs of the preset's 100 +
600 steps: minutes each on a CPU.
"""

from vlab.slurm.spec import SweepSpec

SPEC = SweepSpec(
    name="vlm-tiny-shapes",
    kind="vlm",
    description="Tiny VLMs (pythia, mamba, mamba2, hybrid) on the shapes dataset, task-agnostic "
    "vs task-aware ordering; both stages, then held-out scores per task.",
    base="tiny-shapes",
    axes={
        "model.lm.arch": ["pythia", "mamba", "mamba2", "hybrid"],
        "model.sequence.ordering": ["task_agnostic", "task_aware"],
    },
)
