"""Lemma 1 and Prop. 1 against values computed independently."""

import math

import numpy as np
import pytest
import torch

from nbkit import bayes

pytestmark = pytest.mark.usefixtures("float64")


def gaussian_mixture_toy(n=400, weights=(0.3, 0.7), means=(-1.5, 1.0), std=0.6):
    """A 1-D mixture on a grid: p(x_i), the true posterior and the components."""
    x = torch.linspace(-5, 5, n)
    pi = torch.tensor(weights)
    comps = torch.stack([torch.exp(-0.5 * ((x - m) / std) ** 2) for m in means], 1)
    comps = comps / comps.sum(0)  # p(x_i|z=k) on the grid, columns sum to 1
    joint = comps * pi  # p(x_i, z=k)
    p_x = joint.sum(1)
    return p_x, joint / p_x[:, None], comps, pi


def test_true_posterior_recovers_prior_and_components():
    p_x, L, comps, pi = gaussian_mixture_toy()
    torch.testing.assert_close(bayes.prior(L, p_x), pi, rtol=0, atol=1e-12)
    torch.testing.assert_close(bayes.conditionals(L, p_x), comps, rtol=0, atol=1e-12)


def test_any_softmax_gives_a_consistent_factorisation():
    p_x, _, _, _ = gaussian_mixture_toy()
    x = torch.linspace(-5, 5, p_x.numel())
    L = torch.softmax(torch.stack([x, -0.5 * x**2, torch.sin(3 * x)], 1), 1)
    cond = bayes.conditionals(L, p_x)
    torch.testing.assert_close(cond.sum(0), torch.ones(3), rtol=0, atol=1e-12)
    mixture = cond @ bayes.prior(L, p_x)
    torch.testing.assert_close(mixture, p_x, rtol=0, atol=1e-15)


def test_density_ratio_is_L_over_batch_mean():
    L = torch.softmax(torch.randn(50, 4), 1)
    ratio = bayes.density_ratio(L)
    torch.testing.assert_close(ratio.mean(0), torch.ones(4))
    torch.testing.assert_close(ratio[3, 2], L[3, 2] / L[:, 2].mean())


def test_mutual_information_equals_the_definition_on_a_joint_table():
    p_x, L, _, _ = gaussian_mixture_toy()
    joint = (L * p_x[:, None]).numpy()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    expected = float(np.sum(joint * np.log(joint / outer)))
    assert bayes.mutual_information(L, p_x).item() == pytest.approx(expected, abs=1e-12)


def test_mutual_information_limits():
    # a one-hot balanced L carries log K nats; a constant L carries none
    K = 4
    L = torch.eye(K).repeat(5, 1)
    assert bayes.mutual_information(L).item() == pytest.approx(math.log(K), abs=1e-12)
    L = torch.full((20, K), 1 / K)
    assert bayes.mutual_information(L).item() == pytest.approx(0.0, abs=1e-12)


def test_prior_of_maps_is_per_location():
    L = torch.softmax(torch.randn(6, 3, 2, 5), 1)
    assert bayes.prior(L).shape == (3, 2, 5)
    torch.testing.assert_close(bayes.prior(L)[:, 1, 4], L[:, :, 1, 4].mean(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    L = torch.softmax(torch.randn(8, 3, dtype=dtype), 1)
    assert bayes.mutual_information(L).dtype == dtype
    assert bayes.prior(L).dtype == dtype


def test_bad_weights_are_refused():
    L = torch.softmax(torch.randn(5, 2), 1)
    with pytest.raises(ValueError, match="weights must be a probability vector"):
        bayes.prior(L, torch.ones(5))
    with pytest.raises(ValueError, match=r"weights must have shape \(5,\)"):
        bayes.prior(L, torch.ones(4) / 4)
