"""Linear probe: scikit-learn's LogisticRegression as the oracle for the objective, separable and random
synthetic features for the accuracies, and the feature cache's keying and atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from fastgradmix.evaluation.linear_probe import (
    ProbeRecipe,
    cached_features,
    linear_probe,
    topk_accuracy,
    train_linear_probe,
)


def _blobs(n: int, dim: int, classes: int, spread: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * 3
    labels = torch.randint(0, classes, (n,), generator=generator)
    # uneven feature scales and offsets: the probe standardises them away
    scale = torch.rand(dim, generator=generator) * 10 + 0.1
    features = (centres[labels] + spread * torch.randn(n, dim, generator=generator)) * scale + 5
    return features, labels


def test_probe_solves_the_objective_of_sklearn_logistic_regression():
    features, labels = _blobs(600, 20, 5, spread=2.0, seed=0)
    features = features.double()
    weight_decay = 1e-2
    probe = train_linear_probe(features, labels, 5, ProbeRecipe(weight_decay=weight_decay), progress=False)
    standardised = ((features - features.mean(0)) / features.std(0)).numpy()
    # mean CE + wd/2 |W|^2 is sklearn's C * sum CE + 1/2 |W|^2 with C = 1 / (wd N)
    oracle = LogisticRegression(C=1 / (weight_decay * len(labels)), tol=1e-10, max_iter=10000)
    oracle.fit(standardised, labels.numpy())
    np.testing.assert_allclose(probe.linear.weight.numpy(), oracle.coef_, atol=1e-3)
    np.testing.assert_allclose(probe.linear.bias.numpy(), oracle.intercept_, atol=1e-3)
    probabilities = torch.softmax(probe(features), dim=1).numpy()
    np.testing.assert_allclose(probabilities, oracle.predict_proba(standardised), atol=1e-3)


def test_separable_features_give_near_perfect_accuracy():
    features, labels = _blobs(2000, 32, 10, spread=0.2, seed=1)
    result = linear_probe(features[:1000], labels[:1000], features[1000:], labels[1000:], progress=False)
    assert result["top1"] >= 0.99 and result["train_top1"] >= 0.99
    assert result["top5"] >= result["top1"] and result["num_classes"] == 10


def test_random_labels_give_chance_accuracy():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(4000, 32, generator=generator)
    labels = torch.randint(0, 10, (4000,), generator=generator)
    result = linear_probe(features[:2000], labels[:2000], features[2000:], labels[2000:], progress=False)
    # chance is 1/10 and 5/10; the spread of 2000 test draws is ~0.007 and ~0.011
    assert result["top1"] == pytest.approx(0.1, abs=0.03)
    assert result["top5"] == pytest.approx(0.5, abs=0.05)
    assert result["top5"] >= result["top1"]


def test_probe_is_deterministic():
    features, labels = _blobs(500, 16, 4, spread=3.0, seed=3)
    first = train_linear_probe(features, labels, 4, progress=False)
    second = train_linear_probe(features, labels, 4, progress=False)
    assert torch.equal(first.linear.weight, second.linear.weight) and torch.equal(first.linear.bias, second.linear.bias)


def test_constant_features_are_harmless():
    features, labels = _blobs(400, 8, 3, spread=0.3, seed=4)
    features[:, 2] = 7.0  # zero variance
    result = linear_probe(features[:200], labels[:200], features[200:], labels[200:], progress=False)
    assert result["top1"] >= 0.95


def test_topk_accuracy_by_hand():
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2], [0.3, 0.35, 0.4]])
    labels = torch.tensor([0, 0, 2, 1])
    # ranks of the label: 1st, 3rd, 2nd, 2nd
    accuracy = topk_accuracy(logits, labels, ks=(1, 2, 3, 5))
    assert accuracy == {1: 0.25, 2: 0.75, 3: 1.0, 5: 1.0}


def test_labels_out_of_range_raise():
    features = torch.randn(10, 3)
    with pytest.raises(ValueError, match="labels must lie"):
        linear_probe(features, torch.arange(10) % 3, features, torch.full((10,), 3), num_classes=3, progress=False)


def test_feature_cache_computes_once_per_checkpoint_version(tmp_path):
    checkpoint = tmp_path / "run" / "last.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights v1")
    calls = []

    def compute():
        calls.append(1)
        return {"features": torch.full((3, 2), float(len(calls))), "labels": torch.arange(3)}

    first = cached_features(checkpoint, "test", compute)
    again = cached_features(checkpoint, "test", compute)
    assert len(calls) == 1 and torch.equal(first["features"], again["features"])
    assert torch.equal(again["labels"], torch.arange(3))
    cached_features(checkpoint, "train", compute)  # another tag, another entry
    assert len(calls) == 2
    cache_files = sorted(p.name for p in (checkpoint.parent / "feature_cache").iterdir())
    assert len(cache_files) == 2 and all(name.startswith("last-") for name in cache_files)

    # the checkpoint is rewritten (a later epoch): recompute, overwrite the same file
    checkpoint.write_bytes(b"weights v2, longer")
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    updated = cached_features(checkpoint, "test", compute)
    assert len(calls) == 3 and float(updated["features"][0, 0]) == 3.0
    assert sorted(p.name for p in (checkpoint.parent / "feature_cache").iterdir()) == cache_files

    # extra settings the features depend on are part of the key
    cached_features(checkpoint, "test", compute, extra={"image_size": 64})
    assert len(calls) == 4


def test_feature_cache_recovers_from_a_corrupt_file(tmp_path):
    checkpoint = tmp_path / "epoch_010.pt"
    checkpoint.write_bytes(b"w")
    cache_dir = tmp_path / "cache"
    cached_features(checkpoint, "test", lambda: {"features": torch.ones(2, 2)}, cache_dir=cache_dir)
    (cache_file,) = cache_dir.iterdir()
    cache_file.write_bytes(b"not a torch file")
    result = cached_features(checkpoint, "test", lambda: {"features": torch.zeros(2, 2)}, cache_dir=cache_dir)
    assert torch.equal(result["features"], torch.zeros(2, 2))
    assert [p.name for p in cache_dir.iterdir()] == [cache_file.name]  # rewritten in place, no temp files left


def test_feature_cache_needs_the_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        cached_features(tmp_path / "missing.pt", "test", lambda: {})
