"""Training loops: accumulation, determinism, resume, checkpoints, probes."""

import copy
import pickle
import sys

import pytest
import torch
from torch import nn

from nbkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nbkit.metrics import binomial_interval
from nbkit.models import MLP, MIMEncoder
from nbkit.train import (
    TIMING_KEYS,
    NonFiniteError,
    evaluate,
    extract_features,
    mim_step,
    score_paper_protocol,
    train_dml,
    train_mim,
    train_probe,
)

FAST = {"progress": False, "device": "cpu"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster and steadier under load."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _blobs(n_per=40, dim=12, k=4, spread=0.3, seed=0):
    """k Gaussian clusters in dim-D: (n_per*k, dim) float32 and labels."""
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(k, dim, generator=g)
    y = torch.arange(k).repeat_interleave(n_per)
    X = centres[y] + spread * torch.randn(len(y), dim, generator=g)
    return X, y


def _mlp(seed=0, dim=12, batch_norm=True, widths=(16, 16)):
    torch.manual_seed(seed)
    return MLP(dim, widths, out_features=None, batch_norm=batch_norm)


def _params(model):
    return [p.detach().clone() for p in model.state_dict().values()]


def _same_params(a, b):
    return all(torch.equal(x, y) for x, y in zip(_params(a), _params(b), strict=True))


def _untimed(history):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


class _NaNGradient(torch.autograd.Function):
    """Identity forward; NaN gradient backward."""

    @staticmethod
    def forward(ctx, h):
        return h.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class CountingModel(nn.Module):
    """Wraps a model, counts forward calls, can poison one call with NaN.

    ``nan_at_call`` makes that call's last state NaN (a NaN loss);
    ``nan_grad_at_call`` keeps the values but makes their gradient NaN.
    """

    def __init__(self, inner, nan_at_call=None, nan_grad_at_call=None):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.nan_at_call = nan_at_call
        self.nan_grad_at_call = nan_grad_at_call

    def forward(self, x, return_hidden=False):
        self.calls += 1
        out, hidden = self.inner(x, return_hidden=True)
        if self.calls == self.nan_at_call:
            hidden = [*hidden[:-1], hidden[-1] * float("nan")]
            out = hidden[-1]
        if self.calls == self.nan_grad_at_call:
            hidden = [*hidden[:-1], _NaNGradient.apply(hidden[-1])]
            out = hidden[-1]
        return (out, hidden) if return_hidden else out


# ------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"mbs": 20, "bs": 50}, r"bs=50 is not a multiple of mbs=20"),
        ({"mbs": 40, "bs": 20}, r"mbs=40 is larger than bs=20"),
        ({"alpha": -1.0}, r"alpha must be >= 0, got -1.0"),
        ({"beta": -0.5}, r"beta must be >= 0, got -0.5"),
        ({"prior": "v3"}, r"prior='v3' is not allowed; use one of 'v1', 'v2'"),
        ({"mbs": 500}, r"X has 160 samples, fewer than mbs=500"),
        ({"smooth_on": "h9"}, r"smooth_on='h9' is not allowed"),
        ({"noisy_bn": "eval"}, r"noisy_bn='eval' is not allowed"),
        ({"on_nonfinite": "warn"}, r"on_nonfinite='warn' is not allowed"),
    ],
)
def test_bad_arguments_are_refused_before_training(kwargs, pattern):
    X, _ = _blobs()
    model = CountingModel(_mlp())
    with pytest.raises(ValueError, match=pattern):
        train_mim(model, X, epochs=1, **{"mbs": 20, **kwargs}, **FAST)
    assert model.calls == 0


def test_resume_needs_a_folder():
    X, _ = _blobs()
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train_mim(_mlp(), X, epochs=1, mbs=20, resume=True, **FAST)


# --------------------------------------------------------------- the step


