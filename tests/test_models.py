"""Shapes, widths and initialisation of the networks in nbkit.models."""

import pytest
import torch
from torch import nn

from nbkit.models import (
    MLP,
    DMLNet,
    MIMEncoder,
    make_probe,
    orthogonal_,
    scale_width,
)

# (input shape, spatial sides of h0..h3): unpadded 3x3 convs, floor pooling
SIDES = {(3, 32, 32): (30, 13, 11, 3), (1, 28, 28): (26, 11, 9, 2)}


def _shapes(hidden):
    return [tuple(h.shape) for h in hidden]


@pytest.mark.parametrize("shape", list(SIDES))
@pytest.mark.parametrize(("width", "B"), [(0.25, 3), (1.0, 2)])
def test_mim_encoder_shapes(shape, width, B):
    torch.manual_seed(0)
    channels = {0.25: (50, 125, 175, 250), 1.0: (200, 500, 700, 1000)}[width]
    enc = MIMEncoder(in_channels=shape[0], width=width)
    with torch.no_grad():
        out, hidden = enc(torch.randn(B, *shape), return_hidden=True)
    sides = SIDES[shape]
    assert _shapes(hidden) == [
        (B, c, s, s) for c, s in zip(channels, sides, strict=True)
    ]
    assert out is hidden[-1]
    assert enc.out_channels == channels[-1]
    assert all(bool((h >= 0).all()) for h in hidden)  # post-ReLU


@pytest.mark.parametrize("shape", list(SIDES))
@pytest.mark.parametrize(("width", "B"), [(0.25, 3), (1.0, 2)])
def test_dml_net_shapes(shape, width, B):
    torch.manual_seed(0)
    channels = {0.25: (25, 25, 50, 125), 1.0: (100, 100, 200, 500)}[width]
    net = DMLNet(in_channels=shape[0], n_classes=10, width=width)
    with torch.no_grad():
        logits, hidden = net(torch.randn(B, *shape), return_hidden=True)
        plain = net(torch.randn(B, *shape))
    sides = SIDES[shape]
    assert logits.shape == (B, 10) and plain.shape == (B, 10)
    assert _shapes(hidden) == [
        (B, c, s, s) for c, s in zip(channels, sides, strict=True)
    ]


def test_dml_net_pools_globally():
    torch.manual_seed(0)
    net = DMLNet(in_channels=1, n_classes=4, width=0.1).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        logits, hidden = net(x, return_hidden=True)
        manual = net.head(hidden[-1].mean(dim=(2, 3)))
    torch.testing.assert_close(logits, manual)


def test_width_rounds_and_keeps_at_least_one_channel():
    assert scale_width(200, 0.25) == 50
    assert scale_width(700, 0.0013) == 1
    assert scale_width(500, 0.003) == 2  # 1.5 rounds to the even 2
    enc = MIMEncoder(in_channels=1, width=0.001)
    assert enc.channels == (1, 1, 1, 1)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="width"):
        MIMEncoder(width=0)
    with pytest.raises(TypeError, match="in_channels"):
        MIMEncoder(in_channels=1.5)
    with pytest.raises(ValueError, match="n_classes"):
        DMLNet(n_classes=1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        MIMEncoder(in_channels=1, width=0.1)(torch.randn(4, 784))


def _flat(conv):
    return conv.weight.detach().reshape(conv.weight.shape[0], -1).double()


def test_orthogonal_init():
    torch.manual_seed(0)
    enc = MIMEncoder(in_channels=3, width=0.25)
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 4
    # first conv: 50 rows > 27 columns, so the columns are orthonormal
    W = _flat(convs[0])
    assert W.shape == (50, 27)
    torch.testing.assert_close(W.T @ W, torch.eye(27, dtype=W.dtype), atol=1e-5, rtol=0)
    # the others have rows <= columns: orthonormal rows
    for conv in convs[1:]:
        W = _flat(conv)
        assert W.shape[0] <= W.shape[1]
        torch.testing.assert_close(
            W @ W.T, torch.eye(W.shape[0], dtype=W.dtype), atol=1e-5, rtol=0
        )
    # batch norm follows every conv, so the convs carry no bias
    assert all(c.bias is None for c in convs)


def test_without_batch_norm_convs_have_zero_bias():
    enc = MIMEncoder(in_channels=1, width=0.1, batch_norm=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in enc.modules())
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert all(bool((c.bias == 0).all()) for c in convs)


def test_mlp_unchanged_interface():
    torch.manual_seed(0)
    mlp = MLP(784, (500, 500, 500), out_features=None)
    out, hidden = mlp(torch.randn(5, 1, 28, 28), return_hidden=True)
    assert out.shape == (5, 500) and len(hidden) == 3 and out is hidden[-1]
    assert MLP(2)(torch.randn(4, 2)).shape == (4, 2)


def test_make_probe():
    probe = make_probe(40, 10)
    linears = [m for m in probe.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 200), (200, 10)]
    linear = make_probe(40, 10, hidden=None)
    linears = [m for m in linear.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(40, 10)]
    assert linear(torch.randn(3, 40)).shape == (3, 10)


@pytest.mark.parametrize("shape", [(500, 1000), (1000, 500), (60, 60), (10, 4, 3, 3)])
def test_orthogonal_fill_any_aspect(shape):
    torch.manual_seed(0)
    w = orthogonal_(torch.empty(shape))
    W = w.reshape(shape[0], -1).double()
    M = W @ W.T if W.shape[0] <= W.shape[1] else W.T @ W
    torch.testing.assert_close(
        M, torch.eye(M.shape[0], dtype=M.dtype), atol=1e-5, rtol=0
    )
    # a fresh draw each call, not a fixed matrix
    assert not torch.equal(orthogonal_(torch.empty(shape)), w)
