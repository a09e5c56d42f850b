"""Plotly figures used by the notebooks."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

__all__ = ["mixture_figure", "filter_mosaic", "filter_grid", "fidelity_figure"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


def _np(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=float)


def mixture_figure(x, p_x, components, reference=None, title=""):
    """p(x) and each p(x|z=k) p(z=k) on a grid: x (N,), components (N, K).

    ``reference`` (N, K), drawn dashed, is what the components should be.
    Traces are ordered p(x), components, references so a live panel can
    update them in place.
    """
    x, p_x, comp = _np(x), _np(p_x), _np(components)
    fig = go.Figure()
    fig.add_scatter(x=x, y=p_x, name="p(x)", line={"color": "black", "width": 3})
    for k in range(comp.shape[1]):
        color = _COLORS[k % len(_COLORS)]
        fig.add_scatter(
            x=x, y=comp[:, k], name=f"p(x|z={k}) p(z={k})", line={"color": color}
        )
    if reference is not None:
        ref = _np(reference)
        for k in range(ref.shape[1]):
            color = _COLORS[k % len(_COLORS)]
            fig.add_scatter(
                x=x,
                y=ref[:, k],
                name=f"true, k={k}",
                line={"color": color, "dash": "dot", "width": 4},
                opacity=0.6,
            )
    fig.update_layout(
        title=title, xaxis_title="x", yaxis_title="probability on the grid"
    )
    return fig


def filter_mosaic(W, image_shape=(28, 28), n_filters=64, cols=8):
    """Tile the first n_filters rows of W (C, h*w) into one image with gaps.

    Each filter is scaled to [-1, 1] by its largest |weight|; gaps are NaN
    so a heatmap leaves them blank. Returns a numpy array.
    """
    h, w = image_shape
    W = _np(W).reshape(W.shape[0], -1)[:n_filters]
    if W.shape[1] != h * w:
        raise ValueError(f"filters have {W.shape[1]} weights, image_shape={h}x{w}")
    rows = math.ceil(len(W) / cols)
    mosaic = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i, f in enumerate(W):
        r, c = divmod(i, cols)
        scale = max(np.abs(f).max(), 1e-12)
        mosaic[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = (
            f.reshape(h, w) / scale
        )
    return mosaic


def filter_grid(panels, image_shape=(28, 28), n_filters=64, cols=8, title=""):
    """One mosaic of first-layer filters per named panel: {name: W (C, h*w)}."""
    names = list(panels)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for j, name in enumerate(names, start=1):
        mosaic = filter_mosaic(panels[name], image_shape, n_filters, cols)
        fig.add_heatmap(
            z=mosaic[::-1],
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            showscale=j == 1,
            row=1,
            col=j,
        )
        fig.update_xaxes(visible=False, row=1, col=j)
        fig.update_yaxes(visible=False, scaleanchor=f"x{j}", row=1, col=j)
    fig.update_layout(title=title, height=360, width=max(400, 330 * len(names)))
    return fig


def fidelity_figure(curves, metrics=("cosine", "rel_error", "bias", "spread")):
    """Gradient fidelity against mini-batch size, one line per objective.

    ``curves`` maps a name to the list returned by
    ``nbkit.diagnostics.fidelity_curve``; one panel per metric, log x axis.
    """
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=metrics)
    for i, (name, rows) in enumerate(curves.items()):
        mbs = [r["mbs"] for r in rows]
        for j, metric in enumerate(metrics, start=1):
            fig.add_scatter(
                x=mbs,
                y=[r[metric] for r in rows],
                name=name,
                legendgroup=name,
                showlegend=j == 1,
                mode="lines+markers",
                line={"color": _COLORS[i % len(_COLORS)]},
                row=1,
                col=j,
            )
            fig.update_xaxes(type="log", title="mini-batch size", row=1, col=j)
    fig.update_layout(height=360)
    return fig
