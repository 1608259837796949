"""paper-vlm: SHAKEUP's VLM comparison at the paper's sizes, for GPUs.

Pythia-1B / 1.4B / 2.8B against Mamba-790M / 1.4B / 2.8B (the paper's matched pairs) x
task-agnostic vs task-aware ordering: 12 VLM runs, each trained in both stages with the
``paper-1.4b`` recipe (EVA-02-L/14 at 336 px, 2-layer MLP; stage 1 batch 256 lr 1e-3,
stage 2 batch 128 lr 2e-5; the 2.8B pair with the paper's 800-token limit), then evaluated on
the held-out benchmarks and on the paper's benchmark suite (``benchmarks.suite``: COCO
Karpathy test, NoCaps, VQAv2, GQA, Visual7W, VSR, POPE, RefCOCO/+/g, TextCaps, TextVQA, AI2D
under ``VLAB_DATA``), one phase per benchmark in ``RUN/eval/<benchmark>/``, so a run is done
with its tables' numbers. Every LM starts from its own pretrained checkpoint and tokenizer.
``--set benchmarks.suite=null`` ends each run at its held-out evaluation; ``--set
'benchmarks.names=["coco","vqav2"]'`` scores those alone. A benchmark missing from
``VLAB_DATA`` stops the spec from expanding, in one line naming it.

Where things are comes from two environment variables, so the same file serves any cluster:

* ``VLAB_DATA``: the paper's datasets in the layout of :mod:`vlab.models.vlm.data.paper_data`
  (``vlab vlm train --data-root``'s layout), for training and for the benchmarks;
* ``VLAB_MODELS``: local checkpoints under their Hugging Face names (``pythia-1b``,
  ``pythia-1.4b``, ``pythia-2.8b``, ``mamba-790m-hf``, ``mamba-1.4b-hf``, ``mamba-2.8b-hf``)
  and the EVA-02 encoder as ``eva02_large_patch14_clip_336`` (a timm / OpenCLIP file or
  folder).

Without them the spec does not load (one line saying what to set), rather than training the
paper's shapes from random weights on nothing.
"""

from __future__ import annotations

from pathlib import Path

from vlab.slurm.spec import SweepSpec, environment

# (arch, LM preset, checkpoint folder name, max sequence length): the paper's pairs.
PAIRS = [
    ("pythia", "1b", "pythia-1b", 1024),
    ("mamba", "790m", "mamba-790m-hf", 1024),
    ("pythia", "1.4b", "pythia-1.4b", 1024),
    ("mamba", "1.4b", "mamba-1.4b-hf", 1024),
    ("pythia", "2.8b", "pythia-2.8b", 800),
    ("mamba", "2.8b", "mamba-2.8b-hf", 800),
]
ENCODER = "eva02_large_patch14_clip_336"


def sweep() -> SweepSpec:
    """The spec, with the data and checkpoint roots read from the environment."""
    env = environment(
        "paper-vlm",
        {
            "VLAB_DATA": "the paper's datasets in vlab.models.vlm.data.paper_data's layout",
            "VLAB_MODELS": "the pretrained checkpoints, see the spec's docstring",
        },
    )
    from vlab.models.vlm.data.paper_data import paper_data

    models = Path(env["VLAB_MODELS"])
    runs = [
        {
            "model.lm.arch": arch,
            "model.lm.preset": preset,
            "model.lm.pretrained": str(models / folder),
            "data.tokenizer": str(models / folder),
            "model.sequence.max_length": length,
        }
        for arch, preset, folder, length in PAIRS
    ]
    return SweepSpec(
        name="paper-vlm",
        kind="vlm",
        description="SHAKEUP's VLMs: Pythia 1B/1.4B/2.8B vs Mamba 790M/1.4B/2.8B x task-agnostic "
        "vs task-aware, pretrained LMs, both stages, then the held-out sets and the paper's "
        "benchmark suite (GPU).",
        base={
            "preset": "paper-1.4b",
            "model.vision.pretrained": str(models / ENCODER),
            "data": paper_data(env["VLAB_DATA"]),
            "benchmarks": {"suite": "shakeup", "data_root": env["VLAB_DATA"]},
        },
        axes={"model.sequence.ordering": ["task_agnostic", "task_aware"]},
        runs=runs,
        name_keys=["model.lm.arch", "model.lm.preset", "model.sequence.ordering"],
        # each run on 4 GPUs of one node, as the SHAKEUP VLMs were trained (4 A100s)
        slurm={"gpus_per_node": 4},
    )
