"""cpu-image-probe: the retrieval probe with an image for a context, Pythia vs Mamba, on a CPU.

``cpu-small``'s design with the context shown as an image (``task.modality = "image"``,
:mod:`vlab.probes.image_task`): L distinct random patches in a square grid, read by the tiny
raw-patch encoder and an MLP connector into the LM, the query being the patch itself through
the same encoder; the answer its position ``<p_k>``. The paper's marker layout (``##`` around
the image, ``&&`` after each row) and both orderings: suffix = the VLM's task-agnostic
(image, then query), prefix = its task-aware (query, then image). L in {4, 9}: full 2 x 2 and
3 x 3 grids, so no blank cells. Each arm at the best learning rate of its text-probe grid,
one seed: eight runs, a few minutes on 2 cores, enough for curves and heatmaps beside the
text probe's, not to cite.
"""

from vlab.probes.recipes import arm_runs, best_lr
from vlab.slurm.spec import SweepSpec

LENGTHS = [4, 9]

SPEC = SweepSpec(
    name="cpu-image-probe",
    description="The probe with an image context (tiny patch encoder + MLP connector): "
    "Pythia vs Mamba (tiny), suffix and prefix, L in {4, 9}, one seed.",
    base={
        "model": {"preset": "tiny"},
        "task": {"modality": "image", "target_mode": "position", "pool_size": 2 * max(LENGTHS)},
        "image": {"layout": "paper"},
        "train": {"steps": 1500, "batch_size": 64, "threads": 1},
    },
    axes={"task.variant": ["suffix", "prefix"], "task.length": LENGTHS},
    runs=[run for arch in ("pythia", "mamba") for run in arm_runs(arch, lrs=(best_lr(arch),))],
    name_keys=["model.arch", "task.variant", "task.length"],
)
