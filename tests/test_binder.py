"""Binder and conda configuration, checked without Binder or conda.

repo2docker reads binder/ (runtime.txt, requirements.txt, postBuild, start);
conda users read environment.yml. These tests parse them, check that the
packages they name are the ones the kit needs (CPU-only PyTorch on Binder),
and run the start and build steps on a temporary copy of the repository.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml
from labserver import free_port, lab_command, lab_dirs
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
BINDER = REPO / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DML_URL = "/lab/tree/notebooks/dml_manifolds.ipynb"
# what the notebooks need on Binder beyond the package's core dependencies
NOTEBOOK_STACK = ["jupyterlab", "ipywidgets", "anywidget", "plotly", "jupytext"]
# the directory holding this interpreter's jupytext and jupyter commands
BIN = Path(sys.executable).parent


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def kit_specifiers(extra: str = "lab") -> dict[str, SpecifierSet]:
    """What pyproject.toml asks of each dependency, core plus one extra."""
    project = pyproject()["project"]
    reqs = project["dependencies"] + project["optional-dependencies"][extra]
    return {
        canonicalize_name(Requirement(r).name): Requirement(r).specifier for r in reqs
    }


def requirement_lines(path: Path) -> list[str]:
    """Non-empty lines of a requirements file, comments stripped."""
    lines = (line.split(" #")[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def binder_pins() -> dict[str, Requirement]:
    """The named requirements of binder/requirements.txt by canonical name."""
    lines = requirement_lines(BINDER / "requirements.txt")
    reqs = [Requirement(line) for line in lines if not line.startswith("-")]
    return {canonicalize_name(r.name): r for r in reqs}


def pinned_version(req: Requirement) -> Version:
    """The version of an `==` pin; fails for any other specifier."""
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req} is not pinned with =="
    return Version(spec.version)


def makefile_pins() -> dict[str, Version]:
    """The torch and torchvision versions the Makefile installs."""
    text = (REPO / "Makefile").read_text()
    pins = re.findall(r"\b(torch|torchvision)==([\w.+]+)", text)
    assert {name for name, _ in pins} == {"torch", "torchvision"}, pins
    return {name: Version(version) for name, version in pins}


def tool_env(**extra: str) -> dict[str, str]:
    """The current environment with this interpreter's bin/ first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


# ------------------------------------------------------------ environment.yml


def test_environment_yml_is_python_311_with_the_kit_and_its_lab_extra():
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    assert env["name"] == "nbkit"
    deps = env["dependencies"]
    assert "python=3.11" in deps
    assert "pip" in deps
    (pip_section,) = [d["pip"] for d in deps if isinstance(d, dict)]
    assert "-e .[lab]" in pip_section
    # the extra it names exists and carries the notebook stack
    lab = {
        Requirement(r).name
        for r in pyproject()["project"]["optional-dependencies"]["lab"]
    }
    assert {"jupyterlab", "ipywidgets", "jupytext"} <= lab
    assert SpecifierSet(pyproject()["project"]["requires-python"]).contains("3.11")


# ------------------------------------------------------------------- binder/


def test_binder_python_version_is_one_the_package_accepts():
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert runtime == "python-3.11"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(runtime.removeprefix("python-"))


def test_binder_torch_comes_from_the_cpu_only_index():
    lines = requirement_lines(BINDER / "requirements.txt")
    assert f"--extra-index-url {CPU_INDEX}" in lines
    # no option may replace PyPI or point at a CUDA index
    assert not [line for line in lines if line.startswith(("--index-url", "-i "))]
    assert not [line for line in lines if "/whl/cu" in line]
    pins = binder_pins()
    makefile = makefile_pins()
    for name in ("torch", "torchvision"):
        version = pinned_version(pins[name])
        assert version.local == "cpu", f"{name} must be a +cpu build: {version}"
        # same release as the Makefile's tested pin
        assert version.public == makefile[name].public
    # nothing that would pull CUDA libraries in by name
    assert not [name for name in pins if name.startswith(("nvidia-", "cuda"))]


