"""Argument checks shared by the library: clear errors before any work starts."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "check_choice",
    "check_number",
    "check_int",
    "check_states",
    "check_probabilities",
    "check_writable_dir",
]


def check_choice(name: str, value, allowed: Iterable):
    """Raise ValueError unless value is one of allowed; return it."""
    allowed = tuple(allowed)
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name}={value!r} is not allowed; use one of {options}")
    return value


def check_number(name: str, value, *, low=None, high=None, low_open=False):
    """Raise unless value is a finite real number in [low, high]; return it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        if not (isinstance(value, torch.Tensor) and value.numel() == 1):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        value = value.item()
    elif not isinstance(value, (int, float)):  # numpy scalars: plain Python
        value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        sign = ">" if low_open else ">="
        raise ValueError(f"{name} must be {sign} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def check_int(name: str, value, *, low=None, high=None):
    """Raise unless value is an integer in [low, high]; return it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)  # numpy integers too
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")
    return value


def _check_tensor(name: str, L, ndims: tuple[int, ...]) -> None:
    if not isinstance(L, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(L).__name__}")
    if not L.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {L.dtype}")
    if L.ndim not in ndims:
        shapes = " or ".join(_SHAPES[n] for n in ndims)
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(L.shape)}")
    if L.shape[0] < 2:
        raise ValueError(
            f"{name} has a batch of {L.shape[0]}; E[L] needs at least 2 samples "
            "(use a larger batch)"
        )


_SHAPES = {1: "(B,)", 2: "(B, K)", 4: "(B, K, H, W)"}


def check_probabilities(name: str, L, ndims=(1, 2)) -> None:
    """Check L holds values in [0, 1] with a batch of at least two."""
    _check_tensor(name, L, ndims)
    bad = (L < 0) | (L > 1) | ~torch.isfinite(L)
    if bool(bad.any()):
        lo, hi = L.min().item(), L.max().item()
        raise ValueError(
            f"{name} must hold probabilities in [0, 1]; got values in "
            f"[{lo:.4g}, {hi:.4g}] (apply a sigmoid or softmax first)"
        )


def check_states(name: str, L, ndims=(2, 4), tol: float | None = None) -> None:
    """Check L is (B, K[, H, W]) with rows on the simplex along dim 1.

    Rows may miss one by ``tol``: 1e-4 by default, or four machine epsilons
    where that is more (a bfloat16 softmax sums to one within about 0.004).
    """
    check_probabilities(name, L, ndims)
    if L.shape[1] < 2:
        raise ValueError(f"{name} needs K >= 2 states along dim 1, got {L.shape[1]}")
    if tol is None:
        tol = max(1e-4, 4 * torch.finfo(L.dtype).eps)
    err = (L.sum(dim=1) - 1).abs().max().item()
    if err > tol:
        raise ValueError(
            f"{name} rows must sum to one along dim 1 (tolerance {tol:g}); "
            f"the largest deviation is {err:.3g} (apply a softmax over dim 1)"
        )


def check_writable_dir(name: str, path) -> Path:
    """Raise unless ``path`` is, or can be created as, a writable folder.

    The nearest existing ancestor must be a folder we may write into; the
    folder itself is not created. Returns ``Path(path)``.
    """
    folder = Path(path)
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(
            f"{name}={str(folder)!r} cannot be created: {ancestor} is a file, "
            f"not a folder; choose another {name}"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{name}={str(folder)!r} is not writable (no write permission on "
            f"{ancestor}); choose another {name}"
        )
    return folder
