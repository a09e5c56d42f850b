"""ipywidgets panels used by the notebooks: controls that drive live figures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

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

    fig = go.FigureWidget(figure)

    def redraw(_change=None):
        with fig.batch_update():
            update(fig, **values())

    for widget in controls.values():
        widget.observe(redraw, names="value")
    redraw()
    box = widgets.HBox(list(controls.values()), layout={"flex_flow": "row wrap"})
    return widgets.VBox([box, fig])