def test_step_uses_two_forward_passes_and_one_without_smoothness():
    X, _ = _blobs()
    model = CountingModel(_mlp())
    terms = mim_step(model, X[:20], beta=4.0, generator=torch.Generator())
    assert model.calls == 2
    assert set(terms) == {"loss", "entropy", "prior", "smoothness"}
    assert terms["loss"].requires_grad and not terms["entropy"].requires_grad
    alpha, beta = 2.0, 4.0
    total = terms["entropy"] + (1 + alpha) * terms["prior"]
    total = total + beta * terms["smoothness"]
    torch.testing.assert_close(terms["loss"].detach(), total)
    model.calls = 0
    terms = mim_step(model, X[:20], beta=0.0)
    assert model.calls == 1 and float(terms["smoothness"]) == 0.0


def test_noisy_pass_bn_modes():
    X, _ = _blobs()
    clean = _mlp()
    clean(X[:20])  # only the clean forward updates the running stats
    expected = clean.layers[0][1].running_mean.clone()
    for mode, same in (("no_update", True), ("train", False)):
        model = _mlp()
        mim_step(model, X[:20], noisy_bn=mode, generator=torch.Generator())
        got = model.layers[0][1].running_mean
        assert torch.equal(got, expected) is same
        assert int(model.layers[0][1].num_batches_tracked) == (1 if same else 2)


def test_smoothness_targets_agree_on_2x2_maps_only():
    torch.manual_seed(0)
    enc = MIMEncoder(in_channels=1, width=0.02)
    rc = {}
    for size in (28, 32):  # last map 2x2, then 3x3
        x = torch.randn(4, 1, size, size)
        for target in ("pooled", "pool2x2"):
            g = torch.Generator().manual_seed(1)
            terms = mim_step(copy.deepcopy(enc), x, smooth_on=target, generator=g)
            rc[size, target] = terms["smoothness"]
    torch.testing.assert_close(rc[28, "pooled"], rc[28, "pool2x2"])
    assert not torch.allclose(rc[32, "pooled"], rc[32, "pool2x2"])


# ---------------------------------------------------- accumulation, seeds


def test_accumulation_is_the_mean_of_mini_batch_gradients(tmp_path, float64):
    X, _ = _blobs(n_per=4, k=4)  # 16 samples: two mini-batches of 8
    model = _mlp(batch_norm=False).double()
    manual = copy.deepcopy(model)
    train_mim(
        model,
        X.double(),
        epochs=1,
        mbs=8,
        bs=16,
        seed=3,
        checkpoint_dir=tmp_path,
        **FAST,
    )
    # Adam's first moment after one update is (1 - 0.9) * the gradient used
    adam = load_checkpoint(tmp_path / "last.pt")["optimizer"]["state"]
    used = [adam[i]["exp_avg"] / (1 - 0.9) for i in range(len(adam))]

    # by hand: same order and noise, gradients of the two halves averaged
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    noise = torch.Generator().manual_seed(3 + 1)
    for k in range(2):
        xb = X.double()[perm[8 * k : 8 * (k + 1)]]
        (mim_step(manual, xb, generator=noise)["loss"] / 2).backward()
    mean_grads = [p.grad for p in manual.parameters()]
    for got, want in zip(used, mean_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)

    # one batch of 16 has its own E[L] and prior: a different gradient
    whole = copy.deepcopy(model)
    whole.zero_grad()
    mim_step(whole, X.double()[perm], generator=torch.Generator().manual_seed(4))[
        "loss"
    ].backward()
    assert not torch.allclose(whole.layers[0][0].weight.grad, mean_grads[0])


def test_train_mim_reduces_the_loss():
    X, _ = _blobs(n_per=50)
    history = train_mim(_mlp(), X, epochs=12, mbs=50, lr=1e-2, **FAST)
    assert len(history) == 12
    assert history[-1]["loss"] < history[0]["loss"] - 0.1
    assert history[-1]["steps"] == 12 * 4 and history[-1]["updates"] == 48
    assert all(r["images_per_second"] > 0 for r in history)


def test_same_seed_same_result_and_other_seed_differs():
    X, _ = _blobs()
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        model = _mlp()
        h = train_mim(model, X, epochs=2, mbs=40, bs=80, seed=seed, **FAST)
        runs[name] = (model, _untimed(h))
    assert _same_params(runs["a"][0], runs["b"][0])
    assert runs["a"][1] == runs["b"][1]
    assert not _same_params(runs["a"][0], runs["c"][0])


