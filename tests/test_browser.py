"""The notebooks' widgets in a real JupyterLab, driven through headless Chromium.

A JupyterLab server runs on 127.0.0.1 with a random token in a temporary copy
of the notebooks, with its own settings, workspaces and runtime folders. The
test opens a notebook, runs all cells from the Run menu, moves the widgets the
way a reader would (slider readout, keyboard, dropdown) and reads the plotly
figure's data back from the page's `.js-plotly-plot` element.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install chromium`);
skips without it. Screenshots go to the test's tmp_path and to runs/browser/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest
from labserver import free_port, lab_command, lab_dirs

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("NBKIT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "runs" / "browser"
DML_NOTEBOOK = "dml_manifolds"
DML_PANEL_MARKER = "ManifoldPanel("  # the code cell that builds the live panel

# flags that keep Chromium from reaching outside this machine
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
]

# user settings: no news or update checks, every cell attached to the page
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
        "doNotDisturbMode": True,
    },
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
}
DISABLED_PLUGINS = ["@jupyterlab/apputils-extension:announcements"]

# JavaScript: a plotly graph's title and traces as plain JSON
PLOT_TO_JSON_JS = """
  const plain = (v) => {
    if (v === undefined || v === null) return null;
    if (ArrayBuffer.isView(v)) return Array.from(v);
    if (Array.isArray(v)) return v.map(plain);
    return v;
  };
  const toJson = (gd) => ({
    title: (gd._fullLayout && gd._fullLayout.title
            && gd._fullLayout.title.text) || '',
    traces: (gd._fullData || []).map((t) => ({
      type: t.type,
      name: t.name || '',
      x: plain(t.x),
      y: plain(t.y),
      z: plain(t.z),
      color: plain(t.marker ? t.marker.color : null),
    })),
  });
"""
# every plotly graph in the notebook
READ_PLOTS_JS = (
    "() => {"
    + PLOT_TO_JSON_JS
    + """
  const graphs = document.querySelectorAll('.jp-NotebookPanel .js-plotly-plot');
  return Array.from(graphs).map(toJson);
}"""
)
# the graphs in the cell output holding the ipywidget labelled `label`
READ_PANEL_PLOTS_JS = (
    "(label) => {"
    + PLOT_TO_JSON_JS
    + """
  const labels = Array.from(document.querySelectorAll(
    '.jp-NotebookPanel .widget-label'));
  const mine = labels.find((el) => el.textContent.trim() === label);
  const output = mine && mine.closest('.jp-OutputArea-output');
  if (!output) return null;
  return Array.from(output.querySelectorAll('.js-plotly-plot')).map(toJson);
}"""
)


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium_path():
    """Debian's Chromium, or a skip that says how to get it."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's Chromium with "
            "`apt-get update && apt-get install -y chromium` "
            "(or point NBKIT_CHROMIUM at a Chromium binary)"
        )
    return str(CHROMIUM)


def write_lab_config(config_dir: Path, settings_dir: Path) -> None:
    """Page config that disables plugins, user settings as .jupyterlab-settings."""
    labconfig = config_dir / "labconfig"
    labconfig.mkdir(parents=True)
    disabled = {name: True for name in DISABLED_PLUGINS}
    page_config = {"disabledExtensions": disabled}
    (labconfig / "page_config.json").write_text(json.dumps(page_config))
    for plugin, values in LAB_SETTINGS.items():
        path = settings_dir / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


