"""The logit lens: at the last layer it is the model's own prediction; on a trained run the
answer is readable at the last layer and not from the embeddings."""

import numpy as np
import pandas as pd
import pytest
import torch

from vlab.analysis.inside.activations import trace
from vlab.analysis.inside.logit_lens import COLUMNS, logit_lens_table
from vlab.config import from_dict
from vlab.models.backbones import BackboneConfig, add_tokens, build_backbone
from vlab.probes.config import ProbeRunConfig, resolve
from vlab.probes.examples import heldout_examples
from vlab.probes.tasks import ProbeTaskConfig, ProbeVocab
from vlab.probes.trainer import run_probe
from vlab.rundir import RunDir

LENGTH = 6


def setup(arch: str, variant: str = "suffix", n: int = 60) -> tuple:
    task = ProbeTaskConfig(length=LENGTH, n_train=600, n_heldout=60, variant=variant)
    cfg = BackboneConfig(arch=arch)
    model = build_backbone(cfg, seed=0)
    vocab = ProbeVocab.for_task(task, base_vocab_size=model.get_input_embeddings().weight.shape[0])
    add_tokens(model, len(vocab.new_token_names), cfg)
    return model.eval(), heldout_examples(task, vocab, n)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
@pytest.mark.parametrize("variant", ["suffix", "prefix"])
def test_last_layer_is_the_models_own_prediction(arch, variant):
    model, examples = setup(arch, variant)
    table = logit_lens_table(model, examples, batch_size=16)
    logits = trace(model, examples.input_ids)["logits"][:, -1].float()  # (N, V)
    positions = torch.as_tensor(examples.positions)
    probability = logits.softmax(-1)[torch.arange(len(examples)), examples.targets]
    scores = logits[:, examples.target_ids]
    correct = scores[torch.arange(len(examples)), positions]
    want = (
        pd.DataFrame(
            {
                "target_position": examples.positions,
                "probability": probability.numpy(),
                "accuracy": (scores.argmax(-1) == positions).float().numpy(),
                "rank": (scores > correct[:, None]).sum(-1).float().numpy(),
            }
        )
        .groupby("target_position", as_index=False)
        .mean()
    )
    last = table[table["layer"] == model.config.num_hidden_layers - 1]
    for column in ("probability", "accuracy", "rank"):
        np.testing.assert_allclose(last[column].values, want[column].values, atol=1e-5)


@pytest.mark.parametrize("arch", ["pythia", "mamba"])
def test_one_row_per_layer_and_target_position(arch):
    model, examples = setup(arch)
    table = logit_lens_table(model, examples)
    layers = model.config.num_hidden_layers
    assert list(table.columns) == COLUMNS
    assert len(table) == (layers + 1) * LENGTH
    assert sorted(set(table["layer"])) == [-1, *range(layers)]
    assert set(table["target_position"]) == set(range(LENGTH))
    assert table["probability"].between(0, 1).all() and table["accuracy"].between(0, 1).all()
    assert table["rank"].between(0, LENGTH - 1).all()
    assert table["layer"].dtype == table["target_position"].dtype == np.int64


def test_trained_run_is_readable_at_the_last_layer_and_not_from_the_embeddings(tmp_path):
    """Mamba L = 4 crosses 0.95 held-out accuracy near step 100 (see tests/probes/
    test_trainer.py); the run stops there, about 5 s on one CPU thread."""
    cfg = resolve(
        from_dict(
            ProbeRunConfig,
            {
                "task": {"length": 4, "n_heldout": 64},
                "model": {"arch": "mamba"},
                "train": {"steps": 2000, "eval_every": 50, "threads": 1},
            },
        )
    )
    result = run_probe(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    assert result.threshold_step is not None, result
    model = build_backbone(cfg.model, seed=cfg.train.seed)
    vocab = ProbeVocab.for_task(
        cfg.task, base_vocab_size=model.get_input_embeddings().weight.shape[0]
    )
    add_tokens(model, len(vocab.new_token_names), cfg.model)
    model.load_state_dict(RunDir(tmp_path / "run").load_checkpoint()["model"])
    table = logit_lens_table(model.eval(), heldout_examples(cfg.task, vocab, 64))
    by_layer = table.groupby("layer")[["accuracy", "rank"]].mean()
    last = model.config.num_hidden_layers - 1
    assert by_layer.loc[last, "accuracy"] >= 0.9
    assert by_layer.loc[-1, "accuracy"] <= 0.5  # the query's embedding alone: chance is 1/4
    assert by_layer.loc[last, "rank"] < by_layer.loc[-1, "rank"]
