"""The experiment driver: config resolution, bad inputs, run folders, results."""

from __future__ import annotations

import json
import types

import pytest

from nbkit import experiment as ex


def resolve(tmp_path, notebook="cifar", **params):
    params.setdefault("output_dir", tmp_path / "run")
    params.setdefault("download", False)
    params.setdefault("data_dir", tmp_path)
    if notebook in ("cifar", "sweep"):
        (tmp_path / "cifar-10-batches-py").mkdir(exist_ok=True)
    return ex.resolve_config(notebook, **params)


def test_paper_profile_holds_the_paper_settings(tmp_path):
    cfg = resolve(tmp_path)
    assert cfg.profile == "paper"
    assert (cfg.alpha, cfg.beta, cfg.mbs, cfg.bs) == (2.0, 4.0, 500, 4000)
    assert (cfg.lr, cfg.epochs, cfg.width, cfg.prior) == (1e-3, 100, 1.0, "v2")
    assert (cfg.probe_hidden, cfg.probe_epochs, cfg.probe_batch_size) == (200, 100, 128)
    assert (cfg.dml_bs, cfg.dml_beta, cfg.dml_epochs) == (5000, 1.0, 100)
    assert cfg.selection == "validation"
    assert cfg.dataset == "cifar10"
    assert cfg.n_train is None and cfg.probe_patience is None


def test_authors_readme_values_are_the_swapped_pair():
    assert ex.AUTHORS_README == {"alpha": 4.0, "beta": 2.0}
    paper = ex.PROFILES["paper"]
    assert (paper["alpha"], paper["beta"]) == (2.0, 4.0)


@pytest.mark.parametrize("profile", ["cpu", "smoke"])
def test_profiles_take_their_defaults(tmp_path, profile):
    cfg = resolve(tmp_path, profile=profile)
    for key, value in ex.PROFILES[profile].items():
        assert getattr(cfg, key) == value, key


def test_explicit_parameters_override_the_profile_and_none_keeps_it(tmp_path):
    cfg = resolve(
        tmp_path, profile="smoke", epochs=7, mbs=25, bs=75, alpha=4.0, beta=None
    )
    assert (cfg.epochs, cfg.mbs, cfg.bs, cfg.alpha) == (7, 25, 75, 4.0)
    assert cfg.beta == ex.PROFILES["smoke"]["beta"]
    assert cfg.width == ex.PROFILES["smoke"]["width"]


def test_spelled_out_nones(tmp_path):
    cfg = resolve(
        tmp_path, profile="cpu", n_train="all", probe_hidden="linear", probe_patience=0
    )
    assert cfg.n_train is None and cfg.probe_hidden is None
    assert cfg.probe_patience is None


def test_download_default_depends_on_data_set(tmp_path):
    out = {"output_dir": tmp_path / "a"}
    # cpu and smoke MNIST fall back to the bundled digits instead of fetching
    assert ex.resolve_config("mnist", profile="cpu", **out).download is False
    assert ex.resolve_config("mnist", profile="smoke", **out).download is False
    assert ex.resolve_config("mnist", **out).download is True
    assert ex.resolve_config("cifar", profile="smoke", **out).download is True


def test_config_round_trips_through_json(tmp_path):
    cfg = resolve(tmp_path, profile="smoke")
    again = ex.ExperimentConfig(**json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    ("params", "error", "words"),
    [
        ({"dataset": "imagenet"}, ValueError, ["dataset='imagenet'", "'cifar10'"]),
        ({"profile": "fast"}, ValueError, ["profile='fast'", "'paper'", "'smoke'"]),
        ({"prior": "v3"}, ValueError, ["prior='v3'", "'v1'", "'v2'"]),
        ({"bs": 1000, "mbs": 300}, ValueError, ["bs=1000", "mbs=300", "multiple"]),
        ({"bs": 100, "mbs": 500}, ValueError, ["mbs=500", "bs=100", "<= bs"]),
        ({"alpha": -1.0}, ValueError, ["alpha", ">= 0", "-1.0"]),
        ({"beta": -0.5}, ValueError, ["beta", ">= 0", "-0.5"]),
        ({"epochs": 0}, ValueError, ["epochs", ">= 1", "0"]),
        ({"selection": "train"}, ValueError, ["selection='train'", "'validation'"]),
        ({"lr": 0.0}, ValueError, ["lr", "> 0"]),
        ({"download": "yes"}, TypeError, ["download", "True or False", "'yes'"]),
        ({"widht": 0.5}, TypeError, ["widht", "known", "width"]),
        ({"resume": True, "overwrite": True}, ValueError, ["resume", "overwrite"]),
    ],
)
def test_bad_parameters_name_the_parameter(tmp_path, params, error, words):
    with pytest.raises(error) as info:
        resolve(tmp_path, **params)
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing was started


def test_stl_rejects_cifar(tmp_path):
    with pytest.raises(ValueError, match="dataset='cifar10'.*'stl10'"):
        ex.resolve_config("stl", dataset="cifar10", output_dir=tmp_path / "r")


def test_missing_data_folder_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ex.resolve_config(
            "cifar",
            dataset="cifar100",
            data_dir=tmp_path / "nowhere",
            download=False,
            output_dir=tmp_path / "r",
        )
    msg = str(info.value)
    assert "data_dir=" in msg and "nowhere" in msg
    assert str((tmp_path / "nowhere" / "cifar-100-python").resolve()) in msg
    assert "download=True" in msg


def test_missing_mnist_files_only_matter_for_torchvision_source(tmp_path):
    kw = {"download": False, "data_dir": tmp_path, "output_dir": tmp_path / "r"}
    assert ex.resolve_config("mnist", **kw).source == "auto"  # bundled fallback
    with pytest.raises(FileNotFoundError, match="MNIST"):
        ex.resolve_config("mnist", source="torchvision", **kw)


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(NotADirectoryError, match="output_dir=.*a_file"):
        resolve(tmp_path, output_dir=blocker / "run")


