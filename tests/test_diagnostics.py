"""Tests for nbkit.diagnostics and the figure and widget helpers it feeds."""

import math

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from nbkit import bayes
from nbkit.diagnostics import (
    collapse_path,
    entropy,
    fidelity_curve,
    filter_report,
    first_layer_activations,
    flat_grad,
    gradient_fidelity,
    mixture_on_grid,
    nearest_sample_correlation,
    smooth_states,
)
from nbkit.losses import dml_loss, mim_loss, neg_mutual_information
from nbkit.metrics import dead_fraction
from nbkit.models import MLP
from nbkit.viz import filter_grid, filter_mosaic, mixture_figure
from nbkit.widgets import live_panel


def test_mixture_posterior_rows_sum_to_one_and_lemma1_recovers_it():
    mix = mixture_on_grid((0.2, 0.5, 0.3), (-3.0, 0.0, 2.5), (1.0, 0.5, 0.8))
    one = torch.ones(1, dtype=torch.float64)
    assert torch.allclose(mix.posterior.sum(dim=1), one, atol=1e-14)
    assert torch.allclose(mix.p_x.sum(), one, atol=1e-14)
    assert torch.allclose(mix.p_x_given_z.sum(dim=0), one.expand(3), atol=1e-14)
    # Lemma 1 with the true posterior gives back the prior and components
    prior = bayes.prior(mix.posterior, weights=mix.p_x)
    assert torch.allclose(prior, torch.tensor([0.2, 0.5, 0.3]).double(), atol=1e-14)
    cond = bayes.conditionals(mix.posterior, mix.p_x)
    assert torch.allclose(cond, mix.p_x_given_z, atol=1e-14)


def test_mixture_mutual_information_matches_the_textbook_formula():
    mix = mixture_on_grid((0.5, 0.5), (-1.0, 1.0))
    textbook = entropy(mix.p_z) - (mix.p_x * entropy(mix.posterior)).sum()
    mi = bayes.mutual_information(mix.posterior, mix.p_x)
    assert float(mi) == pytest.approx(float(textbook), abs=1e-13)
    # far apart components: z is (almost) a function of x, MI -> H(z) = log 2
    far = mixture_on_grid((0.5, 0.5), (-20.0, 20.0))
    mi_far = bayes.mutual_information(far.posterior, far.p_x)
    assert float(mi_far) == pytest.approx(math.log(2), abs=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"weights": (0.5, 0.6), "means": (0, 1)}, "weights"),
        ({"weights": (0.5, 0.5), "means": (0, 1, 2)}, "means"),
        ({"weights": (0.5, 0.5), "means": (0, 1), "stds": -1.0}, "stds"),
        ({"weights": (1.0,), "means": (0,), "n_points": 1}, "n_points"),
    ],
)
def test_mixture_bad_input_names_the_parameter(kwargs, word):
    with pytest.raises(ValueError, match=word):
        mixture_on_grid(**kwargs)


def test_smooth_states_rows_on_simplex_and_temperature_controls_hardness():
    x = torch.linspace(-5, 5, 301, dtype=torch.float64)
    soft = smooth_states(x, 4, temperature=100.0)
    hard = smooth_states(x, 4, temperature=0.001)
    assert torch.allclose(soft.sum(dim=1), torch.ones(301).double(), atol=1e-12)
    assert float(soft.max()) < 0.26  # near uniform 1/4
    assert float((hard.max(dim=1).values > 0.99).double().mean()) > 0.95
    with pytest.raises(ValueError, match="temperature"):
        smooth_states(x, 3, temperature=0.0)


@pytest.fixture
def one_thread():
    # thousands of tiny backward passes run faster on one thread
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _skewed_setup(sharpness=4.0, skew=12.0, n=2000, d=20, K=10):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, d, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    net = MLP(d, (16,), out_features=K, batch_norm=False).double()
    with torch.no_grad():
        net.head.weight.mul_(sharpness)
        net.head.bias.copy_(torch.linspace(0, -skew, K))
    return net, X