class LabServer:
    """A JupyterLab process serving `root`; stopped by `stop()`."""

    def __init__(self, root: Path, home: Path):
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.log_path = home / "jupyter.log"
        env = dict(os.environ)
        for name in ("config", "data", "runtime", "settings", "workspaces"):
            (home / name).mkdir(parents=True, exist_ok=True)
        env.update(lab_dirs(home))
        env.update(IPYTHONDIR=str(home / "ipython"), PYTHONUNBUFFERED="1")
        write_lab_config(home / "config", home / "settings")
        cmd = lab_command(
            self.port,
            self.token,
            f"--ServerApp.root_dir={root}",
            f"--LabApp.workspaces_dir={home / 'workspaces'}",
            f"--LabApp.user_settings_dir={home / 'settings'}",
            # window.jupyterapp: lets the test ask the session for kernel state
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class="
            "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        )
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        # own process group, so stop() also reaches the kernels it started
        self.proc = subprocess.Popen(
            cmd,
            cwd=root,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Poll /api/status until the server answers; fail with its log."""
        deadline = time.monotonic() + timeout
        status = f"{self.url}/api/status?token={self.token}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"jupyter lab exited early:\n{self.read_log()}")
            try:
                with urllib.request.urlopen(status, timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        pytest.fail(f"jupyter lab not ready in {timeout:.0f} s:\n{self.read_log()}")

    def read_log(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-6000:]

    def stop(self) -> None:
        """SIGTERM (the server shuts its kernels down), then SIGKILL the group."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def lab_root(tmp_path_factory):
    """The folder the server shows, with an empty notebooks/ in it."""
    root = tmp_path_factory.mktemp("lab") / "root"
    (root / "notebooks").mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def lab(chromium_path, lab_root, request):
    """One JupyterLab server over lab_root for this module's tests."""
    server = LabServer(lab_root, lab_root.parent / "jupyter")
    request.addfinalizer(server.stop)
    server.wait_ready()
    return server


@pytest.fixture(scope="module")
def browser(chromium_path, request):
    """Headless Chromium driven by Playwright, shared by this module's tests."""
    sync_api = pytest.importorskip("playwright.sync_api")
    driver = sync_api.sync_playwright().start()
    request.addfinalizer(driver.stop)
    chromium = driver.chromium.launch(
        executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
    )
    request.addfinalizer(chromium.close)
    return chromium


@pytest.fixture
def page(browser, tmp_path, request):
    """A fresh page; its last screenshot is kept in tmp_path as last.png."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    new_page = context.new_page()

    def close():
        # best effort: the page may already be broken
        with contextlib.suppress(Exception):
            new_page.screenshot(path=str(tmp_path / "last.png"))
        context.close()

    request.addfinalizer(close)
    return new_page


# ------------------------------------------------------------------ helpers


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """Save a PNG in tmp_path and copy it to runs/browser/."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / path.name)
    return path


def open_notebook(page, lab: LabServer, relpath: str) -> None:
    """Open a notebook in JupyterLab and wait for its kernel to be idle."""
    page.goto(f"{lab.url}/lab/tree/{relpath}?reset&token={lab.token}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
    wait_kernel_idle(page, timeout=90_000)


def wait_kernel_idle(page, timeout: float) -> None:
    """Wait until the current notebook's session has a kernel and it is idle."""
    page.wait_for_function(
        """() => {
          const app = window.jupyterapp;
          const panel = app && app.shell.currentWidget;
          const context = panel && panel.sessionContext;
          const kernel = context && context.session && context.session.kernel;
          return Boolean(context && context.isReady && kernel
                         && kernel.connectionStatus === 'connected'
                         && kernel.status === 'idle');
        }""",
        timeout=timeout,
    )


def run_all_cells(page, timeout: float = 180_000) -> None:
    """Run > Run All Cells, then wait until every code cell has a count."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    page.wait_for_function(
        """() => {
          const prompts = document.querySelectorAll(
            '.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt');
          return prompts.length > 0 && Array.from(prompts).every(
            (p) => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=timeout,
    )
    wait_kernel_idle(page, timeout=timeout)


def run_cells_through(page, marker: str, timeout: float = 180_000) -> None:
    """Shift+Enter from the top down to the code cell whose source has `marker`."""
    index = page.evaluate(
        """(marker) => window.jupyterapp.shell.currentWidget.content.widgets
             .findIndex((cell) => cell.model.type === 'code'
                        && cell.model.sharedModel.getSource().includes(marker))""",
        marker,
    )
    assert index >= 0, f"no code cell contains {marker!r}"
    page.locator(".jp-NotebookPanel .jp-Cell").first.click()
    page.keyboard.press("Escape")  # command mode, first cell selected
    for _ in range(index + 1):
        page.keyboard.press("Shift+Enter")
    page.wait_for_function(
        """(index) => {
          const cell = window.jupyterapp.shell.currentWidget.content.widgets[index];
          return cell.model.executionCount !== null;
        }""",
        arg=index,
        timeout=timeout,
    )
    wait_kernel_idle(page, timeout=timeout)


def cell_errors(page) -> list[str]:
    """Text of every error output in the notebook."""
    errors = page.locator(".jp-NotebookPanel .jp-RenderedText[data-mime-type*=error]")
    return [errors.nth(i).inner_text() for i in range(errors.count())]


def read_plots(page) -> list[dict]:
    """Every plotly graph in the notebook: title and traces' x, y, z, colours."""
    return page.evaluate(READ_PLOTS_JS)


def read_panel_plots(page, label: str) -> list[dict]:
    """The plotly graphs in the output that holds the widget labelled `label`."""
    return page.evaluate(READ_PANEL_PLOTS_JS, label)


def wait_plot_change(page, before, timeout: float, read=read_plots):
    """Poll `read(page)` until it differs from `before`, then until it settles."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = read(page)
        if now != before:
            # a retraining panel may draw more than once: wait for two quiet reads
            page.wait_for_timeout(1000)
            settled = read(page)
            while settled != now and time.monotonic() < deadline:
                now = settled
                page.wait_for_timeout(1000)
                settled = read(page)
            return settled
        page.wait_for_timeout(250)
    raise AssertionError(f"no plotly figure changed within {timeout:.0f} s")


def widget(page, kind: str, description: str):
    """The ipywidget of a kind (`slider`, `dropdown`, ...) with this label."""
    exact = re.compile(rf"^\s*{re.escape(description)}\s*$")
    label = page.locator(".widget-label", has_text=exact)
    return page.locator(f".widget-{kind}").filter(has=label).first


def set_slider_readout(page, description: str, value) -> None:
    """Type a value into a slider's readout box and press Enter."""
    readout = widget(page, "slider", description).locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(str(value))
    page.keyboard.press("Enter")


def select_dropdown(page, description: str, option: str) -> None:
    """Pick an option of a Dropdown by its label."""
    widget(page, "dropdown", description).locator("select").select_option(label=option)


# -------------------------------------------------- a small generated notebook

TINY_CELLS = [
    "import ipywidgets as widgets\nimport plotly.graph_objects as go",
    """\
x = [0, 1, 2, 3]
fig = go.FigureWidget(
    go.Scatter(x=x, y=x, mode="markers", marker={"color": [0, 0, 0, 0]})
)
beta = widgets.IntSlider(value=1, min=1, max=9, description="beta")
data_set = widgets.Dropdown(options=["line", "square"], description="data set")


def redraw(_change=None):
    power = 1 if data_set.value == "line" else 2
    with fig.batch_update():
        fig.data[0].y = [beta.value * v**power for v in x]
        fig.data[0].marker.color = [power] * len(x)


beta.observe(redraw, names="value")
data_set.observe(redraw, names="value")
widgets.VBox([widgets.HBox([beta, data_set]), fig])""",
]


KERNELSPEC = {
    "name": "python3",
    "display_name": "Python 3 (ipykernel)",
    "language": "python",
}


def write_tiny_notebook(path: Path) -> None:
    """An IntSlider and a Dropdown driving a plotly FigureWidget."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.cells = [nbformat.v4.new_code_cell(src) for src in TINY_CELLS]
    nbformat.write(nb, path)


def only_scatter(plots: list[dict]) -> dict:
    """The one scatter trace on the page."""
    traces = [t for p in plots for t in p["traces"] if t["type"] == "scatter"]
    assert len(traces) == 1, plots
    return traces[0]


def test_slider_and_dropdown_redraw_a_figure_widget(lab, page, tmp_path):
    """The widget stack itself: ipywidgets + plotly FigureWidget in JupyterLab."""
    write_tiny_notebook(lab.root / "notebooks" / "tiny.ipynb")
    open_notebook(page, lab, "notebooks/tiny.ipynb")
    run_all_cells(page, timeout=120_000)
    assert cell_errors(page) == []
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
    first = only_scatter(read_plots(page))
    assert first["y"] == [0, 1, 2, 3]
    screenshot(page, tmp_path, "tiny_0_start")

    # the readout box: beta = 3 scales y by 3
    # read the figure before acting: a fast redraw could land before a read
    # taken after the action, which would then wait for a change forever
    before = read_plots(page)
    set_slider_readout(page, "beta", 3)
    after_readout = only_scatter(wait_plot_change(page, before, 30))
    assert after_readout["y"] == [0, 3, 6, 9]

    # the keyboard on the slider handle: two steps right gives beta = 5
    handle = widget(page, "slider", "beta").locator(".noUi-handle")
    handle.focus()
    before = read_plots(page)
    handle.press("ArrowRight")
    handle.press("ArrowRight")
    page.wait_for_function(
        "() => document.querySelector('.widget-readout').textContent.trim() === '5'",
        timeout=10_000,
    )
    after_keys = only_scatter(wait_plot_change(page, before, 30))
    assert after_keys["y"] == [0, 5, 10, 15]
    screenshot(page, tmp_path, "tiny_1_beta")

    # the dropdown: squares, and the markers recoloured
    before = read_plots(page)
    select_dropdown(page, "data set", "square")
    squared = only_scatter(wait_plot_change(page, before, 30))
    assert squared["y"] == [0, 5, 20, 45]
    assert squared["color"] == [2, 2, 2, 2]
    screenshot(page, tmp_path, "tiny_2_dataset")


# ------------------------------------------- nbkit.widgets.live_panel, generated

LIVE_PANEL_CELLS = [
    """\
import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from nbkit.widgets import live_panel""",
    """\
grid = np.linspace(-2.0, 2.0, 5)
points = np.array([[-1.5, -1.0], [0.5, 1.5], [1.5, -0.5]])
figure = go.Figure(
    [
        go.Heatmap(x=grid, y=grid, z=np.zeros((5, 5))),
        go.Scatter(mode="markers"),
    ]
)


def update(fig, beta):
    fig.data[0].z = np.add.outer(grid, grid) * beta
    fig.data[1].x, fig.data[1].y = points[:, 0], points[:, 1]
    fig.data[1].marker.color = (points.sum(1) * beta > 1).astype(int)


slider = widgets.IntSlider(value=1, min=1, max=3, description="beta")
live_panel(figure, {"beta": slider}, update)""",
]
GRID = [-2.0, -1.0, 0.0, 1.0, 2.0]


@pytest.fixture
def live_panel_notebook(lab_root):
    """A notebook whose panel is nbkit.widgets.live_panel over a heatmap."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNELSPEC
    nb.cells = [nbformat.v4.new_code_cell(src) for src in LIVE_PANEL_CELLS]
    nbformat.write(nb, lab_root / "notebooks" / "live_panel.ipynb")
    return "notebooks/live_panel.ipynb"


def run_live_panel(page, lab, notebook) -> tuple[dict, dict]:
    """Run the generated notebook; the panel's heatmap and scatter traces."""
    open_notebook(page, lab, notebook)
    run_all_cells(page, timeout=120_000)
    assert cell_errors(page) == []
    page.wait_for_function(
        f"(label) => ({READ_PANEL_PLOTS_JS})(label)?.length > 0", arg="beta"
    )
    (plot,) = read_panel_plots(page, "beta")
    heatmap, scatter = plot["traces"]
    return heatmap, scatter


def test_live_panel_redraws_regions_and_labels_from_a_slider(
    lab, page, tmp_path, live_panel_notebook
):
    """The kit's own panel helper: the slider reaches update(fig, beta)."""
    heatmap, scatter = run_live_panel(page, lab, live_panel_notebook)
    # the first draw happens before display, with the slider's value (1)
    assert heatmap["z"][4] == [v + 2.0 for v in GRID]
    assert scatter["x"] == [-1.5, 0.5, 1.5]
    assert scatter["color"] == [0, 1, 0]

    before = read_panel_plots(page, "beta")
    set_slider_readout(page, "beta", 3)
    after = wait_plot_change(
        page,
        before,
        30,
        read=lambda p: read_panel_plots(p, "beta"),
    )
    heatmap, scatter = after[0]["traces"]
    assert heatmap["z"][4] == [3 * (v + 2.0) for v in GRID]
    assert scatter["x"] == [-1.5, 0.5, 1.5]
    assert scatter["color"] == [0, 1, 1]
    screenshot(page, tmp_path, "live_panel_beta")


def test_live_panel_heatmap_keeps_its_grid_coordinates(lab, page, live_panel_notebook):
    """Regions drawn in data coordinates, not in cell indices 0..N-1."""
    heatmap, _ = run_live_panel(page, lab, live_panel_notebook)
    assert heatmap["x"] == GRID
    assert heatmap["y"] == GRID


# ------------------------------------------------------ the DML notebook's panel


def points_and_regions(plots: list[dict] | None) -> tuple[dict, dict | None]:
    """The scatter of data points coloured by label, and the region trace."""
    assert plots, "no plotly figure next to the beta slider"
    traces = [t for p in plots for t in p["traces"]]
    points = [t for t in traces if t["type"].startswith("scatter") and t["x"]]
    regions = [t for t in traces if t["z"]]
    assert points, [t["type"] for t in traces]
    # the largest scatter is the data set; smaller ones may be legend markers
    return max(points, key=lambda t: len(t["x"])), (regions or [None])[0]


def assert_regions_cover_points(regions: dict | None, points: dict) -> None:
    """The region grid is in data coordinates: its span is the points' span."""
    if regions is None:
        return
    for axis in ("x", "y"):
        grid, data = regions[axis], points[axis]
        assert grid, f"decision regions have no {axis} coordinates in the page"
        grid_span, data_span = max(grid) - min(grid), max(data) - min(data)
        assert 0.5 * data_span <= grid_span <= 3 * data_span, (axis, grid_span)


def label_count(points: dict) -> int:
    """How many distinct colours (predicted labels) the points show."""
    colors = points["color"]
    assert isinstance(colors, list) and len(colors) == len(points["x"]), colors
    return len({json.dumps(c) for c in colors})


@pytest.fixture
def dml_notebook(lab_root):
    """The DML notebook and its neighbours, copied into the server's root.

    The .py is the source of truth: when its .ipynb is missing (not built
    yet), the test builds one from it in the copy with jupytext.
    """
    import jupytext

    source = REPO / "notebooks" / f"{DML_NOTEBOOK}.py"
    if not source.exists():
        pytest.skip(f"{source.relative_to(REPO)} is not in the repository yet")
    for path in (REPO / "notebooks").iterdir():
        if path.is_file():
            shutil.copy(path, lab_root / "notebooks" / path.name)
    target = lab_root / "notebooks" / f"{DML_NOTEBOOK}.ipynb"
    if not target.exists():
        jupytext.write(jupytext.read(source), target)
    return f"notebooks/{DML_NOTEBOOK}.ipynb"


def test_dml_panel_retrains_when_beta_and_data_set_change(
    dml_notebook, lab, page, tmp_path
):
    """Beta relabels the same points; another data set draws other points."""
    open_notebook(page, lab, dml_notebook)
    # the panel comes first; the cells after it fit eight models (minutes)
    run_cells_through(page, DML_PANEL_MARKER)
    assert cell_errors(page) == []
    beta_slider = widget(page, "slider", "beta")
    beta_slider.scroll_into_view_if_needed(timeout=60_000)
    page.wait_for_function(
        f"(label) => ({READ_PANEL_PLOTS_JS})(label)?.length > 0", arg="beta"
    )

    def panel(page):
        return read_panel_plots(page, "beta")

    start = panel(page)
    points0, regions0 = points_and_regions(start)
    assert label_count(points0) >= 2  # every manifold gets its own label
    assert_regions_cover_points(regions0, points0)
    screenshot(page, tmp_path, "dml_0_start")

    # another beta: retrain on the same points, so only labels/regions move
    readout = beta_slider.locator(".widget-readout")
    old_beta = float(readout.inner_text())
    new_beta = 0.0 if old_beta > 0 else 1.0
    set_slider_readout(page, "beta", new_beta)
    page.wait_for_function(
        "([el, v]) => parseFloat(el.textContent) === v",
        arg=[readout.element_handle(), new_beta],
    )
    after_beta = wait_plot_change(page, start, 120, read=panel)
    points1, regions1 = points_and_regions(after_beta)
    assert (points1["x"], points1["y"]) == (points0["x"], points0["y"])
    changed = points1["color"] != points0["color"]
    if regions0 is not None:
        changed = changed or regions1["z"] != regions0["z"]
    assert changed, "beta changed but neither labels nor regions were redrawn"
    assert f"beta = {new_beta:g}" in after_beta[0]["title"], after_beta[0]["title"]
    screenshot(page, tmp_path, "dml_1_beta")

    # another data set: new points, still one label per manifold
    select = widget(page, "dropdown", "data set").locator("select")
    current = select.input_value()
    options = select.locator("option").all_inner_texts()
    values = [o.get_attribute("value") for o in select.locator("option").all()]
    other = next(
        label for label, v in zip(options, values, strict=True) if v != current
    )
    select.select_option(label=other)
    after_set = wait_plot_change(page, after_beta, 120, read=panel)
    points2, regions2 = points_and_regions(after_set)
    assert (points2["x"], points2["y"]) != (points1["x"], points1["y"])
    assert after_set[0]["title"].startswith(other), after_set[0]["title"]
    manifolds = widget(page, "text", "manifolds").locator("input")
    assert 2 <= label_count(points2) <= int(manifolds.input_value())
    assert_regions_cover_points(regions2, points2)
    screenshot(page, tmp_path, "dml_2_dataset")
