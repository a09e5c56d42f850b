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
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("NBKIT_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "runs" / "browser"
DML_NOTEBOOK = "dml_manifolds"

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

# JavaScript: every plotly graph in the notebook, as plain JSON
READ_PLOTS_JS = """
() => {
  const plain = (v) => {
    if (v === undefined || v === null) return null;
    if (ArrayBuffer.isView(v)) return Array.from(v);
    if (Array.isArray(v)) return v.map(plain);
    return v;
  };
  const graphs = document.querySelectorAll('.jp-NotebookPanel .js-plotly-plot');
  return Array.from(graphs).map((gd) => ({
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
  }));
}
"""


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        env.update(
            JUPYTER_CONFIG_DIR=str(home / "config"),
            JUPYTER_DATA_DIR=str(home / "data"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
            IPYTHONDIR=str(home / "ipython"),
            PYTHONUNBUFFERED="1",
        )
        write_lab_config(home / "config", home / "settings")
        cmd = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}",
            f"--LabApp.workspaces_dir={home / 'workspaces'}",
            f"--LabApp.user_settings_dir={home / 'settings'}",
            "--LabApp.news_url=None",
            # window.jupyterapp: lets the test ask the session for kernel state
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.check_for_updates_class="
            "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-root")
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


@pytest.fixture
def lab(tmp_path, request):
    """A JupyterLab server over tmp_path/root; torn down at the end of the test."""
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    server = LabServer(root, tmp_path / "jupyter")
    request.addfinalizer(server.stop)
    server.wait_ready()
    return server


@pytest.fixture
def page(chromium_path, tmp_path, request):
    """A Chromium page; on failure its last screenshot is kept in tmp_path."""
    sync_api = pytest.importorskip("playwright.sync_api")
    driver = sync_api.sync_playwright().start()
    browser = driver.chromium.launch(
        executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
    )
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    new_page = context.new_page()
    new_page.console_messages = []
    new_page.on("console", lambda m: new_page.console_messages.append(m.text))
    new_page.on("pageerror", lambda e: new_page.console_messages.append(str(e)))

    def close():
        # best effort: the page may already be broken
        with contextlib.suppress(Exception):
            new_page.screenshot(path=str(tmp_path / "last.png"))
        context.close()
        browser.close()
        driver.stop()

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


def cell_errors(page) -> list[str]:
    """Text of every error output in the notebook."""
    errors = page.locator(".jp-NotebookPanel .jp-RenderedText[data-mime-type*=error]")
    return [errors.nth(i).inner_text() for i in range(errors.count())]


def read_plots(page) -> list[dict]:
    """Every plotly graph in the notebook: title and traces' x, y, z, colours."""
    return page.evaluate(READ_PLOTS_JS)


def wait_plot_change(page, before: list[dict], timeout: float) -> list[dict]:
    """Poll the page until some plotly graph's data differs from `before`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = read_plots(page)
        if now != before:
            return now
        page.wait_for_timeout(250)
    raise AssertionError(f"no plotly figure changed within {timeout:.0f} s")


def widget(page, kind: str, description: str):
    """The ipywidget of a kind (`slider`, `dropdown`, ...) with this label."""
    label = page.locator(".widget-label", has_text=description)
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


def write_tiny_notebook(path: Path) -> None:
    """An IntSlider and a Dropdown driving a plotly FigureWidget."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
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
    set_slider_readout(page, "beta", 3)
    after_readout = only_scatter(wait_plot_change(page, read_plots(page), 30))
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
    page.wait_for_timeout(500)  # the second step may land just after the first
    after_keys = only_scatter(read_plots(page))
    assert after_keys["y"] == [0, 5, 10, 15]
    screenshot(page, tmp_path, "tiny_1_beta")

    # the dropdown: squares, and the markers recoloured
    select_dropdown(page, "data set", "square")
    squared = only_scatter(wait_plot_change(page, read_plots(page), 30))
    assert squared["y"] == [0, 5, 20, 45]
    assert squared["color"] == [2, 2, 2, 2]
    screenshot(page, tmp_path, "tiny_2_dataset")