def _mi_hat(out):
    return neg_mutual_information(torch.softmax(out, dim=1), stop_gradient=True)


def _dml(out):
    return dml_loss(torch.softmax(out, dim=1))


def _mim(out):
    return mim_loss(torch.softmax(out, dim=1), alpha=2.0)


@pytest.mark.parametrize("loss_fn", [_mi_hat, _mim, _dml])
def test_fidelity_at_full_data_is_exact(loss_fn, one_thread):
    net, X = _skewed_setup(n=300)
    res = gradient_fidelity(net, X, loss_fn, mbs=300, n_batches=3, seed=1)
    assert res["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert res["rel_error"] < 1e-12
    assert res["bias"] < 1e-12 and res["spread"] < 1e-12
    assert len(res["cosines"]) == 3


def test_dml_fidelity_is_worse_than_the_mi_term_at_small_batches(one_thread):
    # real digits: rare states are carried by a few atypical images
    from nbkit.data.images import load_bundled_mnist, standardize

    images, _ = load_bundled_mnist()
    X = torch.nn.functional.avg_pool2d(images[:2000].double(), 4)
    X = standardize(X.reshape(2000, -1))
    torch.manual_seed(0)
    net = MLP(X.shape[1], (16,), out_features=10, batch_norm=False).double()
    with torch.no_grad():  # sharp output, E[L] from 0.6 down to ~1e-5
        net.head.weight.mul_(4.0)
        net.head.bias.copy_(torch.linspace(0, -12, 10))
    mi = fidelity_curve(net, X, _mi_hat, (50, 250), n_batches=30, seed=0)
    dml = fidelity_curve(net, X, _dml, (50, 250), n_batches=30, seed=0)
    for a, b in zip(mi, dml, strict=True):
        assert a["bias"] < 0.5 * b["bias"]
        assert a["cosine"] > b["cosine"] + 0.2
    # the DML bias is resolved: well above its own Monte Carlo error
    assert dml[0]["bias"] > 2 * dml[0]["bias_floor"]


def test_fidelity_spread_shrinks_with_batch_size(one_thread):
    net, X = _skewed_setup(skew=0.0, sharpness=1.0)
    small, large = fidelity_curve(net, X, _mi_hat, (20, 500), n_batches=30)
    assert large["spread"] < 0.5 * small["spread"]
    assert large["cosine"] > small["cosine"]
    assert small["bias_floor"] == pytest.approx(small["spread"] / math.sqrt(30))


def test_fidelity_rejects_a_batch_larger_than_the_data():
    net, X = _skewed_setup(n=100)
    with pytest.raises(ValueError, match="mbs"):
        gradient_fidelity(net, X, _mi_hat, mbs=101)


def test_flat_grad_matches_autograd_and_can_keep_the_graph():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    b = torch.tensor(3.0, requires_grad=True)
    loss = (w**2).sum() * b
    first = flat_grad(loss, [w, b], retain_graph=True)
    again = flat_grad(loss, [w, b])
    assert first.tolist() == [6.0, 12.0, 5.0]
    assert torch.equal(first, again)


def test_collapse_path_v1_logit_gradient_vanishes_and_v2_grows():
    K = 10
    t = torch.tensor([1 / K, 0.5, 0.99, 1 - 1e-6], dtype=torch.float64)
    v1, v2 = collapse_path(K, t, "v1"), collapse_path(K, t, "v2")
    # both priors are flat at the uniform point
    assert float(v1["logit_grad"][0]) < 1e-12 and float(v2["logit_grad"][0]) < 1e-12
    assert float(v1["Rp"][0]) == pytest.approx(-math.log(K), abs=1e-12)
    # analytic coefficients of dE[L_1]/dtheta
    expect_v1 = torch.log(t) + 1
    expect_v2 = -1 / (K * t) + (K - 1) / (K * (1 - t))
    assert torch.allclose(v1["dRp_dE"], expect_v1, atol=1e-6)
    assert torch.allclose(v2["dRp_dE"], expect_v2, rtol=1e-6)
    assert float(v2["dRp_dE"][-1]) > 1e5
    # what reaches the logits: v1 -> 0, v2 -> 2 sqrt((K - 1) / K)
    assert float(v1["logit_grad"][-1]) < 1e-4
    limit = 2 * math.sqrt((K - 1) / K)
    assert float(v2["logit_grad"][-1]) == pytest.approx(limit, abs=1e-3)
    with pytest.raises(ValueError, match="E_k"):
        collapse_path(K, [1.0], "v2")
    with pytest.raises(ValueError, match="version"):
        collapse_path(K, [0.5], "v3")


def test_dead_fraction_of_first_layer_units_with_switched_off_biases():
    torch.manual_seed(0)
    net = MLP(12, (8, 4), out_features=None, batch_norm=False)
    with torch.no_grad():
        net.layers[0][0].bias[:3] = -1e6  # three units can never fire
    X = torch.randn(64, 12)
    A = first_layer_activations(net, X, batch_size=10)
    assert A.shape == (64, 8)
    assert dead_fraction(A) == pytest.approx(3 / 8)
    assert net.training  # mode restored


def test_dead_fraction_of_a_hand_made_activation_matrix():
    A = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0, 0]])
    assert dead_fraction(A) == pytest.approx(0.5)