def test_fresh_sampling_is_seeded_and_differs_from_epochs():
    X, _ = _blobs()
    runs = []
    for sampling in ("fresh", "fresh", "epoch"):
        model = _mlp()
        train_mim(model, X, epochs=1, mbs=40, sampling=sampling, **FAST)
        runs.append(model)
    assert _same_params(runs[0], runs[1])
    assert not _same_params(runs[0], runs[2])


def test_no_host_sync_per_step(monkeypatch):
    """The number of host reads does not grow with the number of steps."""
    X, _ = _blobs(n_per=60)  # 240 samples
    reads = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _orig=original, **k):
            # count reads made by nbkit itself (Adam reads its own CPU step
            # counters, which are no device sync)
            if "nbkit" in sys._getframe(1).f_code.co_filename:
                reads["n"] += 1
            return _orig(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    counts = []
    for mbs in (40, 20):  # 6 and 12 steps in one epoch
        reads["n"] = 0
        train_mim(_mlp(), X, epochs=1, mbs=mbs, log_every=1000, **FAST)
        counts.append(reads["n"])
    assert counts[0] == counts[1] and counts[0] <= 5


# ------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted run: 100 samples, 5 steps an epoch, updates every 2."""
    X, _ = _blobs(n_per=25)
    model = _mlp()
    history = train_mim(
        model, X, checkpoint_dir=tmp_path_factory.mktemp("a"), **RESUME_OPTS
    )
    return X, model, history


RESUME_OPTS = {"epochs": 3, "mbs": 20, "bs": 40, "seed": 11, **FAST}


def _stop_at_step_9(record):
    if record["step"] == 9:
        raise KeyboardInterrupt


def _stop_after_epoch_1(record):
    if record["epoch"] == 1:
        raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("stop", "saved_step"),
    [
        # step 7 is mid-epoch with one of two mini-batches accumulated
        ({"step_callback": _stop_at_step_9, "checkpoint_every": 7}, 7),
        # the epoch-1 checkpoint (step 5) also holds half an accumulation
        ({"callback": _stop_after_epoch_1, "checkpoint_every": None}, 5),
    ],
)
def test_resume_after_interrupt_matches_uninterrupted(
    tmp_path, reference_run, stop, saved_step
):
    X, reference, ref_history = reference_run
    with pytest.raises(KeyboardInterrupt):
        train_mim(
            _mlp(), X, checkpoint_dir=tmp_path, log_every=1, **stop, **RESUME_OPTS
        )
    saved = load_checkpoint(tmp_path / "last.pt")["progress"]
    assert saved["step"] == saved_step and saved["acc"] == 1

    resumed = _mlp(seed=99)  # other initial weights: all must be restored
    history = train_mim(resumed, X, checkpoint_dir=tmp_path, resume=True, **RESUME_OPTS)
    assert _same_params(resumed, reference)
    assert _untimed(history) == _untimed(ref_history)

    # resuming a finished run trains no further
    again = _mlp(seed=98)
    h2 = train_mim(again, X, checkpoint_dir=tmp_path, resume=True, **RESUME_OPTS)
    assert _same_params(again, reference) and _untimed(h2) == _untimed(history)


