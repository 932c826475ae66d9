"""Top-k class similarity scoring against a per-sample, per-class NumPy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastgradmix.evaluation.topk_similarity import class_topk_scores, osr_predict, score_normalized

# unbalanced bank: class 1 has fewer entries than most k below, class 2 none, class 4 one
CLASS_COUNTS = (15, 3, 0, 7, 1)
NUM_CLASSES = len(CLASS_COUNTS)


def reference_scores(test: np.ndarray, bank: np.ndarray, bank_labels: np.ndarray, num_classes: int, k: int):
    test, bank = test.astype(np.float64), bank.astype(np.float64)
    scores = np.full((len(test), num_classes), -np.inf)
    for t in range(len(test)):
        for c in range(num_classes):
            similarities = np.array([test[t] @ bank[b] for b in range(len(bank)) if bank_labels[b] == c])
            if len(similarities):
                scores[t, c] = np.sort(similarities)[::-1][:k].sum()
    return scores


def make_bank(seed: int, dim: int = 8, num_test: int = 10):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(CLASS_COUNTS)])
    labels = labels[torch.randperm(len(labels), generator=generator)]  # classes interleaved in the bank
    bank = F.normalize(torch.randn(len(labels), dim, generator=generator), dim=1)
    test = F.normalize(torch.randn(num_test, dim, generator=generator), dim=1)
    return test, bank, labels


@pytest.mark.parametrize("k", [1, 5, 10, 20])
@pytest.mark.parametrize("chunk_size", [3, 4, 10, 2048])
def test_class_topk_scores_match_loop(k, chunk_size):
    test, bank, labels = make_bank(seed=0)
    scores = class_topk_scores(test, bank, labels, NUM_CLASSES, k=k, chunk_size=chunk_size)
    expected = reference_scores(test.numpy(), bank.numpy(), labels.numpy(), NUM_CLASSES, k)
    assert scores.shape == (10, NUM_CLASSES) and scores.dtype == torch.float32
    assert not torch.isnan(scores).any()
    assert torch.isneginf(scores[:, 2]).all()  # the class without bank entries
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_scores_are_fp32_under_autocast_and_accept_other_dtypes():
    test, bank, labels = make_bank(seed=1)
    plain = class_topk_scores(test, bank, labels, NUM_CLASSES, k=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = class_topk_scores(test, bank, labels, NUM_CLASSES, k=4)
    torch.testing.assert_close(cast, plain, rtol=0, atol=1e-6)
    from_double = class_topk_scores(test.double(), bank.double(), labels.int(), NUM_CLASSES, k=4)
    assert from_double.dtype == torch.float32
    torch.testing.assert_close(from_double, plain, rtol=1e-6, atol=1e-6)


def test_empty_test_set_gives_empty_scores():
    _, bank, labels = make_bank(seed=2)
    assert class_topk_scores(torch.empty(0, 8), bank, labels, NUM_CLASSES).shape == (0, NUM_CLASSES)


@pytest.mark.parametrize(
    "break_arguments, message",  # each case breaks one argument of a valid call
    [
        (lambda a: a.update(k=0), "k must be"),
        (lambda a: a.update(chunk_size=0), "chunk_size"),
        (lambda a: a.update(num_classes=4), r"\[0, 4\)"),  # the bank holds label 4
        (lambda a: a.update(bank_labels=a["bank_labels"] - 1), r"\[0, 5\)"),
        (lambda a: a.update(bank_features=a["bank_features"][:0], bank_labels=a["bank_labels"][:0]), "empty"),
        (lambda a: a.update(bank_labels=a["bank_labels"][1:]), "bank_labels"),
        (lambda a: a.update(test_features=a["test_features"][:, :4]), "differ in dim"),
    ],
)
def test_class_topk_scores_rejects_bad_input(break_arguments, message):
    test, bank, labels = make_bank(seed=3)
    arguments = {
        "test_features": test,
        "bank_features": bank,
        "bank_labels": labels,
        "num_classes": NUM_CLASSES,
        "k": 3,
        "chunk_size": 8,
    }
    break_arguments(arguments)
    with pytest.raises(ValueError, match=message):
        class_topk_scores(**arguments)


def test_osr_predict_is_argmax_and_max():
    test, bank, labels = make_bank(seed=4)
    scores = class_topk_scores(test, bank, labels, NUM_CLASSES, k=3)
    predictions, open_set_score = osr_predict(scores)
    expected = reference_scores(test.numpy(), bank.numpy(), labels.numpy(), NUM_CLASSES, 3)
    assert predictions.dtype == torch.int64 and open_set_score.dtype == torch.float32
    np.testing.assert_array_equal(predictions.numpy(), expected.argmax(axis=1))
    np.testing.assert_allclose(open_set_score.numpy(), expected.max(axis=1), rtol=1e-5, atol=1e-5)
    assert (predictions != 2).all()  # a class with no bank entry is never predicted


def test_osr_predict_on_hand_made_scores():
    scores = torch.tensor([[0.1, 0.9, -float("inf")], [2.0, 1.0, 0.5]])
    predictions, open_set_score = osr_predict(scores)
    assert predictions.tolist() == [1, 0]
    assert open_set_score.tolist() == pytest.approx([0.9, 2.0])


def test_score_normalized_divides_by_row_sum():
    scores = torch.tensor([[1.0, 3.0], [2.0, 2.0], [0.5, 1.5]])
    expected = np.array([[0.25, 0.75], [0.5, 0.5], [0.25, 0.75]])
    np.testing.assert_allclose(score_normalized(scores).numpy(), expected, rtol=1e-7)
