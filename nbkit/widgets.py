"""ipywidgets panels used by the notebooks: controls that drive live figures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import plotly.graph_objects as go

__all__ = ["live_panel"]

log = logging.getLogger(__name__)


def live_panel(
    figure: go.Figure,
    controls: Mapping[str, object],
    update: Callable[..., None],
    live: bool = True,
):
    """Controls above a FigureWidget redrawn by ``update(fig, **values)``.

    ``controls`` maps keyword names to ipywidgets value widgets; ``update``
    edits the figure's traces in place from those values. With
    ``live=False``, or when ipywidgets is missing, it returns a static
    ``go.Figure`` drawn once with the controls' current values, so headless
    runs and exported HTML still show the picture.
    """
    if not callable(update):
        raise TypeError(f"update must be callable, got {update!r}")

    def values():
        return {name: widget.value for name, widget in controls.items()}

    if live:
        try:
            import ipywidgets as widgets
        except ImportError:
            log.warning("ipywidgets is not installed; showing a static figure")
            live = False
    if not live:
        static = go.Figure(figure)
        update(static, **values())
        return static

    # the first drawing goes into the figure the widget is built from: an
    # update sent before any view exists can reach the browser without the
    # trace keys it did not touch (a heatmap lost its x and y that way)
    first = go.Figure(figure)
    update(first, **values())
    fig = go.FigureWidget(first)

    def redraw(_change=None):
        with fig.batch_update():
            update(fig, **values())

    for widget in controls.values():
        widget.observe(redraw, names="value")
    box = widgets.HBox(list(controls.values()), layout={"flex_flow": "row wrap"})
    return widgets.VBox([box, fig])


# ---- manifold labelling: the live beta panel ------------------------------

__all__ += ["ManifoldPanel"]


class ManifoldPanel:
    """Live Neural Bayes-DML panel: beta, data set, 2-D / 512-D, manifolds.

    Every change of a control retrains a ``ManifoldLabeler`` on a fresh
    sample (a few seconds on a laptop CPU) with a progress bar, then
    redraws the decision regions and points of a plotly ``FigureWidget``.
    Display the panel as the last expression of a cell. ``panel.figure``
    is the FigureWidget, ``panel.estimator`` the last fitted labeler and
    ``panel.static_figure()`` a plain ``go.Figure`` of the current state
    (what a headless run or an exported page can show).
    """

    def __init__(
        self,
        n_samples=500,
        max_epochs=200,
        hidden=(128, 128, 128, 128),
        seed=0,
        resolution=80,
        train_now=True,
    ):
        import ipywidgets as W

        from .data.synthetic import MANIFOLDS

        self.n_samples, self.max_epochs = n_samples, max_epochs
        self.hidden, self.seed, self.resolution = tuple(hidden), seed, resolution
        self.estimator, self._hold = None, False
        self.dataset = W.Dropdown(
            options=list(MANIFOLDS), value="moons", description="data set"
        )
        self.beta = W.FloatSlider(
            value=1.0,
            min=0.0,
            max=6.0,
            step=0.25,
            description="beta",
            continuous_update=False,
        )
        self.dim = W.ToggleButtons(
            options=[("2-D", 2), ("512-D", 512)], value=2, description="input"
        )
        self.n_manifolds = W.BoundedIntText(
            value=2, min=2, max=6, description="manifolds", layout={"width": "160px"}
        )
        self.train_button = W.Button(description="Train again", icon="refresh")
        self.progress = W.IntProgress(
            value=0, min=0, max=max_epochs, description="training"
        )
        self.status = W.HTML(value="")
        self.figure = go.FigureWidget(self._blank_figure())
        self.dataset.observe(self._on_dataset, names="value")
        for w in (self.beta, self.dim, self.n_manifolds):
            w.observe(self.train, names="value")
        self.train_button.on_click(self.train)
        controls = W.HBox(
            [self.dataset, self.n_manifolds, self.beta, self.dim],
            layout={"flex_flow": "row wrap"},
        )
        run = W.HBox([self.train_button, self.progress, self.status])
        self.widget = W.VBox([controls, run, self.figure])
        if train_now:
            self.train()

    def _repr_mimebundle_(self, **kwargs):
        """Display as the ipywidgets box."""
        return self.widget._repr_mimebundle_(**kwargs)

    @staticmethod
    def _blank_figure():
        """Two traces (regions heatmap, points) to be filled by ``train``."""
        from .viz import decision_figure

        X = np.zeros((1, 2))
        grid = (np.arange(2.0), np.arange(2.0), np.zeros((2, 2), dtype=int))
        fig = decision_figure(X, np.zeros(1, dtype=int), grid, size=480)
        fig.update_layout(uirevision="manifold-panel")
        return fig

    def _on_dataset(self, change):
        """New data set: match the number of manifolds, then retrain once."""
        from .data.synthetic import N_MANIFOLDS

        self._hold = True
        try:
            self.n_manifolds.value = N_MANIFOLDS[change["new"]]
        finally:
            self._hold = False
        self.train()

    def _tick(self, restart, epoch, info):
        """Progress callback: update the bar every few epochs."""
        if epoch % 5 == 0:
            self.progress.value = epoch + 1
            self.status.value = f"JS = {info['js']:.3f} nats"

    def train(self, _change=None):
        """Fit a labeler on the current settings and redraw: returns self."""
        if self._hold:
            return self
        import time

        from .data.synthetic import Lift, make_manifolds
        from .manifold import ManifoldLabeler
        from .metrics import adjusted_rand
        from .viz import decision_grid, label_traces

        name, dim, K = self.dataset.value, self.dim.value, self.n_manifolds.value
        X2, y = make_manifolds(name, self.n_samples, seed=self.seed)
        lifter = Lift(dim, self.seed) if dim > 2 else None
        X = X2 if lifter is None else lifter.transform(X2)
        self.progress.value, self.progress.bar_style = 0, "info"
        start = time.perf_counter()
        est = ManifoldLabeler(
            K,
            beta=self.beta.value,
            max_epochs=self.max_epochs,
            hidden=self.hidden,
            n_restarts=1,
            random_state=self.seed,
            progress=False,
            callback=self._tick,
        ).fit(X)
        grid = decision_grid(est.predict, X2, lifter, self.resolution)
        heat, points = label_traces(X2, est.labels_, grid, n_labels=K)
        with self.figure.batch_update():
            for old, new in zip(self.figure.data, (heat, points), strict=True):
                old.update(new.to_plotly_json())
            self.figure.layout.title = f"{name}, {dim}-D, beta = {self.beta.value:g}"
        self.estimator = est
        secs = time.perf_counter() - start
        self.progress.value, self.progress.bar_style = self.progress.max, "success"
        self.status.value = (
            f"ARI {adjusted_rand(y, est.labels_):.3f}, JS {est.js_:.3f} nats, "
            f"{est.n_epochs_} epochs, {secs:.1f} s"
        )
        return self

    def static_figure(self):
        """The current figure as a plain ``go.Figure``."""
        return go.Figure(self.figure)
