"""Networks: MLPs that expose their hidden states, the paper's CNNs, probes.

* ``MLP``: fully connected net used for MNIST MIM and the 2-D DML demos.
* ``MIMEncoder``: the CNN encoder of section 5.1 (four convs, two max pools).
* ``DMLNet``: the CNN of Appendix H (DML on MNIST), ending in 10 logits.
* ``make_probe``: the classifier trained on frozen features (Table 2).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import skip_init

from ._checks import check_int, check_number

__all__ = ["MLP", "MIMEncoder", "DMLNet", "make_probe", "scale_width", "orthogonal_"]


class MLP(nn.Module):
    """Fully connected net: Linear (+ BatchNorm) + ReLU per hidden layer.

    ``forward(x)`` gives the output (B, out_features) (logits, no softmax);
    ``forward(x, return_hidden=True)`` gives ``(out, [h_1, ..., h_n])``
    with every post-ReLU hidden state (B, width). ``out_features=None``
    drops the output layer, and ``out`` is then the last hidden state.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (400, 400, 400, 400),
        out_features: int | None = 2,
        batch_norm: bool = True,
    ):
        super().__init__()
        check_int("in_features", in_features, low=1)
        widths = [in_features, *hidden]
        self.layers = nn.ModuleList()
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            check_int(f"hidden[{i}]", b, low=1)
            parts = [nn.Linear(a, b)]
            if batch_norm:
                parts.append(nn.BatchNorm1d(b))
            parts.append(nn.ReLU())
            self.layers.append(nn.Sequential(*parts))
        self.head = None
        if out_features is not None:
            check_int("out_features", out_features, low=1)
            self.head = nn.Linear(widths[-1], out_features)

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        """(B, ...) -> (B, out) or ((B, out), list of (B, width))."""
        h = x.reshape(x.shape[0], -1)
        hidden = []
        for layer in self.layers:
            h = layer(h)
            hidden.append(h)
        out = h if self.head is None else self.head(h)
        return (out, hidden) if return_hidden else out


def scale_width(channels: int, width: float) -> int:
    """Channel count scaled by ``width``, rounded, at least 1."""
    return max(1, round(channels * width))


def _conv_block(c_in: int, c_out: int, batch_norm: bool) -> nn.Sequential:
    """3x3 conv, stride 1, no padding, then BatchNorm (optional) and ReLU."""
    # a bias before batch norm is cancelled by its mean, so drop it there
    # skip_init: the default init would be overwritten by the orthogonal one
    conv = skip_init(
        nn.Conv2d,
        c_in,
        c_out,
        kernel_size=3,
        stride=1,
        padding=0,
        bias=not batch_norm,
    )
    parts = [conv]
    if batch_norm:
        parts.append(nn.BatchNorm2d(c_out))
    parts.append(nn.ReLU())
    return nn.Sequential(*parts)


@torch.no_grad()
def orthogonal_(weight: torch.Tensor) -> torch.Tensor:
    """Haar-random orthogonal fill of (out, ...) weights, in place.

    The (out, rest) matrix gets orthonormal rows or columns, whichever are
    fewer: the distribution of ``nn.init.orthogonal_``. Clearly oblong
    shapes (every conv here) use a Cholesky QR of a Gaussian matrix, matrix
    products several times faster on a CPU than a Householder QR, which
    saves seconds whenever the full-width encoder is built.
    """
    rows = weight.shape[0]
    cols = weight.numel() // rows
    short, long = min(rows, cols), max(rows, cols)
    if 2 * short > long:  # near square: the Gram matrix is ill-conditioned
        return nn.init.orthogonal_(weight)
    # with long >= 2 short a Gaussian's condition number is at most about 6
    # (about 2 for these convs): one Cholesky QR pass in float32 is
    # orthonormal to a few 1e-6
    dtype = torch.promote_types(weight.dtype, torch.float32)
    G = torch.randn(long, short, dtype=dtype, device=weight.device)
    R = torch.linalg.cholesky(G.T @ G, upper=True)
    Q = torch.linalg.solve_triangular(R, G, upper=True, left=False)  # G R^-1
    Q = Q if rows >= cols else Q.T  # (rows, cols)
    weight.copy_(Q.reshape(weight.shape))
    return weight


