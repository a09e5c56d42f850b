"""Scores: clustering accuracy, ARI, dead units, probe accuracy intervals."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import beta as beta_dist
from sklearn.metrics import adjusted_rand_score

__all__ = [
    "adjusted_rand",
    "clustering_accuracy",
    "dead_fraction",
    "accuracy",
    "binomial_interval",
]


def _labels(y) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    return np.asarray(y).ravel()


def adjusted_rand(y_true, y_pred) -> float:
    """Adjusted Rand index of two labellings (1 = identical up to renaming)."""
    return float(adjusted_rand_score(_labels(y_true), _labels(y_pred)))


def clustering_accuracy(y_true, y_pred) -> float:
    """Accuracy after the best one-to-one matching of clusters to classes."""
    t, p = _labels(y_true), _labels(y_pred)
    classes, t_idx = np.unique(t, return_inverse=True)
    clusters, p_idx = np.unique(p, return_inverse=True)
    counts = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(counts, (p_idx, t_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / len(t))


def dead_fraction(activations, threshold: float = 1e-6) -> float:
    """Fraction of units never active above threshold: (N, C[, H, W]) -> float.

    A unit (channel) is dead when its activation is at most ``threshold``
    on every sample (and location) given.
    """
    A = activations.detach() if isinstance(activations, torch.Tensor) else activations
    A = torch.as_tensor(A)
    per_unit = A.transpose(0, 1).reshape(A.shape[1], -1).amax(dim=1)
    return float((per_unit <= threshold).float().mean())


def accuracy(logits_or_labels, y) -> float:
    """Fraction of correct predictions from (N, C) logits or (N,) labels."""
    pred = torch.as_tensor(logits_or_labels)
    if pred.ndim == 2:
        pred = pred.argmax(dim=1)
    y = torch.as_tensor(y).to(pred.device)
    return float((pred == y).float().mean())


def binomial_interval(correct: int, total: int, level: float = 0.95):
    """Clopper-Pearson interval for an accuracy of correct/total: (lo, hi)."""
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    a = (1 - level) / 2
    lo = 0.0 if correct == 0 else beta_dist.ppf(a, correct, total - correct + 1)
    hi = 1.0 if correct == total else beta_dist.ppf(1 - a, correct + 1, total - correct)
    return float(lo), float(hi)
