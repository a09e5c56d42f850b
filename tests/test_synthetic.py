"""Synthetic manifolds: shapes, standardisation, disjointness, the 512-D lift."""

import numpy as np
import pytest
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import adjusted_rand_score

from nbkit.data import MANIFOLDS, N_MANIFOLDS, Lift, lift, make_manifolds
from nbkit.data.synthetic import make_spirals, standardize


@pytest.mark.parametrize("name", MANIFOLDS)
def test_shapes_dtypes_and_balance(name):
    X, y = make_manifolds(name, n_samples=600, seed=1)
    assert X.shape == (600, 2) and X.dtype == np.float32
    assert y.shape == (600,) and y.dtype == np.int64
    counts = np.bincount(y)
    assert len(counts) == N_MANIFOLDS[name]
    assert counts.min() >= 600 // N_MANIFOLDS[name] - 1


@pytest.mark.parametrize("name", MANIFOLDS)
def test_standardised(name):
    X, _ = make_manifolds(name, n_samples=900, seed=2)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(X.std(axis=0), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", MANIFOLDS)
def test_manifolds_are_disjoint_at_default_noise(name):
    # single linkage recovers the labels only if no manifold touches another
    X, y = make_manifolds(name, n_samples=1000, seed=0)
    link = AgglomerativeClustering(N_MANIFOLDS[name], linkage="single")
    assert adjusted_rand_score(y, link.fit_predict(X)) == 1.0


def test_seed_reproducible_and_different():
    a, ya = make_manifolds("spirals", 300, seed=5)
    b, yb = make_manifolds("spirals", 300, seed=5)
    c, _ = make_manifolds("spirals", 300, seed=6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    assert not np.allclose(a, c)


def test_spirals_arms_and_noise():
    X, y = make_spirals(900, noise=0.0, n_arms=3, turns=0.5, random_state=0)
    r = np.linalg.norm(X, axis=1)
    angle = np.arctan2(X[:, 1], X[:, 0])
    # without noise, arm k satisfies angle = r - 0.5 + 2 pi k / 3 (mod 2 pi)
    expected = r - 0.5 + 2 * np.pi * y / 3
    wrapped = np.angle(np.exp(1j * (angle - expected)))
    np.testing.assert_allclose(wrapped, 0.0, atol=1e-9)


def test_standardize_constant_column():
    X = np.array([[1.0, 3.0], [2.0, 3.0], [3.0, 3.0]])
    Z = standardize(X)
    np.testing.assert_allclose(Z[:, 1], 0.0)
    np.testing.assert_allclose(Z[:, 0].std(), 1.0)


def test_lift_is_a_rotation_and_invertible():
    X, _ = make_manifolds("moons", 400, seed=0)
    H, lifter = lift(X, dim=512, seed=3)
    assert H.shape == (400, 512) and H.dtype == np.float32
    Q = lifter.rotation
    np.testing.assert_allclose(Q.T @ Q, np.eye(512), atol=1e-10)
    np.testing.assert_allclose(lifter.inverse_transform(H), X, atol=1e-5)
    # pairwise distances are preserved
    i, j = np.arange(0, 400, 7), np.arange(3, 403, 7) % 400
    d2 = np.linalg.norm(X[i] - X[j], axis=1)
    dH = np.linalg.norm(H[i] - H[j], axis=1)
    np.testing.assert_allclose(dH, d2, rtol=1e-4, atol=1e-5)
    # not a trivial embedding: the mass is spread over many coordinates
    assert (np.abs(H).max(axis=0) > 1e-3).sum() > 500


def test_lift_same_seed_same_rotation_and_make_manifolds_dim():
    X, _ = make_manifolds("circles", 200, seed=4)
    H, _ = make_manifolds("circles", 200, seed=4, dim=512)
    np.testing.assert_allclose(H, Lift(512, 4).transform(X), atol=1e-6)
    assert not np.allclose(Lift(512, 4).rotation, Lift(512, 5).rotation)


def test_lift_float64_exact_round_trip():
    X = np.random.default_rng(0).standard_normal((50, 2))
    lifter = Lift(dim=16, seed=0)
    np.testing.assert_allclose(lifter.inverse_transform(lifter.transform(X)), X)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "swiss"}, "name='swiss' is not allowed"),
        ({"name": "moons", "n_samples": 1}, "n_samples must be >= 2"),
        ({"name": "moons", "noise": -1.0}, "noise must be >= 0"),
        ({"name": "moons", "dim": 1}, "dim must be >= 2"),
    ],
)
def test_make_manifolds_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_manifolds(**kwargs)


def test_lift_bad_shapes():
    lifter = Lift(dim=8, seed=0)
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        lifter.transform(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"shape \(N, 8\)"):
        lifter.inverse_transform(np.zeros((3, 2)))
