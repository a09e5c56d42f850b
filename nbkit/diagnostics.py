"""Measurements behind the teaching notebooks.

* ``mixture_on_grid`` / ``smooth_states``: a 1-D Gaussian mixture on a fine
  grid, where p(x), p(z), p(x|z) and p(z|x) are known exactly, and an
  arbitrary smooth softmax L(x) to compare with the true posterior.
* ``gradient_fidelity``: how close mini-batch gradients of an objective that
  uses E[L] come to the full-data gradient (bias and spread, Theorem 1).
* ``collapse_path``: the v1 and v2 uniform priors and their gradients as one
  E[L_k] grows from 1/K to 1 (Appendix C.1).
* ``first_layer_activations`` / ``nearest_sample_correlation`` /
  ``filter_report``: what the first layer of an MLP learned (dead units,
  unused states, memorised inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ._checks import check_choice, check_int, check_number
from .regularizers import PRIORS, uniform_prior

__all__ = [
    "MixtureGrid",
    "mixture_on_grid",
    "smooth_states",
    "entropy",
    "flat_grad",
    "gradient_fidelity",
    "fidelity_curve",
    "collapse_path",
    "first_layer_activations",
    "nearest_sample_correlation",
    "filter_report",
]


@dataclass(frozen=True)
class MixtureGrid:
    """A K-component mixture on N grid points, every quantity exact.

    x: (N,) grid; p_x: (N,) probabilities summing to one; p_z: (K,);
    p_x_given_z: (N, K), each column summing to one; posterior: (N, K),
    each row summing to one.
    """

    x: torch.Tensor
    p_x: torch.Tensor
    p_z: torch.Tensor
    p_x_given_z: torch.Tensor
    posterior: torch.Tensor


def mixture_on_grid(
    weights: Sequence[float],
    means: Sequence[float],
    stds: Sequence[float] | float = 1.0,
    n_points: int = 801,
    x_lim: float | None = None,
    dtype=torch.float64,
) -> MixtureGrid:
    """1-D Gaussian mixture restricted to a uniform grid of n_points.

    Each component is its Gaussian density on the grid, normalised to sum
    to one, so Bayes' rule holds exactly on this discrete support.
    ``x_lim`` defaults to 4 standard deviations beyond the outer means.
    """
    check_int("n_points", n_points, low=2)
    p_z = torch.as_tensor(weights, dtype=dtype).flatten()
    mu = torch.as_tensor(means, dtype=dtype).flatten()
    K = p_z.numel()
    sd = torch.as_tensor(stds, dtype=dtype).flatten().expand(K).clone()
    if K < 1 or mu.numel() != K:
        raise ValueError(
            f"weights and means must have the same length K >= 1; got "
            f"{p_z.numel()} weights and {mu.numel()} means"
        )
    if bool((p_z < 0).any()) or abs(float(p_z.sum()) - 1) > 1e-9:
        raise ValueError(f"weights must be >= 0 and sum to 1, got {p_z.tolist()}")
    if bool((sd <= 0).any()):
        raise ValueError(f"stds must be positive, got {sd.tolist()}")
    if x_lim is None:
        x_lim = float((mu.abs() + 4 * sd).max())
    x = torch.linspace(-x_lim, x_lim, n_points, dtype=dtype)
    log_density = -0.5 * ((x[:, None] - mu) / sd) ** 2  # (N, K), unnormalised
    p_x_given_z = torch.softmax(log_density, dim=0)  # columns sum to one
    joint = p_x_given_z * p_z  # (N, K): p(x, z)
    p_x = joint.sum(dim=1)
    posterior = joint / p_x[:, None]
    return MixtureGrid(x, p_x, p_z, p_x_given_z, posterior)


def smooth_states(x, n_states=3, temperature=1.0, seed=0, n_waves=3):
    """An arbitrary smooth softmax L(x): (N,) -> (N, n_states), rows sum to one.

    The logits are sums of ``n_waves`` random low-frequency sinusoids (fixed
    by ``seed``) divided by ``temperature``: a small temperature makes L
    close to a hard partition of the line, a large one makes it uniform.
    """
    check_int("n_states", n_states, low=2)
    check_number("temperature", temperature, low=0, low_open=True)
    g = torch.Generator().manual_seed(seed)
    shape = (n_waves, n_states)
    freq = torch.rand(shape, generator=g, dtype=torch.float64) * 0.8 + 0.1
    phase = torch.rand(shape, generator=g, dtype=torch.float64) * 2 * math.pi
    amp = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1, 1)
    logits = (amp * torch.sin(freq * t + phase)).sum(dim=1)  # (N, K)
    return torch.softmax(logits / temperature, dim=1).to(torch.as_tensor(x).dtype)


def entropy(p, dim=-1):
    """Shannon entropy in nats along dim (0 log 0 = 0): (..., K) -> (...)."""
    return -torch.xlogy(p, p).sum(dim=dim)


def flat_grad(loss, params, retain_graph=False):
    """Gradient of a scalar loss as one flat vector: (n_params,).

    ``retain_graph=True`` keeps the graph for another gradient of it.
    """
    grads = torch.autograd.grad(
        loss, params, retain_graph=retain_graph, allow_unused=True
    )
    parts = [
        torch.zeros_like(p).flatten() if g is None else g.flatten()
        for g, p in zip(grads, params, strict=True)
    ]
    return torch.cat(parts)


def gradient_fidelity(
    model: torch.nn.Module,
    X: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    mbs: int,
    n_batches: int = 20,
    seed: int = 0,
    full_grad: torch.Tensor | None = None,
) -> dict:
    """Compare mini-batch gradients with the full-data gradient g: a dict.

    ``loss_fn(model(x))`` is the objective on a batch x, with E[L] taken
    over that batch. g is its gradient on all of X (E[L] over every point);
    g_b its gradient on a random batch of ``mbs`` points (drawn without
    replacement), for ``n_batches`` batches; g_bar is their mean, the
    expected mini-batch gradient. Returned (relative to ||g||):

    * ``cosine``, ``cosine_std``: mean and std of cos(g_b, g);
    * ``rel_error``: mean ||g_b - g|| / ||g|| (bias and noise together);
    * ``bias``: ||g_bar - g|| / ||g||, what averaging batches cannot remove;
    * ``spread``: sqrt(mean ||g_b - g_bar||^2) / ||g||, the batch noise;
    * ``bias_floor``: spread / sqrt(n_batches), the Monte Carlo error of
      ``bias`` itself (a bias below it is not resolved);
    * ``cosines``: the per-batch cosines, a list.
    """
    N = X.shape[0]
    check_int("mbs", mbs, low=2, high=N)
    check_int("n_batches", n_batches, low=1)
    params = [p for p in model.parameters() if p.requires_grad]
    if full_grad is None:
        full_grad = flat_grad(loss_fn(model(X)), params)
    g = full_grad
    g_norm = g.norm()
    gen = torch.Generator().manual_seed(seed)
    batch_grads = []
    for _ in range(n_batches):
        idx = torch.randperm(N, generator=gen)[:mbs].to(X.device)
        batch_grads.append(flat_grad(loss_fn(model(X[idx])), params))
    G = torch.stack(batch_grads)  # (n_batches, n_params)
    cos = torch.nn.functional.cosine_similarity(G, g[None], dim=1)
    g_bar = G.mean(dim=0)
    spread = (G - g_bar).pow(2).sum(dim=1).mean().sqrt() / g_norm
    return {
        "mbs": mbs,
        "cosine": float(cos.mean()),
        "cosine_std": float(cos.std()) if n_batches > 1 else 0.0,
        "rel_error": float(((G - g).norm(dim=1) / g_norm).mean()),
        "bias": float((g_bar - g).norm() / g_norm),
        "spread": float(spread),
        "bias_floor": float(spread) / math.sqrt(n_batches),
        "cosines": cos.tolist(),
    }


def fidelity_curve(model, X, loss_fn, mbs_list, n_batches=20, seed=0) -> list:
    """``gradient_fidelity`` for every mini-batch size in mbs_list: list of dicts."""
    params = [p for p in model.parameters() if p.requires_grad]
    g = flat_grad(loss_fn(model(X)), params)  # shared full-data gradient
    return [
        gradient_fidelity(model, X, loss_fn, m, n_batches, seed, full_grad=g)
        for m in mbs_list
    ]


def collapse_path(n_states: int, E_k, version: str = "v2", batch: int = 2) -> dict:
    """Rp and its gradients as E[L_1] = E_k and the others share 1 - E_k.

    E_k: (T,) values in [1/K, 1). Returns (T,) tensors, all by autograd on
    ``uniform_prior``: ``Rp``; ``dRp_dE``, the coefficient of dE[L_1]/dtheta
    (the paper's Eq. 24-25 view; for v1 it is log E[L_1] + 1, where the
    constant 1 cancels against the other states because the E[L_k] sum
    to one); ``logit_grad``, the norm of dRp/du for E[L] = softmax(u),
    the part that reaches the network through its softmax.
    """
    check_choice("version", version, PRIORS)
    K = check_int("n_states", n_states, low=2)
    E_k = torch.as_tensor(E_k, dtype=torch.float64).flatten()
    if bool((E_k < 1 / K - 1e-12).any()) or bool((E_k >= 1).any()):
        raise ValueError(f"E_k must lie in [1/K, 1) = [{1 / K:.4g}, 1)")
    Rp, dRp_dE, logit_grad = [], [], []
    for t in E_k:
        E = torch.cat([t[None], ((1 - t) / (K - 1)).expand(K - 1)])
        E = E.clone().requires_grad_(True)
        value = uniform_prior(E.expand(batch, K), version, validate=False)
        (dE,) = torch.autograd.grad(value, E)
        u = torch.log(E.detach()).requires_grad_(True)
        L = torch.softmax(u, dim=0).expand(batch, K)
        (du,) = torch.autograd.grad(uniform_prior(L, version, validate=False), u)
        Rp.append(value.detach())
        dRp_dE.append(dE[0])
        logit_grad.append(du.norm())
    return {
        "E_k": E_k,
        "Rp": torch.stack(Rp),
        "dRp_dE": torch.stack(dRp_dE),
        "logit_grad": torch.stack(logit_grad),
    }


@torch.no_grad()
def first_layer_activations(model, X, batch_size=1000):
    """First hidden state of ``model(x, return_hidden=True)``: (N, ...) -> (N, C).

    Runs in eval mode (batch norm uses its running statistics) and restores
    the model's mode afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        parts = [
            model(X[i : i + batch_size], return_hidden=True)[1][0]
            for i in range(0, X.shape[0], batch_size)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts)


