"""Synthetic disjoint manifolds in 2-D (paper Fig. 4) and their lift to high-D.

* ``make_manifolds(name, ...)``: "moons", "circles", "blobs" or "spirals",
  standardised to zero mean and unit variance per coordinate.
* ``make_spirals``: K interleaved Archimedean spiral arms.
* ``Lift`` / ``lift``: zero padding to ``dim`` coordinates plus a random
  rotation, with the exact inverse back to the plane for plotting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import make_blobs, make_circles, make_moons

from .._checks import check_choice, check_int, check_number

__all__ = [
    "MANIFOLDS",
    "N_MANIFOLDS",
    "DEFAULT_NOISE",
    "make_spirals",
    "standardize",
    "make_manifolds",
    "Lift",
    "lift",
]

MANIFOLDS = ("moons", "circles", "blobs", "spirals")
N_MANIFOLDS = {"moons": 2, "circles": 2, "blobs": 3, "spirals": 3}
# noise std in the generator's own units, before standardisation
DEFAULT_NOISE = {"moons": 0.05, "circles": 0.04, "blobs": 0.6, "spirals": 0.15}
# three well separated blob centres on a triangle
_BLOB_CENTERS = np.array([[0.0, 4.0], [-3.5, -2.0], [3.5, -2.0]])
SPIRAL_TURNS = 0.5  # revolutions of each arm in make_manifolds("spirals")


def make_spirals(n_samples=1000, noise=0.15, n_arms=3, turns=0.5, random_state=None):
    """K spiral arms r = theta around the origin: X (N, 2) float64, y (N,).

    Arm k is turned by 2 pi k / n_arms; ``turns`` is the number of full
    revolutions of each arm; ``noise`` is the std of the isotropic Gaussian
    added to every point (the arms lie 2 pi / n_arms apart radially).
    """
    check_int("n_samples", n_samples, low=1)
    check_int("n_arms", n_arms, low=1)
    check_number("noise", noise, low=0)
    check_number("turns", turns, low=0, low_open=True)
    rng = np.random.default_rng(random_state)
    y = np.arange(n_samples) % n_arms
    # sqrt keeps the density along each arm roughly uniform in arc length
    t = np.sqrt(rng.uniform(0.02, 1.0, n_samples)) * turns * 2 * np.pi
    angle = t + 2 * np.pi * y / n_arms
    r = t + 0.5  # the offset keeps the arms apart near the centre
    X = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    X += noise * rng.standard_normal(X.shape)
    return X, y


def standardize(X):
    """Zero mean and unit variance per column: (N, D) -> (N, D), same dtype."""
    X = np.asarray(X)
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


def make_manifolds(name, n_samples=1000, noise=None, seed=0, dim=2):
    """One of the paper's sets: X float32 (N, dim), y int64 (N,) manifold ids.

    ``name`` in MANIFOLDS; ``noise`` None takes DEFAULT_NOISE[name]. The
    2-D set is standardised; ``dim`` > 2 lifts it with ``lift(X, dim, seed)``
    (use ``Lift(dim, seed)`` to get the same rotation for plotting).
    """
    check_choice("name", name, MANIFOLDS)
    check_int("n_samples", n_samples, low=N_MANIFOLDS[name])
    check_int("dim", dim, low=2)
    noise = (
        DEFAULT_NOISE[name] if noise is None else check_number("noise", noise, low=0)
    )
    rs = int(np.random.SeedSequence(seed).generate_state(1)[0])
    if name == "moons":
        X, y = make_moons(n_samples, noise=noise, random_state=rs)
    elif name == "circles":
        X, y = make_circles(n_samples, noise=noise, factor=0.5, random_state=rs)
    elif name == "blobs":
        X, y = make_blobs(
            n_samples, centers=_BLOB_CENTERS, cluster_std=noise, random_state=rs
        )
    else:
        X, y = make_spirals(
            n_samples, noise=noise, n_arms=3, turns=SPIRAL_TURNS, random_state=rs
        )
    X = standardize(X).astype(np.float32)
    y = np.asarray(y, dtype=np.int64)
    if dim > 2:
        X, _ = lift(X, dim=dim, seed=seed)
    return X, y


@dataclass(frozen=True)
class Lift:
    """Zero padding from 2 to ``dim`` coordinates, then a random rotation.

    ``rotation`` is a (dim, dim) orthogonal matrix Q drawn from ``seed``
    (QR of a Gaussian, signs fixed so Q is Haar distributed); a lifted
    row is Q [x, 0, ..., 0], so distances are preserved exactly.
    """

    dim: int = 512
    seed: int = 0

    def __post_init__(self):
        check_int("dim", self.dim, low=2)
        rng = np.random.default_rng(self.seed)
        Q, R = np.linalg.qr(rng.standard_normal((self.dim, self.dim)))
        Q = Q * np.sign(np.diag(R))  # Haar measure: fix column signs
        object.__setattr__(self, "rotation", Q)

    def transform(self, X):
        """Lift points: (N, 2) -> (N, dim), float32 unless given float64."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != 2:
            raise ValueError(f"X must have shape (N, 2), got {X.shape}")
        dtype = X.dtype if X.dtype == np.float64 else np.float32
        # Q [x, 0] only uses the first two columns of Q
        return (X.astype(np.float64) @ self.rotation[:, :2].T).astype(dtype)

    def inverse_transform(self, X):
        """Project back to the plane: (N, dim) -> (N, 2), Q^T then first two."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.dim:
            raise ValueError(f"X must have shape (N, {self.dim}), got {X.shape}")
        dtype = X.dtype if X.dtype == np.float64 else np.float32
        return (X.astype(np.float64) @ self.rotation[:, :2]).astype(dtype)


def lift(X, dim=512, seed=0):
    """Embed 2-D points in ``dim`` coordinates: (N, 2) -> ((N, dim), Lift)."""
    lifter = Lift(dim=dim, seed=seed)
    return lifter.transform(X), lifter
