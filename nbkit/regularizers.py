"""Regularizers of the Neural Bayes objectives.

* ``uniform_prior``: pushes p(z) = E[L] towards uniform (Eq. 5-6, v1/v2).
* ``smoothness``: the finite-difference Jacobian penalty Rc (Eq. 11-12),
  with perturbations in the span of the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import distributed as _distributed
from ._checks import check_choice, check_number, check_states
from .bayes import log_floored, prior

__all__ = ["PRIORS", "uniform_prior", "data_directions", "sample_zeta", "smoothness"]

PRIORS = ("v1", "v2")
PRIOR_FLOOR = 1e-7  # v2's clamp on E[L_k]: the eps of Eq. 7
ZETA_STD = 0.1  # std of the step size; data are normalised to unit variance


def uniform_prior(L, version="v2", *, validate=True):
    """Rp_v1 or Rp_v2 of (B, K) or (B, K, H, W) states: a scalar.

    v1 = sum_k E[L_k] log E[L_k] (negative entropy of p(z));
    v2 = -sum_k [(1/K) log E[L_k] + ((K-1)/K) log(1 - E[L_k])].
    Both are smallest at E[L_k] = 1/K. For (B, K, H, W) states E[L] is
    taken per location and Rp averaged over locations.
    v2 clamps E[L_k] to [PRIOR_FLOOR, 1 - PRIOR_FLOOR] (1e-7; the upper end
    is one machine epsilon below 1 in bfloat16 and float16): a state the
    whole batch ignores, or one that takes it all, then gives a large finite
    value rather than inf, and no gradient beyond the clamp.
    """
    check_choice("version", version, PRIORS)
    if validate:
        check_states("L", L)
    E_L = prior(L, validate=False)  # (K,) or (K, H, W)
    K = L.shape[1]
    if version == "v1":
        Rp = (E_L * log_floored(E_L)).sum(dim=0)
    else:
        # a collapsed state (E[L_k] = 0 or 1) would give log 0 = -inf
        # (in bfloat16 or float16, 1 - 1e-7 rounds to 1: keep a step below)
        top = 1 - max(PRIOR_FLOOR, torch.finfo(E_L.dtype).eps)
        E_L = E_L.clamp(PRIOR_FLOOR, top)
        Rp = -(torch.log(E_L) / K + (K - 1) / K * torch.log1p(-E_L)).sum(dim=0)
    return Rp.mean()


def data_directions(x, generator=None):
    """Unit directions in the span of the batch: (B, ...) -> (B, ...).

    Row i is d_i = X v_i / ||X v_i|| with X the batch as an n x B matrix and
    v_i ~ N(0, I_B): a random mix of the samples themselves (Eq. 12).
    Inside ``nbkit.distributed.global_batch()`` X is the global batch and
    each rank keeps its own rows of the same (global) mixing matrix.
    """
    X = x.reshape(x.shape[0], -1)  # (B, n): X transposed
    first, reducer = 0, _distributed.current()
    if reducer is not None:
        X, first = reducer.gather(X)  # (N*B, n), this rank's first row
    V = torch.randn(
        (X.shape[0], X.shape[0]), generator=generator, device=x.device, dtype=x.dtype
    )
    D = V[first : first + x.shape[0]] @ X  # row i = sum_j v_ij x_j
    # bring each row's largest |.| into [0.5, 1) first: the sum of squares
    # in the norm underflows for tiny data (and could overflow for large).
    # A power of two scales exactly, so ordinary data get the same bits.
    _, exponent = torch.frexp(D.abs().amax(dim=1, keepdim=True))
    D = torch.ldexp(D, -exponent)
    D = D / D.norm(dim=1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    return D.reshape(x.shape)


def sample_zeta(generator=None, device=None, dtype=torch.float32):
    """One step size zeta ~ N(0, 0.1^2) for the whole batch: 0-d tensor."""
    z = torch.randn((), generator=generator, device=device, dtype=dtype)
    return z * ZETA_STD


def smoothness(
    f: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    zeta=None,
    generator=None,
    *,
    fx: torch.Tensor | None = None,
):
    """Rc = mean_i ||f(x_i) - f(x_i + zeta d_i)||^2 / zeta^2: a scalar.

    ``f`` maps a batch (B, ...) to outputs (B, ...); ``zeta`` is a number or
    None to draw one from N(0, 0.1^2) with ``generator`` (on x's device).
    Pass ``fx = f(x)`` when it is already computed to save a forward pass.
    """
    if not callable(f):
        raise TypeError(f"f must be callable (a model or function), got {f!r}")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a batch tensor (B >= 2, ...), got {shape}")
    if zeta is None:
        zeta = sample_zeta(generator, x.device, x.dtype)
    elif not isinstance(zeta, torch.Tensor):
        zeta = check_number("zeta", zeta)
        if zeta == 0:
            raise ValueError("zeta must be non-zero: Rc divides by zeta^2")
    d = data_directions(x, generator)
    fx = f(x) if fx is None else fx
    fx_moved = f(x + zeta * d)
    diff = (fx - fx_moved).reshape(x.shape[0], -1)
    return diff.pow(2).sum(dim=1).mean() / (zeta * zeta)