def test_resume_with_other_settings_lists_the_differences(tmp_path):
    X, _ = _blobs()
    train_mim(_mlp(), X, epochs=1, mbs=40, checkpoint_dir=tmp_path, **FAST)
    with pytest.raises(CheckpointError) as err:
        train_mim(
            _mlp(),
            X,
            epochs=1,
            mbs=40,
            alpha=3.0,
            beta=1.0,
            checkpoint_dir=tmp_path,
            resume=True,
            **FAST,
        )
    message = str(err.value)
    assert "alpha: 2.0 -> 3.0" in message and "beta: 4.0 -> 1.0" in message
    assert "mbs" not in message


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_loading_a_foreign_pickle_runs_no_code(tmp_path, writer):
    marker = tmp_path / "marker"
    path = tmp_path / "last.pt"
    if writer == "pickle":
        path.write_bytes(pickle.dumps({"model": _Evil(marker)}))
    else:
        torch.save({"format": "nbkit-checkpoint-v1", "x": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    X, _ = _blobs()
    with pytest.raises(CheckpointError, match="truncated, corrupt or not an nbkit"):
        train_mim(
            _mlp(), X, epochs=1, mbs=40, checkpoint_dir=tmp_path, resume=True, **FAST
        )
    assert not marker.exists()


def test_truncated_and_unrelated_files_are_refused(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.arange(1000.0), "note": "x"})
    state = load_checkpoint(path)
    assert torch.equal(state["w"], torch.arange(1000.0)) and state["note"] == "x"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not an nbkit checkpoint"):
        load_checkpoint(path)
    with pytest.raises(TypeError, match="only tensors"):
        save_checkpoint(path, {"model": nn.Linear(2, 2)})
    # no temporary files are left in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


# ------------------------------------------------------------- non-finite


@pytest.mark.parametrize("log_every", [1, 4])
def test_non_finite_loss_stops_naming_the_step(tmp_path, log_every):
    X, _ = _blobs()
    model = CountingModel(_mlp(), nan_at_call=3)  # beta=0: one call a step
    with pytest.raises(NonFiniteError, match=r"step 3 \(loss=nan, entropy=nan"):
        train_mim(
            model,
            X,
            epochs=2,
            mbs=20,
            beta=0.0,
            log_every=log_every,
            checkpoint_every=1,
            checkpoint_dir=tmp_path,
            **FAST,
        )
    # the checkpoint on disk is the last one before the bad step
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["progress"]["step"] == 2
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_non_finite_steps_can_be_skipped():
    X, _ = _blobs()
    model = CountingModel(_mlp(), nan_at_call=3)
    history = train_mim(
        model, X, epochs=2, mbs=20, beta=0.0, on_nonfinite="skip", **FAST
    )
    assert history[-1]["skipped"] == 1 and history[-1]["steps"] == 16
    assert history[-1]["updates"] == 15
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert all(r["loss"] == r["loss"] for r in history)  # no NaN in the means


def test_non_finite_gradient_stops_with_finite_terms_named():
    X, _ = _blobs()
    model = CountingModel(_mlp(), nan_grad_at_call=3)  # mbs = bs: step 3
    with pytest.raises(NonFiniteError, match=r"step 3 \(loss=\d") as err:
        train_mim(model, X, epochs=1, mbs=20, beta=0.0, **FAST)
    assert "entropy=" in str(err.value) and "prior=" in str(err.value)
    assert "smoothness=0" in str(err.value)


def test_non_finite_gradient_update_is_skipped():
    X, _ = _blobs()
    model = CountingModel(_mlp(), nan_grad_at_call=3)
    history = train_mim(
        model, X, epochs=1, mbs=20, beta=0.0, on_nonfinite="skip", **FAST
    )
    assert history[-1]["steps"] == 8 and history[-1]["updates"] == 7
    assert history[-1]["skipped"] == 1
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_train_dml_refuses_bad_arguments():
    X, _ = _blobs()
    with pytest.raises(ValueError, match="beta must be >= 0, got -1"):
        train_dml(MLP(12, (8,), 3), X, epochs=1, beta=-1, **FAST)
    with pytest.raises(ValueError, match="batch_size must be >= 2, got 1"):
        train_dml(MLP(12, (8,), 3), X, epochs=1, batch_size=1, **FAST)
    with pytest.raises(TypeError, match="epochs must be an integer"):
        train_dml(MLP(12, (8,), 3), X, epochs=1.5, **FAST)


# ---------------------------------------------------------------- DML


def test_train_dml_raises_the_js_divergence():
    X, _ = _blobs(n_per=50, dim=2, k=2, spread=0.2)
    torch.manual_seed(0)
    model = MLP(2, (32, 32), out_features=2)
    records = []
    history = train_dml(
        model, X, epochs=30, batch_size=500, lr=1e-2, callback=records.append, **FAST
    )
    assert records == history and len(history) == 30
    assert history[-1]["js"] > history[0]["js"] + 0.1
    assert history[-1]["steps"] == 30  # batch_size lowered to the 100 samples


# -------------------------------------------------------- features, probes


def test_extract_features_layers_and_mode():
    torch.manual_seed(0)
    enc = MIMEncoder(in_channels=1, width=0.05)  # channels 10, 25, 35, 50
    X = torch.randn(7, 1, 28, 28)
    before = copy.deepcopy(enc.state_dict())
    F_last = extract_features(enc, X, batch_size=3)
    assert F_last.shape == (7, 50 * 2 * 2) and F_last.device.type == "cpu"
    assert extract_features(enc, X, layer=-2).shape == (7, 35 * 9 * 9)
    pooled = extract_features(enc, X, pool=True)
    torch.testing.assert_close(pooled, F_last.reshape(7, 50, 4).mean(dim=2))
    torch.testing.assert_close(extract_features(enc, X, layer="output"), F_last)
    assert enc.training  # mode restored
    for k, v in enc.state_dict().items():  # eval mode: running stats untouched
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="out of range"):
        extract_features(enc, X, layer=4)


