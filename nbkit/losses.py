"""The Neural Bayes objectives, written as losses to minimise.

* ``mim_loss``: mutual information maximisation, Eq. 7 without Rc.
* ``dml_loss``: disjoint manifold labelling, binary Eq. 13 or K-way Eq. 69.
* ``neg_mutual_information``: J and J_hat of Theorem 1.
* ``multiscale_states`` / ``mim_multiscale_loss``: Eq. 14-15 on CNN states.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_choice, check_number, check_probabilities, check_states
from .bayes import expectation, log_floored, prior
from .regularizers import PRIORS, uniform_prior

__all__ = [
    "EPS",
    "mim_loss",
    "neg_mutual_information",
    "dml_loss",
    "js_divergence",
    "multiscale_states",
    "mim_multiscale_loss",
]

EPS = 1e-7


def _entropy_term(L, eps):
    """-E[sum_k L_k log sg(L_k + eps)]: batch and location mean, a scalar."""
    return -(L * torch.log(L.detach() + eps)).sum(dim=1).mean()


def mim_loss(L, alpha=0.0, prior="v2", eps=EPS, *, validate=True):
    """Eq. 7 without Rc: -E[sum_k L_k log sg(L_k + eps)] + (1 + alpha) Rp.

    L: (B, K) or (B, K, H, W) softmax states (channels as states, the
    entropy term averaged over batch and locations). Returns a scalar.
    With alpha = 0 and prior = "v1" its value is -MI(x, z) up to eps.
    """
    check_number("alpha", alpha, low=0)
    check_choice("prior", prior, PRIORS)
    check_number("eps", eps, low=0)
    if validate:
        check_states("L", L)
    Rp = uniform_prior(L, prior, validate=False)
    return _entropy_term(L, eps) + (1 + alpha) * Rp


def neg_mutual_information(L, stop_gradient=False, *, validate=True):
    """J = -E[sum_k L_k log(L_k / E[L_k])], or J_hat with sg on the ratio.

    Theorem 1: both have the same gradient with respect to the parameters
    of L, so no gradient needs to flow through E[L]. L: (B, K). Scalar.
    """
    if validate:
        check_states("L", L)
    E_L = prior(L, validate=False)
    log_ratio = log_floored(L) - log_floored(E_L)  # finite where L_k = 0
    if stop_gradient:
        log_ratio = log_ratio.detach()
    return -(L * log_ratio).sum(dim=1).mean()


def _ratio(T, E_T):
    """T / E[T] per column; 1 in a column that holds no mass (E[T] = 0).

    A column whose mass is below the square root of the dtype's smallest
    normal number (about 1e-19 in float32) keeps its exact value but passes
    no gradient: d(T / E[T]) / dE[T] = -T / E[T]^2 would overflow to inf
    there and turn every gradient of the loss into NaN.
    """
    faint = E_T.lt(math.sqrt(torch.finfo(E_T.dtype).tiny))
    live = T / torch.where(faint, torch.ones_like(E_T), E_T)  # no 0/0 in grads
    with torch.no_grad():
        frozen = torch.where(E_T <= 0, torch.ones_like(T), T / E_T)
    return torch.where(faint, frozen, live)


def _two_way_dml(L, eps):
    """0.5 E[f1 log(1 + f0/f1)] + 0.5 E[f0 log(1 + f1/f0)], per column.

    A partition that holds every sample or none (E[L_k] = 1 or 0, e.g. a
    float32 softmax saturated on one state for the whole batch) has no
    conditional on one side; it counts as no separation (f1 = f0 = 1, the
    column's term is log 2) instead of 0/0. E[1 - L] is averaged directly,
    not taken as 1 - E[L], so tiny complements are not rounded away.
    """
    # batch means via expectation: over all ranks under global_batch()
    f1 = _ratio(L, expectation(L)) + eps
    f0 = _ratio(1 - L, expectation(1 - L)) + eps
    both = f1 + f0
    # f log(1 + g/f) = f log(f + g) - f log f, with 0 log 0 = 0
    term1 = torch.xlogy(f1, both) - torch.xlogy(f1, f1)
    term0 = torch.xlogy(f0, both) - torch.xlogy(f0, f0)
    return 0.5 * term1.mean(dim=0) + 0.5 * term0.mean(dim=0)


def dml_loss(L, eps=EPS, *, validate=True):
    """Neural Bayes-DML objective without Rc: a scalar.

    L of shape (B,) or (B, 1): p(z=1|x) for two partitions (Eq. 13).
    L of shape (B, K), rows summing to one: K partitions (Eq. 69), each
    state against all the others, averaged over k.
    Without eps the value is log 2 minus the Jensen-Shannon divergence
    between the conditionals p(x|z=1) and p(x|z=0) (Prop. 2).
    A state the batch all but ignores (E[L_k] below about 1e-19 in float32)
    keeps its exact term but passes no gradient through it: its gradient
    with respect to L_k would overflow the dtype.
    """
    check_number("eps", eps, low=0)
    if validate:
        check_probabilities("L", L, ndims=(1, 2))
        if L.ndim == 2 and L.shape[1] > 1:
            check_states("L", L, ndims=(2,))
    L2 = L.reshape(L.shape[0], -1)  # (B, 1) or (B, K)
    return _two_way_dml(L2, eps).mean()


def js_divergence(L, *, validate=True):
    """JS divergence (nats) between p(x|z=k) and p(x|z!=k), mean over k.

    The quantity DML maximises: log 2 - dml_loss(L, eps=0). L as in
    ``dml_loss``. Lies in [0, log 2].
    """
    with torch.no_grad():
        return math.log(2) - dml_loss(L, eps=0.0, validate=validate)


def multiscale_states(hidden, pool=True):
    """Softmax states of Eq. 14-15 from hidden layers: a list of tensors.

    ``hidden`` is a list of post-ReLU maps, (B, C, H, W) from a CNN or
    (B, C) from an MLP. With ``pool`` each map also gives a 2x2 stride-2
    average-pooled copy (a side shorter than 2 pools with its own size),
    so four CNN maps give eight states; (B, C) layers are not pooled.
    The softmax is over channels (dim 1).
    """
    if isinstance(hidden, torch.Tensor) or len(hidden) == 0:
        got = "a tensor" if isinstance(hidden, torch.Tensor) else "an empty list"
        raise ValueError(
            f"hidden must be a non-empty list of hidden states, got {got}; "
            "use model(x, return_hidden=True)[1]"
        )
    states = []
    for h in hidden:
        if h.ndim not in (2, 4):
            raise ValueError(
                f"hidden states must be (B, C) or (B, C, H, W), got {tuple(h.shape)}"
            )
        states.append(h)
        if pool and h.ndim == 4:
            k = (min(2, h.shape[2]), min(2, h.shape[3]))
            states.append(F.avg_pool2d(h, kernel_size=k, stride=k))
    return [torch.softmax(s, dim=1) for s in states]


def mim_multiscale_loss(hidden, alpha=0.0, prior="v2", pool=True, eps=EPS):
    """Eq. 14-15: ``mim_loss`` averaged over the multi-scale states: scalar."""
    states = multiscale_states(hidden, pool=pool)
    losses = [mim_loss(L, alpha, prior, eps, validate=False) for L in states]
    return torch.stack(losses).mean()