def test_binder_pins_satisfy_the_package_requirements():
    pins = binder_pins()
    needed = kit_specifiers("lab")
    assert set(NOTEBOOK_STACK) <= set(pins), sorted(pins)
    for name, req in pins.items():
        version = pinned_version(req)
        spec = needed.get(name, SpecifierSet())
        # a +cpu local label does not change what the pin satisfies
        assert spec.contains(Version(version.public)), f"{req} breaks {name}{spec}"


def test_binder_installs_this_repository_with_its_lab_extra():
    lines = requirement_lines(BINDER / "requirements.txt")
    assert "-e .[lab]" in lines
    # repo2docker installs from the repository root: "." is this package
    assert pyproject()["project"]["name"] == "nbkit"


@pytest.mark.parametrize("script", ["start", "postBuild"])
def test_binder_scripts_are_executable_bash(script):
    path = BINDER / script
    assert os.access(path, os.X_OK), f"chmod +x {path}"
    assert path.read_text().startswith("#!/bin/bash\n")
    check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_binder_start_hands_over_to_the_server_command():
    text = (BINDER / "start").read_text()
    assert text.rstrip().endswith('exec "$@"')
    # the commands the steps call are installed next to this interpreter
    for command in ("jupytext", "jupyter", "python"):
        assert shutil.which(command, path=str(BIN)), f"{command} not in {BIN}"


# ------------------------------------------------ the steps on a copy of the repo

SAMPLE_NOTEBOOK = """\
# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# A sample notebook written only for this test.

# %%
beta = 2.0  # a value to find again in the .ipynb
"""


def copy_repo(root: Path, with_notebooks: bool) -> Path:
    """binder/, jupytext.toml and notebooks/ (.py only, plus a sample) in root."""
    shutil.copytree(BINDER, root / "binder")
    shutil.copy(REPO / "jupytext.toml", root / "jupytext.toml")
    notebooks = root / "notebooks"
    if with_notebooks:
        skip = shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints", "__pycache__")
        shutil.copytree(REPO / "notebooks", notebooks, ignore=skip)
    notebooks.mkdir(exist_ok=True)
    (notebooks / "sample_for_start.py").write_text(SAMPLE_NOTEBOOK)
    assert not list(notebooks.glob("*.ipynb"))
    return root


@pytest.fixture
def repo_copy(tmp_path):
    """The repository's notebooks without their .ipynb, and binder/."""
    return copy_repo(tmp_path / "repo", with_notebooks=True)


@pytest.fixture
def sample_copy(tmp_path):
    """Only the sample notebook, for the quicker checks of start's launching."""
    return copy_repo(tmp_path / "repo", with_notebooks=False)


