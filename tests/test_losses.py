"""MIM and DML losses: Theorem 1, Prop. 2 and the multi-scale states."""

import math

import pytest
import torch
from scipy.spatial.distance import jensenshannon
from torch import nn

from nbkit import bayes
from nbkit.losses import (
    dml_loss,
    js_divergence,
    mim_loss,
    mim_multiscale_loss,
    multiscale_states,
    neg_mutual_information,
)

pytestmark = pytest.mark.usefixtures("float64")


def small_network(seed=0, B=64, D=5, K=4):
    """A tiny softmax network and fixed data: (model, x of shape (B, D))."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=gen)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(D, 16), nn.Tanh(), nn.Linear(16, K))
    return model, x


def grad_of(objective, model, x):
    """Flat gradient of objective(L(x)) with respect to the model's weights."""
    loss = objective(torch.softmax(model(x), 1))
    return torch.cat([g.ravel() for g in torch.autograd.grad(loss, model.parameters())])


def test_theorem1_J_and_J_hat_have_the_same_gradient():
    model, x = small_network()
    g_J = grad_of(neg_mutual_information, model, x)
    g_J_hat = grad_of(lambda L: neg_mutual_information(L, True), model, x)
    assert (g_J - g_J_hat).abs().max().item() < 1e-10
    assert g_J.abs().max().item() > 1e-3  # the gradient itself is not zero


def test_stopping_the_gradient_of_L_itself_would_not_match():
    # guards the test above: detaching L inside the log (not the ratio)
    # changes the gradient, so the equality is not an accident
    model, x = small_network()
    g_J = grad_of(neg_mutual_information, model, x)
    g_wrong = grad_of(lambda L: -(L * torch.log(L.detach())).sum(1).mean(), model, x)
    assert (g_J - g_wrong).abs().max().item() > 1e-4


def test_mim_loss_with_v1_and_alpha_zero_is_minus_mi():
    model, x = small_network()
    L = torch.softmax(model(x), 1)
    value = mim_loss(L, alpha=0.0, prior="v1", eps=0.0)
    assert value.item() == pytest.approx(-bayes.mutual_information(L).item(), abs=1e-12)
    g_mim = grad_of(lambda L: mim_loss(L, 0.0, "v1", 0.0), model, x)
    g_J = grad_of(neg_mutual_information, model, x)
    assert (g_mim - g_J).abs().max().item() < 1e-10


def test_mim_loss_value_at_a_known_point():
    # one-hot balanced states: entropy term 0; v2 prior at uniform
    K, alpha = 4, 2.0
    L = torch.eye(K).repeat(3, 1)
    v2 = math.log(K) - (K - 1) * math.log((K - 1) / K)
    expected = -K * (1 / K) * math.log(1 + 1e-7) * 1 + (1 + alpha) * v2
    assert mim_loss(L, alpha).item() == pytest.approx(expected, abs=1e-12)


def test_mim_loss_on_maps_averages_over_locations():
    L = torch.softmax(torch.randn(6, 3, 2, 3), 1)
    per_location = [
        mim_loss(L[:, :, i, j], alpha=1.5) for i in range(2) for j in range(3)
    ]
    torch.testing.assert_close(mim_loss(L, alpha=1.5), torch.stack(per_location).mean())


def two_distributions(n=50, seed=0):
    """L on n points with p(x) uniform: q1 ~ L, q0 ~ 1 - L (normalised)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, generator=gen) * 0.9 + 0.05


def test_prop2_dml_is_log2_minus_js_of_the_two_conditionals():
    L = two_distributions()
    q1 = (L / L.sum()).numpy()
    q0 = ((1 - L) / (1 - L).sum()).numpy()
    js = jensenshannon(q1, q0) ** 2  # scipy returns the square root, in nats
    assert math.log(2) - dml_loss(L, eps=0.0).item() == pytest.approx(js, abs=1e-12)
    assert js_divergence(L).item() == pytest.approx(js, abs=1e-12)
    assert math.log(2) - dml_loss(L).item() == pytest.approx(js, abs=1e-6)


def test_dml_limits():
    # disjoint supports: JS = log 2 and the loss is 0; identical: loss log 2
    L = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    assert dml_loss(L, eps=0.0).item() == pytest.approx(0.0, abs=1e-12)
    L = torch.full((6,), 0.3)
    assert dml_loss(L).item() == pytest.approx(math.log(2), abs=1e-6)


def test_k_way_dml_with_two_states_equals_binary():
    L = two_distributions(seed=3)
    both = torch.stack([1 - L, L], 1)
    torch.testing.assert_close(dml_loss(both), dml_loss(L), rtol=1e-12, atol=0)
    torch.testing.assert_close(dml_loss(L[:, None]), dml_loss(L))


def test_k_way_dml_averages_one_versus_rest():
    L = torch.softmax(torch.randn(30, 3), 1)
    per_state = torch.stack([dml_loss(L[:, k]) for k in range(3)])
    torch.testing.assert_close(dml_loss(L), per_state.mean())


def test_multiscale_states_give_eight_softmax_states():
    hidden = [
        torch.relu(torch.randn(2, 5, 30, 30)),
        torch.relu(torch.randn(2, 6, 13, 13)),
        torch.relu(torch.randn(2, 7, 4, 4)),
        torch.relu(torch.randn(2, 8, 1, 3)),
    ]
    states = multiscale_states(hidden)
    shapes = [tuple(s.shape) for s in states]
    assert shapes == [
        (2, 5, 30, 30), (2, 5, 15, 15),
        (2, 6, 13, 13), (2, 6, 6, 6),
        (2, 7, 4, 4), (2, 7, 2, 2),
        (2, 8, 1, 3), (2, 8, 1, 1),
    ]  # fmt: skip
    for s in states:
        torch.testing.assert_close(s.sum(1), torch.ones_like(s[:, 0]))
    # a 1 x 3 map pools with a 1 x 2 window: one location, the first two columns
    pooled = hidden[3][0, :, :, :2].mean((1, 2))
    torch.testing.assert_close(states[7][0, :, 0, 0], torch.softmax(pooled, 0))
    assert len(multiscale_states(hidden, pool=False)) == 4
    expected = torch.stack([mim_loss(s, 2.0) for s in states]).mean()
    torch.testing.assert_close(mim_multiscale_loss(hidden, alpha=2.0), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_keep_the_dtype(dtype):
    L = torch.softmax(torch.randn(8, 3, dtype=dtype), 1)
    assert mim_loss(L).dtype == dtype
    assert dml_loss(L).dtype == dtype


def test_bad_states_give_clear_errors():
    L = torch.softmax(torch.randn(8, 3), 1)
    with pytest.raises(ValueError, match="rows must sum to one along dim 1"):
        mim_loss(L * 1.01)
    with pytest.raises(ValueError, match=r"must hold probabilities in \[0, 1\]"):
        dml_loss(torch.tensor([0.2, 1.5, 0.3]))
    with pytest.raises(ValueError, match="batch of 1; E\\[L\\] needs at least 2"):
        mim_loss(L[:1])
    with pytest.raises(ValueError, match="batch of 1"):
        dml_loss(torch.tensor([0.5]))
    with pytest.raises(ValueError, match=r"prior='v3' is not allowed"):
        mim_loss(L, prior="v3")
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        mim_loss(L, alpha=-1)
    with pytest.raises(ValueError, match=r"shape \(B, K\) or \(B, K, H, W\)"):
        mim_loss(torch.rand(4, 3, 2))
    with pytest.raises(TypeError, match="floating point"):
        mim_loss(torch.ones(4, 2, dtype=torch.long))