@torch.no_grad()
def nearest_sample_correlation(filters, X):
    """Largest |Pearson correlation| of each filter with any sample: (C,).

    filters: (C, n) weight rows; X: (N, n) samples (or (N, ...) flattened).
    Near 1 means the filter is a copy (up to sign and scale) of one input.
    """
    W = filters.reshape(filters.shape[0], -1).double()
    S = X.reshape(X.shape[0], -1).double()
    if W.shape[1] != S.shape[1]:
        raise ValueError(
            f"filters have {W.shape[1]} inputs but samples have {S.shape[1]}"
        )

    def unit(A):
        A = A - A.mean(dim=1, keepdim=True)
        return A / A.norm(dim=1, keepdim=True).clamp_min(1e-12)

    return (unit(W) @ unit(S).T).abs().amax(dim=1).to(filters.dtype)


def filter_report(model, X, images=None, memorised_at=0.7):
    """What the first layer learned, as fractions of its units: a dict.

    ``dead``: units whose ReLU output is zero on every sample of X (they get
    no gradient and never change again); ``unused``: units that are never
    the largest, i.e. never the most probable softmax state z of that
    layer; ``memorised``: filters whose largest |correlation| with one of
    ``images`` (default X), as pixels, exceeds ``memorised_at``; and
    ``nearest_corr``, the median of that correlation.
    """
    from .metrics import dead_fraction

    check_number("memorised_at", memorised_at, low=0, high=1)
    A = first_layer_activations(model, X)  # (N, C)
    wins = torch.bincount(A.argmax(dim=1), minlength=A.shape[1])
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    W = first.weight.detach()  # (C, n): one filter per unit
    corr = nearest_sample_correlation(W, X if images is None else images)
    return {
        "dead": dead_fraction(A),
        "unused": float((wins == 0).double().mean()),
        "memorised": float((corr > memorised_at).double().mean()),
        "nearest_corr": float(corr.median()),
    }