def test_probe_separates_cached_features():
    X, y = _blobs(n_per=60, dim=20, k=3, spread=1.0)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, va = perm[:120], perm[120:]
    probe, history = train_probe(
        X[tr], y[tr], X[va], y[va], epochs=15, batch_size=32, progress=False
    )
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert evaluate(probe, X[va], y[va]) >= 0.95
    # the probe's seeded init leaves the caller's random stream alone
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_probe(X[tr], y[tr], X[va], y[va], epochs=1, progress=False)
    assert torch.equal(torch.rand(3), expected)
    linear, _ = train_probe(
        X[tr],
        y[tr],
        X[va],
        y[va],
        hidden=None,
        epochs=15,
        lr=1e-2,
        batch_size=32,
        progress=False,
    )
    assert evaluate(linear, X[va], y[va]) >= 0.95


def test_early_stopping_restores_the_best_epoch():
    X, y = _blobs(n_per=40, dim=10, k=2, spread=2.0)
    g = torch.Generator().manual_seed(1)
    # validation points near the decision boundary with random labels: the
    # accuracy moves as the boundary moves, and peaks before the end
    c0, c1 = X[y == 0].mean(0), X[y == 1].mean(0)
    X_val = 0.5 * (c0 + c1) + torch.randn(60, 10, generator=g)
    y_val = torch.randint(0, 2, (60,), generator=g)
    probe, history = train_probe(
        X,
        y,
        X_val,
        y_val,
        epochs=60,
        patience=3,
        lr=1e-2,
        batch_size=16,
        progress=False,
    )
    accs = [r["val_accuracy"] for r in history]
    best = accs.index(max(accs))
    assert len(history) == best + 1 + 3  # stopped after 3 epochs without gain
    assert accs[-1] < max(accs)
    assert evaluate(probe, X_val, y_val) == max(accs)  # best weights are back
    assert not probe.training


def test_paper_protocol_scores_the_first_items():
    X, y = _blobs(n_per=60, dim=20, k=2, spread=1.0)
    _, history = train_probe(
        X[:60],
        y[:60],
        X[60:],
        y[60:],
        epochs=3,
        paper_test=(X, y),
        paper_n=50,
        progress=False,
    )
    assert all("paper_accuracy" in r for r in history)
    fake = [
        {"epoch": 1, "paper_accuracy": 100 / 128},
        {"epoch": 2, "paper_accuracy": 106 / 128},
        {"epoch": 3, "paper_accuracy": 104 / 128},
    ]
    score = score_paper_protocol(fake)
    assert score["best_epoch"] == 2 and score["correct"] == 106
    assert score["interval"] == binomial_interval(106, 128)
    with pytest.raises(ValueError, match="paper_test"):
        score_paper_protocol([{"epoch": 1, "val_accuracy": 0.5}])