def test_nearest_sample_correlation_finds_a_copied_sample():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(50, 30, generator=g)
    filters = torch.stack([X[7], -3 * X[11] + 2, torch.randn(30, generator=g)])
    corr = nearest_sample_correlation(filters, X)
    assert corr[:2].tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    assert float(corr[2]) < 0.8
    with pytest.raises(ValueError, match="inputs"):
        nearest_sample_correlation(filters, X[:, :20])


def test_filter_mosaic_places_scaled_filters_with_blank_gaps():
    W = torch.arange(2 * 6, dtype=torch.float32).reshape(2, 6) + 1
    mosaic = filter_mosaic(W, image_shape=(2, 3), n_filters=2, cols=2)
    assert mosaic.shape == (2, 7)
    assert np.isnan(mosaic[:, 3]).all()
    assert mosaic[1, 2] == pytest.approx(1.0) and mosaic[1, 6] == pytest.approx(1.0)
    fig = filter_grid({"a": W, "b": W}, image_shape=(2, 3), n_filters=2, cols=2)
    assert len(fig.data) == 2
    with pytest.raises(ValueError, match="image_shape"):
        filter_mosaic(W, image_shape=(2, 2))


def test_live_panel_static_and_live():
    x = torch.linspace(-1, 1, 5)
    base = mixture_figure(x, torch.ones(5) / 5, torch.ones(5, 1) / 5)

    def update(fig, level):
        fig.data[0].y = [level] * 5

    slider = widgets.FloatSlider(value=0.5)
    static = live_panel(base, {"level": slider}, update, live=False)
    assert isinstance(static, go.Figure) and list(static.data[0].y) == [0.5] * 5
    panel = live_panel(base, {"level": slider}, update, live=True)
    fig = panel.children[1]
    slider.value = 0.25
    assert list(fig.data[0].y) == [0.25] * 5


def test_filter_report_counts_dead_unused_and_memorised_units():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 16, generator=g)
    torch.manual_seed(1)  # not 0: that stream would replay the images
    net = MLP(16, (6, 4), out_features=None, batch_norm=False)
    with torch.no_grad():
        first = net.layers[0][0]
        first.weight[0] = images[5] - images[5].mean()  # a copied image
        first.bias[0] = 100.0  # fires most on every sample: always wins
        first.bias[1:3] = -1e6  # two units never fire
    r = filter_report(net, images, memorised_at=0.99)
    assert r["dead"] == pytest.approx(2 / 6)
    assert r["unused"] == pytest.approx(5 / 6)
    assert r["memorised"] == pytest.approx(1 / 6)
    assert 0 < r["nearest_corr"] < 0.99
    with pytest.raises(ValueError, match="memorised_at"):
        filter_report(net, images, memorised_at=1.5)
