"""Networks: MLPs that expose their hidden states, the paper's CNNs, probes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._checks import check_int

__all__ = ["MLP"]


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
