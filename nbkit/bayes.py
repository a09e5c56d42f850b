"""Lemma 1: the Neural Bayes parameterization of p(z|x), p(z) and p(x|z).

Given a network output ``L`` of shape (B, K) whose rows lie on the simplex,
Lemma 1 reads the latent model directly off it:

* ``p(z=k|x) = L_k(x)``                          (posterior)
* ``p(z=k)   = E_x[L_k(x)]``                     (prior)
* ``p(x|z=k) / p(x) = L_k(x) / E_x[L_k(x)]``     (density ratio)

``E_x`` is the mean over the batch, or a weighted sum when the points of a
discrete distribution are given with their probabilities ``weights``.
For (B, K, H, W) states the expectation is taken per location.
"""

from __future__ import annotations

import torch

from . import distributed as _distributed
from ._checks import check_states

__all__ = [
    "expectation",
    "prior",
    "posterior",
    "density_ratio",
    "conditionals",
    "mutual_information",
    "log_floored",
]


def expectation(T: torch.Tensor, weights: torch.Tensor | None = None):
    """E_x[T] over dim 0: (B, ...) -> (...); a mean, or weighted by p(x).

    Inside ``nbkit.distributed.global_batch()`` the mean is over the
    global batch of all ranks (differentiable); explicit weights are local.
    """
    if weights is None:
        reducer = _distributed.current()
        return T.mean(dim=0) if reducer is None else reducer.mean(T)
    if weights.shape != T.shape[:1]:
        raise ValueError(
            f"weights must have shape ({T.shape[0]},) to match the batch, "
            f"got {tuple(weights.shape)}"
        )
    w = weights.to(T.dtype).reshape(-1, *([1] * (T.ndim - 1)))
    return (w * T).sum(dim=0)


def log_floored(x: torch.Tensor) -> torch.Tensor:
    """log(x) with x floored at the dtype's smallest normal number.

    Equal to log(x) for every x above that number (about 1e-38 in float32).
    Where a saturated softmax has underflowed to 0, ``x * log_floored(x)``
    is 0 with a finite gradient; ``x * log(x)`` would give NaN there, and
    ``xlogy(x, x)`` a NaN gradient.
    """
    return torch.log(x.clamp_min(torch.finfo(x.dtype).tiny))


def _checked(L, weights, validate):
    if validate:
        check_states("L", L)
        if weights is not None:
            total = float(weights.sum())
            if bool((weights < 0).any()) or abs(total - 1) > 1e-6:
                raise ValueError(
                    "weights must be a probability vector p(x) over the batch "
                    f"(non-negative, summing to 1); they sum to {total:.6g}"
                )
    return L


def prior(L, weights=None, *, validate=True):
    """p(z=k) = E[L_k]: (B, K) -> (K,), or (B, K, H, W) -> (K, H, W)."""
    return expectation(_checked(L, weights, validate), weights)


def posterior(L, *, validate=True):
    """p(z=k|x) = L_k(x): returns L itself, checked, shape (B, K)."""
    return _checked(L, None, validate)


def density_ratio(L, weights=None, *, validate=True):
    """p(x|z=k) / p(x) = L_k(x) / E[L_k]: (B, K) -> (B, K)."""
    return L / prior(L, weights, validate=validate)


def conditionals(L, weights, *, validate=True):
    """p(x_i|z=k) on a discrete support with p(x_i) = weights: (B, K) -> (B, K).

    Each column sums to one, and ``conditionals(L, w) @ prior(L, w)`` gives
    back ``w``: Lemma 1 makes a consistent factorisation for any valid L.
    """
    ratio = density_ratio(L, weights, validate=validate)
    return ratio * weights.to(L.dtype).reshape(-1, *([1] * (L.ndim - 1)))


def mutual_information(L, weights=None, *, validate=True):
    """MI(x, z) = E[sum_k L_k log(L_k / E[L_k])] in nats (Prop. 1): scalar.

    Terms with L_k = 0 count as zero.
    For (B, K, H, W) states the value is averaged over locations.
    """
    E_L = prior(L, weights, validate=validate)
    terms = L * (log_floored(L) - log_floored(E_L))  # 0 where L_k = 0
    return expectation(terms.sum(dim=1), weights).mean()