def test_run_folder_is_never_silently_reused(tmp_path):
    cfg = resolve(tmp_path, profile="smoke")
    run = ex.start_run(cfg)
    ex.write_results(run, cfg, [_row()], device="cpu")
    with pytest.raises(FileExistsError) as info:
        resolve(tmp_path, profile="smoke")
    msg = str(info.value)
    assert "output_dir=" in msg and "overwrite=True" in msg and "resume=True" in msg
    # overwrite clears the old outputs; resume keeps them
    kept = ex.start_run(resolve(tmp_path, profile="smoke", resume=True))
    assert (kept.dir / "results.json").exists()
    fresh = ex.start_run(resolve(tmp_path, profile="smoke", overwrite=True))
    assert not (fresh.dir / "results.json").exists()


def test_default_output_dir_is_new_each_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    kw = {"profile": "smoke", "download": False, "data_dir": "."}
    first = ex.start_run(ex.resolve_config("cifar", **kw))
    second = ex.start_run(ex.resolve_config("cifar", **kw))
    assert first.dir != second.dir
    assert first.dir.parent.name == "runs" and first.dir.name.startswith("cifar-")


def _row(acc=0.75, rand=0.5):
    return {
        "method": "Neural Bayes-MIM",
        "features": "last",
        "probe": "MLP, 200 hidden units",
        "accuracy": acc,
        "random_accuracy": rand,
        "paper_protocol": {
            "accuracy": 0.8,
            "correct": 102,
            "n": 128,
            "best_epoch": 3,
            "interval": (0.72, 0.86),
        },
        "paper": ex.PAPER[("cifar10", "mim")],
    }


def test_results_json_fields(tmp_path):
    cfg = resolve(tmp_path, profile="smoke")
    run = ex.start_run(cfg)
    run.log.write(phase="mim", epoch=1, loss=0.5)
    written = ex.write_results(run, cfg, [_row()], device="cpu")
    on_disk = json.loads((run.dir / "results.json").read_text())
    assert on_disk == written
    assert on_disk["dataset"] == "cifar10"
    assert on_disk["method"] == "Neural Bayes-MIM"
    assert on_disk["accuracy"] == 0.75 and on_disk["random_accuracy"] == 0.5
    assert on_disk["paper_protocol"]["interval"] == [0.72, 0.86]
    assert on_disk["paper"]["accuracy"] == 0.8281
    assert on_disk["epochs"] == cfg.epochs
    assert on_disk["device"] == "cpu" and on_disk["wall_seconds"] >= 0
    assert on_disk["config"] == cfg.to_dict()
    assert on_disk["selection"] == "validation"
    assert ex.read_metrics(run.dir) == [{"phase": "mim", "epoch": 1, "loss": 0.5}]
    (found,) = ex.read_results(tmp_path)
    assert found["path"] == str(run.dir)


def test_comparison_table_in_percent():
    table = ex.comparison_table([_row()])
    row = table.iloc[0]
    assert row["learned (whole test)"] == 75.0
    assert row["random (whole test)"] == 50.0
    assert row["paper"] == 82.81 and row["paper random"] == 67.97
    assert row["95% interval"] == "72.0-86.0"


def test_paper_table1_grid():
    assert ex.PAPER_TABLE1[(250, 3000)] == 0.8438
    assert (500, 250) not in ex.PAPER_TABLE1  # N/A in the paper: MBS > BS
    assert all(mbs <= bs for mbs, bs in ex.PAPER_TABLE1)


def test_faithful_switches_reach_train_mim_and_are_checked(monkeypatch, tmp_path):
    import nbkit.train

    seen = {}
    monkeypatch.setattr(nbkit.train, "train_mim", lambda *a, **kw: seen.update(kw))
    config = ex.resolve_config(
        "mnist", profile="smoke", output_dir=tmp_path / "run",
        smooth_on="last", sampling="fresh", noisy_bn="no_update",
    )  # fmt: skip
    paper = ex.resolve_config("mnist", profile="paper", output_dir=tmp_path / "p")
    assert (paper.smooth_on, paper.sampling, paper.noisy_bn) == (
        "pooled", "epoch", "train",
    )  # fmt: skip
    ex.fit_mim(config, None, types.SimpleNamespace(X_encoder=None), _FakeRun(tmp_path))
    assert (seen["smooth_on"], seen["sampling"], seen["noisy_bn"]) == (
        "last", "fresh", "no_update",
    )  # fmt: skip
    with pytest.raises(ValueError, match="sampling='shuffle' is not allowed"):
        ex.resolve_config("mnist", profile="smoke", sampling="shuffle")


class _FakeRun:
    def __init__(self, path):
        self.dir = path


def test_resume_with_other_settings_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    first = ex.resolve_config("mnist", profile="smoke", output_dir=out)
    ex.start_run(first)
    saved = (out / "config.json").read_text()
    changed = ex.resolve_config(
        "mnist", profile="smoke", output_dir=out, resume=True,
        smooth_on="last", epochs=2,
    )  # fmt: skip
    with pytest.raises(ValueError, match="started with other settings") as info:
        ex.start_run(changed)
    assert "smooth_on: 'pooled' -> 'last'" in str(info.value)
    assert "epochs: 1 -> 2" in str(info.value)
    assert (out / "config.json").read_text() == saved
    assert not (out / "metrics.jsonl").exists()
    # the same settings resume (resume itself is not a difference)
    same = ex.resolve_config("mnist", profile="smoke", output_dir=out, resume=True)
    assert ex.start_run(same).dir == out
