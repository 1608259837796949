"""paper-arms: ``paper-grounding`` with all four arms, for GPUs.

The same synthetic-grounding grid (suffix and prefix, L in {50, 100, 200}, 3 learning rates x 3
initialisations of the new embeddings, batch 64, 78K steps, evaluation every 1%, stop at 95%)
for Pythia-1.4B, Mamba-1.4B, Mamba-2-1.3B and the 1.4B hybrid (Mamba-1.4B's shape with an
attention layer every 8th layer): 216 runs. Random weights unless each arm is given its own
checkpoint directory (``--set-arch ARCH:model.pretrained=DIR``, or ``per_arch``).
"""

from vlab.slurm.spec import SweepSpec
from vlab.slurm.specs.paper_grounding import GRID as PAPER

ARMS = [
    {"model.arch": "pythia", "model.preset": "1.4b"},
    {"model.arch": "mamba", "model.preset": "1.4b"},
    {"model.arch": "mamba2", "model.preset": "1.3b"},
    {"model.arch": "hybrid", "model.preset": "1.4b"},
]

SPEC = SweepSpec(
    name="paper-arms",
    description="paper-grounding with four arms: Pythia, Mamba, Mamba-2, hybrid (~1.4B each).",
    base=PAPER.base,
    axes={k: v for k, v in PAPER.axes.items() if k != "model.arch"},
    runs=ARMS,
    name_keys=["model.arch", "task.variant", "task.length", "train.lr", "model.init_seed"],
)