def _orthogonal_init(module: nn.Module) -> None:
    """Orthogonal weights (Saxe et al.) for convs and linears, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            orthogonal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class _FourConvNet(nn.Module):
    """conv-maxpool-conv-conv-maxpool-conv trunk shared by both CNNs."""

    def __init__(self, in_channels, channels, width, batch_norm):
        super().__init__()
        check_int("in_channels", in_channels, low=1)
        check_number("width", width, low=0, low_open=True)
        c = [scale_width(n, width) for n in channels]
        self.channels = tuple(c)
        self.blocks = nn.ModuleList(
            [
                _conv_block(in_channels, c[0], batch_norm),
                _conv_block(c[0], c[1], batch_norm),
                _conv_block(c[1], c[2], batch_norm),
                _conv_block(c[2], c[3], batch_norm),
            ]
        )
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, H, W) -> the four post-ReLU maps [h0, h1, h2, h3]."""
        if x.ndim != 4:
            raise ValueError(
                f"x must be an image batch (B, C, H, W), got {tuple(x.shape)}"
            )
        h0 = self.blocks[0](x)
        h1 = self.blocks[1](self.pool(h0))
        h2 = self.blocks[2](h1)
        h3 = self.blocks[3](self.pool(h2))
        return [h0, h1, h2, h3]


class MIMEncoder(_FourConvNet):
    """The section 5.1 encoder C200-P-C500-C700-P-C1000 (3x3 convs, BN, ReLU).

    ``forward(x)`` gives the last map h3 (B, C3, H3, W3): 3x3 for 32x32
    inputs and 2x2 for 28x28 (the paper states 2x2 for 32x32, but its
    unpadded convs and floor pooling give 32-30-15-13-11-5-3).
    ``forward(x, return_hidden=True)`` gives ``(h3, [h0, h1, h2, h3])``,
    the four post-ReLU maps taken before any max pool (the states of
    Eq. 14-15). ``width`` scales every channel count (rounded, >= 1).
    """

    def __init__(
        self, in_channels: int = 3, width: float = 1.0, batch_norm: bool = True
    ):
        super().__init__(in_channels, (200, 500, 700, 1000), width, batch_norm)
        self.out_channels = self.channels[-1]
        _orthogonal_init(self)

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        """(B, C, H, W) -> (B, C3, H3, W3) or (that, [h0, h1, h2, h3])."""
        hidden = self.trunk(x)
        return (hidden[-1], hidden) if return_hidden else hidden[-1]


class DMLNet(_FourConvNet):
    """Appendix H's C100-P-C100-C200-P-C500-avgpool-FC(n_classes) for DML.

    ``forward(x)`` gives logits (B, n_classes) (apply a softmax for L);
    with ``return_hidden=True`` also the four post-ReLU maps [h0..h3].
    """

    def __init__(
        self,
        in_channels: int = 1,
        n_classes: int = 10,
        width: float = 1.0,
        batch_norm: bool = True,
    ):
        super().__init__(in_channels, (100, 100, 200, 500), width, batch_norm)
        check_int("n_classes", n_classes, low=2)
        self.head = nn.Linear(self.channels[-1], n_classes)
        _orthogonal_init(self)

    def forward(self, x: torch.Tensor, return_hidden: bool = False):
        """(B, C, H, W) -> logits (B, n_classes) or (logits, [h0..h3])."""
        hidden = self.trunk(x)
        # global average pool to 1x1: the released code's fixed pool kernel
        # (twice the map size) fails on current PyTorch; a global pool is
        # what it means, and it works for any input size
        pooled = hidden[-1].mean(dim=(2, 3))  # (B, C3)
        logits = self.head(pooled)
        return (logits, hidden) if return_hidden else logits


def make_probe(
    in_features: int, n_classes: int, hidden: int | None = 200, batch_norm: bool = True
) -> MLP:
    """Classifier on (B, in_features) features: one hidden layer, or linear."""
    check_int("n_classes", n_classes, low=2)
    if hidden is None:
        return MLP(in_features, (), n_classes, batch_norm=False)
    check_int("hidden", hidden, low=1)
    return MLP(in_features, (hidden,), n_classes, batch_norm=batch_norm)
