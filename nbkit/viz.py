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


# ---- manifold labelling (paper Fig. 4) -----------------------------------
# decision_grid: a labeler's labels over a grid of the plane (lifted to the
# model's input dimension when needed); label_traces / decision_figure:
# regions as a heatmap plus points by label; labels_grid_figure: a grid of
# such panels, e.g. all eight Fig.-4 tasks.

__all__ += [
    "LABEL_COLORS",
    "decision_grid",
    "label_traces",
    "decision_figure",
    "labels_grid_figure",
]

# one colour per manifold label; regions use the same hue, lighter
LABEL_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_REGION_COLORS = ("#c6dbef", "#fdd0a2", "#c7e9c0", "#fcbba1", "#dadaeb", "#e7d4cf")


def decision_grid(predict, X2, lifter=None, resolution=120, margin=0.5):
    """Labels over the plane around X2 (N, 2): xs (R,), ys (R,), Z (R, R).

    ``predict`` maps (M, D) points to (M,) int labels (e.g. an estimator's
    ``predict``); ``lifter`` (a ``nbkit.data.Lift``) lifts the grid to the
    model's D = lifter.dim inputs with the rotation used for the data.
    """
    X2 = np.asarray(X2, dtype=np.float64)
    lo, hi = X2.min(axis=0) - margin, X2.max(axis=0) + margin
    xs = np.linspace(lo[0], hi[0], resolution)
    ys = np.linspace(lo[1], hi[1], resolution)
    gx, gy = np.meshgrid(xs, ys)  # (R, R): rows follow y
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    if lifter is not None:
        grid = lifter.transform(grid)
    Z = np.asarray(predict(grid)).reshape(resolution, resolution)
    return xs, ys, Z


def _region_colorscale(n_labels):
    """Step colorscale so that label k gets the k-th region colour."""
    scale = []
    for k in range(n_labels):
        c = _REGION_COLORS[k % len(_REGION_COLORS)]
        scale += [[k / n_labels, c], [(k + 1) / n_labels, c]]
    return scale


def label_traces(X2, labels, grid=None, n_labels=None, marker_size=4):
    """[heatmap of grid labels (if grid), scatter of X2 (N, 2) by labels]."""
    X2 = np.asarray(X2)
    labels = np.asarray(labels).astype(int)
    if n_labels is None:
        top = labels.max() if grid is None else max(labels.max(), grid[2].max())
        n_labels = int(top) + 1
    traces = []
    if grid is not None:
        xs, ys, Z = grid
        traces.append(
            go.Heatmap(
                x=xs,
                y=ys,
                z=Z,
                zmin=-0.5,
                zmax=n_labels - 0.5,
                colorscale=_region_colorscale(n_labels),
                showscale=False,
                hoverinfo="skip",
                name="regions",
            )
        )
    colors = [LABEL_COLORS[k % len(LABEL_COLORS)] for k in labels]
    traces.append(
        go.Scattergl(
            x=X2[:, 0],
            y=X2[:, 1],
            mode="markers",
            marker={"color": colors, "size": marker_size},
            text=[f"label {k}" for k in labels],
            hoverinfo="text",
            showlegend=False,
            name="points",
        )
    )
    return traces


def decision_figure(X2, labels, grid=None, title=None, size=420):
    """One panel: decision regions (grid from ``decision_grid``) + points."""
    fig = go.Figure(label_traces(X2, labels, grid))
    fig.update_layout(
        title=title,
        width=size,
        height=size,
        margin={"l": 20, "r": 20, "t": 40, "b": 20},
        xaxis={"showticklabels": False},
        yaxis={"showticklabels": False, "scaleanchor": "x"},
    )
    return fig


def labels_grid_figure(panels, cols=4, panel_size=230, title=None):
    """Grid of panels, each a dict with "X" (N, 2), "labels", "title", "grid".

    "grid" (optional) is the (xs, ys, Z) of ``decision_grid``; the paper's
    Fig. 4 is the eight tasks (four sets, 2-D and 512-D) in two rows.
    """
    rows = -(-len(panels) // cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[p.get("title", "") for p in panels],
        horizontal_spacing=0.02,
        vertical_spacing=0.08,
    )
    for i, p in enumerate(panels):
        r, c = divmod(i, cols)
        for tr in label_traces(p["X"], p["labels"], p.get("grid"), marker_size=3):
            fig.add_trace(tr, row=r + 1, col=c + 1)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    fig.update_layout(
        title=title,
        width=cols * panel_size,
        height=rows * panel_size + 60,
        margin={"l": 10, "r": 10, "t": 60 if title else 40, "b": 10},
    )
    return fig