def run_step(root: Path, script: str, *args: str, **env: str):
    """Run binder/<script> from the copy's root, as repo2docker does."""
    return subprocess.run(
        [str(root / "binder" / script), *args],
        cwd=root,
        env=tool_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_pairs_rebuilt(root: Path) -> list[Path]:
    """Every percent .py in notebooks/ has an .ipynb with the same cells."""
    sources = [p for p in (root / "notebooks").glob("*.py") if "# %%" in p.read_text()]
    assert sources
    for py in sources:
        ipynb = py.with_suffix(".ipynb")
        assert ipynb.exists(), f"{ipynb.name} was not built"
        built = nbformat.read(ipynb, as_version=4)
        nbformat.validate(built)
        expected = jupytext.read(py)
        assert [(c.cell_type, c.source) for c in built.cells] == [
            (c.cell_type, c.source) for c in expected.cells
        ]
        assert all(not c.get("outputs") for c in built.cells)
    return sources


def test_start_dry_run_rebuilds_missing_notebooks(repo_copy):
    sources = {p: p.read_bytes() for p in (repo_copy / "notebooks").glob("*.py")}
    result = run_step(repo_copy, "start", NBKIT_START_NO_LAUNCH="1")
    assert result.returncode == 0, result.stderr
    assert_pairs_rebuilt(repo_copy)
    sources = {p: b for p, b in sources.items() if b"# %%" in b}
    # one message per built notebook
    assert result.stderr.count("nbkit: building") == len(sources)
    # the sources are read, never rewritten
    assert {p: p.read_bytes() for p in sources} == sources
    sample = nbformat.read(repo_copy / "notebooks" / "sample_for_start.ipynb", 4)
    assert sample.cells[1].source == "beta = 2.0  # a value to find again in the .ipynb"
    assert sample.metadata.kernelspec.name == "python3"


def test_start_leaves_existing_notebooks_alone_and_execs_the_command(sample_copy):
    existing = sample_copy / "notebooks" / "sample_for_start.ipynb"
    existing.write_text("kept as it was")
    result = run_step(sample_copy, "start", "python", "-c", "print('server here')")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "server here\n"
    assert existing.read_text() == "kept as it was"
    assert "sample_for_start" not in result.stderr


def test_start_with_no_launch_set_does_not_run_the_command(sample_copy):
    marker = sample_copy / "launched"
    cmd = ["python", "-c", f"open({str(marker)!r}, 'w')"]
    result = run_step(sample_copy, "start", *cmd, NBKIT_START_NO_LAUNCH="1")
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert (sample_copy / "notebooks" / "sample_for_start.ipynb").exists()


def lab_redirect(root: Path, config_path: Path, home: Path) -> str:
    """Start JupyterLab on 127.0.0.1 over `root`; where does `/` redirect?"""
    port, token = free_port(), secrets.token_hex(16)
    env = tool_env(JUPYTER_CONFIG_PATH=str(config_path), **lab_dirs(home))
    cmd = lab_command(port, token)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    home.mkdir(parents=True, exist_ok=True)
    log = home / "lab.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()
                try:
                    opener.open(f"http://127.0.0.1:{port}/?token={token}", timeout=2)
                except urllib.error.HTTPError as reply:
                    if reply.code in (301, 302, 303, 307):
                        return reply.headers["Location"]
                    raise
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.5)
            pytest.fail(f"no redirect from / within 90 s:\n{log.read_text()}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_post_build_opens_jupyterlab_on_the_dml_notebook(repo_copy, tmp_path):
    prefix = tmp_path / "prefix"
    result = run_step(repo_copy, "postBuild", NB_PYTHON_PREFIX=str(prefix))
    assert result.returncode == 0, result.stderr
    assert_pairs_rebuilt(repo_copy)

    config = prefix / "etc" / "jupyter" / "jupyter_server_config.json"
    urls = json.loads(config.read_text())
    assert urls["LabApp"]["default_url"] == DML_URL
    assert urls["ServerApp"]["default_url"] == DML_URL

    overrides = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    news = json.loads(overrides.read_text())[
        "@jupyterlab/apputils-extension:notification"
    ]
    assert news == {"fetchNews": "false", "checkForUpdates": False}

    # a real server with that configuration sends `/` to the DML notebook
    location = lab_redirect(repo_copy, prefix / "etc" / "jupyter", tmp_path / "home")
    assert location.split("?")[0] == DML_URL


def test_readme_badge_launches_jupyterlab_on_the_dml_notebook():
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\(https://mybinder\.org/v2/gh/([^)\s]+)\)", readme)
    assert len(links) == 1, links
    repo_ref, _, query = links[0].partition("?")
    owner, name, branch = repo_ref.split("/")
    assert (name, branch) == ("nbkit", "main")
    assert query == f"urlpath={DML_URL.lstrip('/')}"
    # the start step's default and the badge open the same notebook
    assert DML_URL in (BINDER / "postBuild").read_text()
