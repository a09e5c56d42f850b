"""Uniform priors (Eq. 5-6, Appendix C.1) and the smoothness term Rc."""

import math

import pytest
import torch

from nbkit.regularizers import (
    data_directions,
    sample_zeta,
    smoothness,
    uniform_prior,
)

pytestmark = pytest.mark.usefixtures("float64")


def states_with_prior(q, B=4):
    """A batch whose every row is q, so that E[L] = q exactly."""
    return q.expand(B, -1)


@pytest.mark.parametrize("K", [2, 3, 10])
def test_priors_at_uniform_take_their_analytic_values(K):
    L = states_with_prior(torch.full((K,), 1 / K))
    v1 = uniform_prior(L, "v1").item()
    v2 = uniform_prior(L, "v2").item()
    assert v1 == pytest.approx(-math.log(K), abs=1e-12)
    expected_v2 = math.log(K) - (K - 1) * math.log((K - 1) / K)
    assert v2 == pytest.approx(expected_v2, abs=1e-12)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("K", [2, 5])
def test_priors_are_smallest_at_uniform(version, K):
    # q = softmax(theta): the gradient at theta = 0 vanishes and no other
    # point of the simplex does better
    theta = torch.zeros(K, requires_grad=True)
    Rp = uniform_prior(states_with_prior(torch.softmax(theta, 0)), version)
    (grad,) = torch.autograd.grad(Rp, theta)
    assert grad.abs().max().item() < 1e-14
    gen = torch.Generator().manual_seed(0)
    others = torch.softmax(3 * torch.randn(500, K, generator=gen), 1)
    values = torch.stack([uniform_prior(states_with_prior(q), version) for q in others])
    assert values.min().item() > Rp.item()


def peaked(p, K):
    """E[L] with one state at p and the rest sharing 1 - p equally."""
    return torch.tensor([p] + [(1 - p) / (K - 1)] * (K - 1))


@pytest.mark.parametrize("K", [2, 10])
def test_coefficient_of_the_peaked_state_c1(K):
    # Appendix C.1: dRp/dtheta = sum_k c_k dE[L_k]/dtheta. Because the
    # dE[L_k]/dtheta sum to zero, v1's c_k = log E[L_k] (+1 dropped).
    # As E[L_1] -> 1, v1's c_1 -> 0 and v2's c_1 grows without bound.
    coeffs = {}
    for version in ("v1", "v2"):
        row = []
        for p in (0.9, 0.99, 0.999999):
            q = peaked(p, K).requires_grad_()
            (g,) = torch.autograd.grad(uniform_prior(states_with_prior(q), version), q)
            row.append(g[0].item() - (1 if version == "v1" else 0))
        coeffs[version] = row
    assert coeffs["v1"][-1] == pytest.approx(math.log(0.999999), abs=1e-9)
    assert abs(coeffs["v1"][-1]) < 1e-5
    v2_expected = -1 / (K * 0.999999) + (K - 1) / (K * 1e-6)
    assert coeffs["v2"][-1] == pytest.approx(v2_expected, rel=1e-6)
    assert coeffs["v2"][0] < coeffs["v2"][1] < coeffs["v2"][2]


@pytest.mark.parametrize("K", [2, 10])
def test_gradient_through_softmax_logits_vanishes_for_v1_only(K):
    # with E[L] = softmax(a), dRp/da -> 0 for v1 but tends to a non-zero
    # limit for v2: its c_1 ~ (K-1)/(K(1-p)) cancels the softmax's (1-p)
    for p, tol in [(1 - 1e-6, 1e-4)]:
        q = peaked(p, K)
        a = torch.log(q).requires_grad_()
        norms = {}
        for version in ("v1", "v2"):
            Rp = uniform_prior(states_with_prior(torch.softmax(a, 0)), version)
            (g,) = torch.autograd.grad(Rp, a)
            norms[version] = g.abs().max().item()
        assert norms["v1"] < tol
        assert norms["v2"] == pytest.approx(2 * (K - 1) / K, rel=1e-3)


def test_prior_of_maps_averages_locations():
    L = torch.softmax(torch.randn(7, 3, 2, 2), 1)
    per_location = [uniform_prior(L[:, :, i, j]) for i in range(2) for j in range(2)]
    expected = torch.stack(per_location).mean()
    torch.testing.assert_close(uniform_prior(L), expected)


def test_unknown_prior_version_is_refused():
    L = torch.softmax(torch.randn(4, 3), 1)
    with pytest.raises(ValueError, match=r"version='v3' is not allowed.*'v1', 'v2'"):
        uniform_prior(L, version="v3")


def test_data_directions_are_unit_and_in_the_span_of_the_batch():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 20, generator=gen)  # 5 points in 20-D: a 5-D span
    d = data_directions(x, gen)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(5))
    coef = torch.linalg.lstsq(x.T, d.T).solution
    torch.testing.assert_close(x.T @ coef, d.T, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("scale", "dtype"),
    [(1e-300, torch.float64), (1e-25, torch.float32), (100.0, torch.float16)],
)
def test_data_directions_stay_unit_for_tiny_and_large_data(scale, dtype):
    """Regression: the norm's sum of squares underflowed for tiny data, and d
    came out up to ~1e8 long; pixel-sized float16 data must stay unit too."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(6, 3072, generator=gen)
    d = data_directions((scale * x).to(dtype), torch.Generator().manual_seed(7))
    assert d.dtype == dtype
    tol = 1e-3 if dtype == torch.float16 else 1e-6
    torch.testing.assert_close(d.norm(dim=1).double(), torch.ones(6), atol=tol, rtol=0)
    # the same directions as for the data at unit scale
    unit = data_directions(x.to(dtype), torch.Generator().manual_seed(7))
    torch.testing.assert_close(d, unit, atol=tol, rtol=0)


def test_smoothness_of_a_linear_map_is_the_squared_norm_of_W_d():
    W = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    x = torch.randn(10, 6, generator=torch.Generator().manual_seed(3))
    d = data_directions(x, torch.Generator().manual_seed(4))
    expected = (d @ W.T).pow(2).sum(1).mean()
    for zeta in (0.3, -0.05):
        Rc = smoothness(lambda t: t @ W.T, x, zeta, torch.Generator().manual_seed(4))
        torch.testing.assert_close(Rc, expected, rtol=1e-10, atol=0)


def test_smoothness_draws_zeta_from_the_generator_and_reuses_fx():
    # f(t) = t^2 is not linear, so Rc depends on the zeta drawn:
    # (f(x + zeta d) - f(x)) / zeta = 2 x d + zeta d^2
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(5))
    calls = []

    def f(t):
        calls.append(t)
        return t**2

    Rc = smoothness(f, x, generator=torch.Generator().manual_seed(0), fx=x**2)
    assert len(calls) == 1  # only the perturbed pass ran
    gen = torch.Generator().manual_seed(0)
    zeta = sample_zeta(gen, dtype=x.dtype)
    d = data_directions(x, gen)
    expected = (2 * x * d + zeta * d**2).pow(2).sum(1).mean()
    torch.testing.assert_close(Rc, expected)


def test_smoothness_refuses_bad_input():
    with pytest.raises(ValueError, match="zeta must be non-zero"):
        smoothness(lambda t: t, torch.randn(4, 2), zeta=0.0)
    with pytest.raises(ValueError, match="x must be a batch tensor"):
        smoothness(lambda t: t, torch.randn(1, 2))
    with pytest.raises(TypeError, match="f must be callable"):
        smoothness(3, torch.randn(4, 2))
