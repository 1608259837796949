"""Data-parallel training (2 CPU ranks under torchrun, gloo) on a global batch whose slices are
an image row on one rank and a text-only row on the other: DDP and FSDP both train exactly as
one process trains on the whole batch, and neither fails nor hangs on the text-only rank."""

import os
import subprocess
import sys

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

# Rank 0 gets a shapes example with its image, rank 1 the same example without it. A DDP
# reducer would wait forever for the projector's gradient on rank 1, and FSDP would hang in
# the all-gather of the SigLIP layers rank 1 never called, unless the model takes the same
# path on both ranks (``VLM.embed``).
SCRIPT = """
import copy
import sys
from pathlib import Path

import torch

from vlab.models.vlm.batch import batch_of, pixel_values
from vlab.vlm.config import config_from
from vlab.models.vlm.data.run_data import ShapesData
from vlab.models.vlm.model import build_vlm
from vlab.vlm.tokenizer import run_tokenizer
from vlab.training.distributed import (
    close_distributed, exit_rank, model_state, setup_distributed, shard_model,
)

out, mode = Path(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
ctx = setup_distributed(torch.device("cpu"))
vision = {"kind": "siglip", "preset": "tiny"}
cfg = config_from("tiny-shapes", "pythia", {"model": {"vision": vision}, "data": {"n_heldout": 1}})
tok = run_tokenizer(cfg, out / f"rank{ctx.rank}")
model = build_vlm(cfg.model, vocab_size=len(tok), seed=0)
model.set_stage(2)
image = ShapesData(cfg.data).heldout[0]
batch = batch_of([image, image.replace(image=None)], model, tok, cfg.model.sequence)


def loss_of(net, b):
    return net(
        b["input_ids"], b["patch_index"], pixel_values(b),
        attention_mask=b["attention_mask"], labels=b["labels"],
    )["loss"]


def train(net, params, b, steps=2):
    opt = torch.optim.SGD(params, lr=0.5)
    for _ in range(steps):
        opt.zero_grad()
        loss_of(net, b).backward()
        opt.step()


reference = copy.deepcopy(model)  # one process, the whole batch
train(reference, [p for p in reference.parameters() if p.requires_grad], batch)
part = {k: ctx.shard(v) for k, v in batch.items()}
print(f"rank {ctx.rank}: image rows {int((part['patch_index'] >= 0).any(1).sum())}")
if mode == "fsdp":
    shard_model(model, torch.device("cpu"), bf16=False)
    net = model
else:
    net = torch.nn.parallel.DistributedDataParallel(model)
train(net, [p for p in model.parameters() if p.requires_grad], part)
state = model_state(model, sharded=mode == "fsdp")
if ctx.is_main:
    want = reference.state_dict()
    diff = max(float((state[k].float() - want[k].float()).abs().max()) for k in want)
    moved = max(
        float((want[k].float() - v.float()).abs().max())
        for k, v in build_vlm(cfg.model, vocab_size=len(tok), seed=0).state_dict().items()
    )
    print(f"max difference {diff:.3g}; moved {moved:.3g}")
close_distributed()
exit_rank(0)
"""


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_text_only_rank_trains_in_step_with_the_image_rank(tmp_path, mode):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*cmd, str(script), str(tmp_path), mode],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0: image rows 1" in done.stdout and "rank 1: image rows 0" in done.stdout
    line = next(x for x in done.stdout.splitlines() if x.startswith("max difference"))
    diff, moved = (float(x.split()[-1]) for x in line.split(";"))
    assert moved > 1e-3  # training changed the weights: the comparison is not vacuous
    assert diff < 1e-5
