"""The linear probe finds a planted linear signal, stays at chance on shuffled labels, is
deterministic in its seed, handles a one-class training split without fitting, and rejects bad
inputs and configs with a message that says what is wrong."""

import math

import numpy as np
import pytest

from vlab.analysis.inside import linear_probe
from vlab.analysis.inside.linear_probe import ProbeFitConfig, ProbeScore, probe_accuracy
from vlab.errors import ConfigError


def planted(n: int = 400, n_classes: int = 8, width: int = 64, noise: float = 0.1, seed: int = 0):
    """Labels from ``n_classes`` classes and features one_hot(label) @ a random projection plus
    small isotropic noise: linearly decodable by construction."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, size=n)
    projection = rng.normal(size=(n_classes, width))
    features = np.eye(n_classes)[labels] @ projection + noise * rng.normal(size=(n, width))
    return features, labels


def shuffled(n: int = 400, n_classes: int = 8, width: int = 64, seed: int = 0):
    """Balanced labels independent of Gaussian features: nothing to decode."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(n_classes), n // n_classes))
    return rng.normal(size=(n, width)), labels


def test_planted_linear_signal_is_decoded_held_out():
    features, labels = planted()
    score = probe_accuracy(features, labels)
    assert score.accuracy >= 0.95
    assert score.chance <= 0.25
    assert (score.n_train, score.n_test, score.n_classes) == (300, 100, 8)


def test_shuffled_labels_score_at_chance():
    # Scoring on the training rows (or leaking test rows into the fit) would score far above
    # chance here: 300 rows in 64 dimensions are easy to memorise.
    features, labels = shuffled()
    score = probe_accuracy(features, labels)
    assert score.chance == pytest.approx(0.125, abs=0.01)  # stratified: 12-13 of 100 per class
    assert abs(score.accuracy - score.chance) <= 0.12
    assert score.accuracy < 0.35


def test_same_seed_same_score_and_other_seeds_other_splits():
    features, labels = shuffled()
    cfg = ProbeFitConfig(seed=3)
    assert probe_accuracy(features, labels, cfg) == probe_accuracy(features, labels, cfg)
    scores = [probe_accuracy(features, labels, ProbeFitConfig(seed=s)) for s in range(4)]
    assert len({s.n_test for s in scores}) == 1
    # on labels the features do not predict, the held-out accuracy moves with the split
    assert len({s.accuracy for s in scores}) > 1


def test_relabelling_classes_in_order_changes_nothing():
    features, labels = planted(noise=3.0)  # noisy enough that the accuracy is not 1
    relabelled = np.array([-7, -2, 0, 3, 10, 11, 40, 99])[labels]
    score = probe_accuracy(features, labels)
    assert 0.3 < score.accuracy < 0.95
    assert probe_accuracy(features, relabelled) == score


def test_chance_is_the_training_majority_scored_on_the_test_split(monkeypatch):
    # A fixed split whose test majority (1) differs from its training majority (0): chance is
    # 1/4, not the 3/4 of the test split's own majority. The one feature is the label, so the
    # probe is right everywhere.
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0])
    train, test = np.array([0, 1, 2, 3, 4]), np.array([5, 6, 7, 8])

    def fixed_split(rows, **kwargs):
        assert list(rows) == list(range(9))
        return train, test

    monkeypatch.setattr(linear_probe, "train_test_split", fixed_split)
    score = probe_accuracy(labels[:, None].astype(float), labels)
    assert score == ProbeScore(accuracy=1.0, chance=0.25, n_train=5, n_test=4, n_classes=2)


def test_features_of_any_numeric_dtype_are_accepted():
    features, labels = planted()
    want = probe_accuracy(features.astype(np.float32).astype(np.float64), labels)
    assert probe_accuracy(features.astype(np.float32), labels) == want


def test_one_class_everywhere_predicts_it_without_fitting(monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("a one-class training split must not fit a classifier")

    monkeypatch.setattr(linear_probe, "LogisticRegression", no_fit)
    rng = np.random.default_rng(0)
    score = probe_accuracy(rng.normal(size=(8, 5)), np.full(8, 4))
    assert score == ProbeScore(accuracy=1.0, chance=1.0, n_train=6, n_test=2, n_classes=1)


def test_one_class_training_split_predicts_that_class():
    # Eleven 0s and one 1; with N=12 the test split holds 3. Where the lone 1 lands in the
    # test split, training is all 0s: the probe predicts 0 and scores 2/3, like chance.
    rng = np.random.default_rng(0)
    features = rng.normal(size=(12, 5))
    labels = np.array([0] * 11 + [1])
    hits = 0
    for seed in range(20):
        score = probe_accuracy(features, labels, ProbeFitConfig(seed=seed))
        assert score.n_classes == 2
        if score.chance < 1.0:  # the 1 is held out
            hits += 1
            assert score.accuracy == score.chance == pytest.approx(2 / 3)
    assert hits > 0


@pytest.mark.parametrize(
    ("features", "labels", "match"),
    [
        (np.zeros(8), np.zeros(8, dtype=int), "2-D"),
        (np.zeros((8, 2, 2)), np.zeros(8, dtype=int), "2-D"),
        (np.zeros((8, 3)), np.zeros((8, 1), dtype=int), "1-D"),
        (np.zeros((8, 3)), np.zeros(8), "integer"),
        (np.zeros((8, 3)), np.zeros(7, dtype=int), "disagree on N"),
        (np.zeros((3, 3)), np.zeros(3, dtype=int), "at least 4"),
        (np.zeros((8, 0)), np.zeros(8, dtype=int), "no columns"),
        (np.where(np.eye(8, 3) > 0, np.nan, 0.0), np.zeros(8, dtype=int), "NaN or inf"),
        (np.where(np.eye(8, 3) > 0, np.inf, 0.0), np.zeros(8, dtype=int), "NaN or inf"),
        (np.full((8, 3), "a"), np.zeros(8, dtype=int), "numeric"),
    ],
)
def test_malformed_inputs_raise_value_error(features, labels, match):
    with pytest.raises(ValueError, match=match):
        probe_accuracy(features, labels)


def test_a_test_fraction_that_leaves_no_training_rows_raises():
    with pytest.raises(ValueError, match="no training examples"):
        probe_accuracy(np.zeros((4, 2)), np.arange(4), ProbeFitConfig(test_fraction=0.9))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("test_fraction", 0.0),
        ("test_fraction", 1.0),
        ("test_fraction", -0.1),
        ("test_fraction", "0.2"),
        ("C", 0.0),
        ("C", -1.0),
        ("C", math.inf),
        ("C", math.nan),
        ("C", True),
        ("max_iter", 0),
        ("max_iter", 1.5),
        ("seed", -1),
        ("seed", 0.5),
    ],
)
def test_bad_config_fields_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        ProbeFitConfig(**{field: value})
    assert err.value.field == field
    assert field in str(err.value)
