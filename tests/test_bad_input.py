"""Bad parameters and odd data across the public API, and numerical failure.

Each row of CASES calls one public function with one bad argument and names
the exception and a pattern of its message: the parameter, the value given
and what is allowed. Training functions must refuse before any forward
pass. The last sections make a model produce NaN at a chosen step and check
that training stops (or skips) as documented.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nbkit import ManifoldLabeler
from nbkit import experiment as ex
from nbkit.bayes import mutual_information, prior
from nbkit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nbkit.data.images import load_images, validation_split
from nbkit.data.synthetic import make_manifolds
from nbkit.losses import (
    dml_loss,
    js_divergence,
    mim_loss,
    mim_multiscale_loss,
    multiscale_states,
    neg_mutual_information,
)
from nbkit.models import MLP, DMLNet, MIMEncoder, make_probe
from nbkit.regularizers import smoothness, uniform_prior
from nbkit.train import (
    NonFiniteError,
    extract_features,
    pick_device,
    train_dml,
    train_mim,
    train_probe,
)

ROOT = Path(__file__).resolve().parents[1]
FAST = {"progress": False, "device": "cpu"}
NAN, INF = float("nan"), float("inf")

_g = torch.Generator().manual_seed(0)
L = torch.softmax(torch.randn(8, 3, generator=_g), 1)  # valid (B, K) states
X = torch.randn(40, 12, generator=_g)  # valid inputs for a 12-D MLP
F_ = torch.randn(30, 5, generator=_g)  # features for a probe
Y = torch.arange(30) % 3  # their labels


def _with(T, index, value):
    T = T.clone()
    T[index] = value
    return T


def _mlp():
    torch.manual_seed(0)
    return MLP(12, (16, 16), out_features=None)


def _dml_net():
    torch.manual_seed(0)
    return MLP(12, (16,), out_features=3)


def _ml(**params):
    """Fit a ManifoldLabeler with params on a small valid 2-D set."""
    Xm = params.pop("X", np.random.default_rng(0).normal(size=(20, 2)))
    params.setdefault("progress", False)
    return ManifoldLabeler(**params).fit(Xm)


def case(id_, fn, exc, pattern, **kwargs):
    return pytest.param(fn, kwargs, exc, pattern, id=id_)


CASES = [
    # ---- states L for the losses, the prior and the MI
    case("mim NaN", mim_loss, ValueError, r"L must hold probabilities in \[0, 1\]",
         L=_with(L, (2, 1), NAN)),
    case("mim inf", mim_loss, ValueError, r"L must hold probabilities.*\[0, 1\]",
         L=_with(L, (0, 0), INF)),
    case("mim negative", mim_loss, ValueError, r"values in \[-0\.5",
         L=_with(L, (0, 0), -0.5)),
    case("mim empty", mim_loss, ValueError, r"L has a batch of 0",
         L=torch.empty(0, 3)),
    case("mim batch 1", mim_loss, ValueError,
         r"L has a batch of 1; E\[L\] needs at least 2", L=L[:1]),
    case("mim K=1", mim_loss, ValueError, r"L needs K >= 2 states.*got 1",
         L=torch.ones(8, 1)),
    case("mim int", mim_loss, TypeError,
         r"L must be a floating point tensor, got torch.int64",
         L=torch.ones(4, 2, dtype=torch.long)),
    case("mim numpy", mim_loss, TypeError, r"L must be a torch.Tensor, got ndarray",
         L=L.numpy()),
    case("mim 1-D", mim_loss, ValueError,
         r"L must have shape \(B, K\) or \(B, K, H, W\), got \(8,\)", L=L[:, 0]),
    case("mim rows", mim_loss, ValueError, r"rows must sum to one along dim 1",
         L=L * 0.5),
    case("mim alpha<0", mim_loss, ValueError, r"alpha must be >= 0, got -1",
         L=L, alpha=-1),
    case("mim alpha NaN", mim_loss, ValueError, r"alpha must be finite, got nan",
         L=L, alpha=NAN),
    case("mim alpha str", mim_loss, TypeError, r"alpha must be a real number, got '2'",
         L=L, alpha="2"),
    case("mim prior", mim_loss, ValueError,
         r"prior='v3' is not allowed; use one of 'v1', 'v2'", L=L, prior="v3"),
    case("mim eps<0", mim_loss, ValueError, r"eps must be >= 0, got -0.1",
         L=L, eps=-0.1),
    case("prior version", uniform_prior, ValueError, r"version='v0' is not allowed",
         L=L, version="v0"),
    case("prior NaN", uniform_prior, ValueError, r"L must hold probabilities",
         L=_with(L, (1, 1), NAN)),
    case("dml eps<0", dml_loss, ValueError, r"eps must be >= 0, got -1", L=L, eps=-1),
    case("dml empty", dml_loss, ValueError, r"L has a batch of 0", L=torch.empty(0)),
    case("dml batch 1", dml_loss, ValueError, r"L has a batch of 1",
         L=torch.tensor([0.3])),
    case("dml 3-D", dml_loss, ValueError, r"L must have shape \(B,\) or \(B, K\)",
         L=torch.full((4, 1, 1), 0.5)),
    case("dml above 1", dml_loss, ValueError, r"L must hold probabilities",
         L=torch.tensor([0.2, 1.5])),
    case("dml rows", dml_loss, ValueError, r"rows must sum to one", L=L * 2 / 3),
    case("dml int", dml_loss, TypeError, r"floating point tensor, got torch.int32",
         L=torch.ones(4, dtype=torch.int32)),
    case("js NaN", js_divergence, ValueError, r"L must hold probabilities",
         L=torch.tensor([0.2, NAN, 0.4])),
    case("J int", neg_mutual_information, TypeError, r"floating point",
         L=torch.ones(4, 2, dtype=torch.long)),
    case("MI weights sum", mutual_information, ValueError,
         r"weights must be a probability vector.*sum to 2",
         L=L, weights=torch.full((8,), 0.25)),
    case("MI weights shape", mutual_information, ValueError,
         r"weights must have shape \(8,\)", L=L, weights=torch.full((4,), 0.25)),
    case("prior K=1", prior, ValueError, r"K >= 2", L=torch.ones(3, 1)),
    # ---- smoothness Rc and the multi-scale states
    case("Rc f", smoothness, TypeError, r"f must be callable", f=3, x=X),
    case("Rc x 1-D", smoothness, ValueError,
         r"x must be a batch tensor \(B >= 2, \.\.\.\), got \(40,\)",
         f=nn.Identity(), x=X[:, 0]),
    case("Rc batch 1", smoothness, ValueError, r"x must be a batch.*got \(1, 12\)",
         f=nn.Identity(), x=X[:1]),
    case("Rc zeta 0", smoothness, ValueError, r"zeta must be non-zero",
         f=nn.Identity(), x=X, zeta=0),
    case("Rc zeta NaN", smoothness, ValueError, r"zeta must be finite, got nan",
         f=nn.Identity(), x=X, zeta=NAN),
    case("states 3-D", multiscale_states, ValueError,
         r"hidden states must be \(B, C\) or \(B, C, H, W\), got \(2, 3, 4\)",
         hidden=[torch.rand(2, 3, 4)]),
    case("multiscale empty", mim_multiscale_loss, ValueError,
         r"hidden must be a non-empty list.*got an empty list", hidden=[]),
    case("multiscale alpha", mim_multiscale_loss, ValueError, r"alpha must be >= 0",
         hidden=[torch.rand(4, 3)], alpha=-2.0),
    # ---- models
    case("MLP in 0", MLP, ValueError, r"in_features must be >= 1, got 0",
         in_features=0),
    case("MLP width 0", MLP, ValueError, r"hidden\[1\] must be >= 1, got 0",
         in_features=3, hidden=(4, 0)),
    case("MLP out 0", MLP, ValueError, r"out_features must be >= 1, got 0",
         in_features=3, out_features=0),
    case("MIM width 0", MIMEncoder, ValueError, r"width must be > 0, got 0",
         width=0),
    case("MIM width NaN", MIMEncoder, ValueError, r"width must be finite",
         width=NAN),
    case("MIM channels", MIMEncoder, ValueError, r"in_channels must be >= 1, got 0",
         in_channels=0),
    case("DMLNet K=1", DMLNet, ValueError, r"n_classes must be >= 2, got 1",
         n_classes=1),
    case("probe hidden 0", make_probe, ValueError, r"hidden must be >= 1, got 0",
         in_features=4, n_classes=3, hidden=0),
    # ---- probes and features
    case("probe epochs 0", train_probe, ValueError, r"epochs must be >= 1, got 0",
         F_train=F_, y_train=Y, F_val=F_, y_val=Y, epochs=0, progress=False),
    case("probe float y", train_probe, ValueError,
         r"y_train must be \(N,\) integer labels, got torch.float32",
         F_train=F_, y_train=Y.float(), F_val=F_, y_val=Y, progress=False),
    case("probe rows", train_probe, ValueError,
         r"F_train must be \(N, D\) with one row per label, got \(30, 5\) for 29",
         F_train=F_, y_train=Y[:29], F_val=F_, y_val=Y, progress=False),
    case("probe batch 1", train_probe, ValueError, r"batch_size must be >= 2, got 1",
         F_train=F_, y_train=Y, F_val=F_, y_val=Y, batch_size=1, progress=False),
    case("probe y<0", train_probe, ValueError,
         r"y_train holds negative labels \(smallest -1\)",
         F_train=F_, y_train=Y - 1, F_val=F_, y_val=Y, progress=False),
    case("probe F NaN", train_probe, ValueError, r"F_train holds NaN or inf",
         F_train=_with(F_, (4, 4), NAN), y_train=Y, F_val=F_, y_val=Y,
         progress=False),
    case("probe no val", train_probe, ValueError, r"F_val has no rows",
         F_train=F_, y_train=Y, F_val=F_[:0], y_val=Y[:0], progress=False),
    case("probe lr 0", train_probe, ValueError, r"lr must be > 0, got 0",
         F_train=F_, y_train=Y, F_val=F_, y_val=Y, lr=0, progress=False),
    case("features layer", extract_features, ValueError,
         r"layer='first' must be an int index or 'output'",
         encoder=MIMEncoder(width=0.02), X=torch.rand(2, 3, 32, 32), layer="first"),
    case("features batch 0", extract_features, ValueError,
         r"batch_size must be >= 1, got 0",
         encoder=MIMEncoder(width=0.02), X=torch.rand(2, 3, 32, 32), batch_size=0),
    case("device", pick_device, ValueError, r"device='gpu2' is not a device",
         device="gpu2"),
    # ---- checkpoints
    case("ckpt missing", load_checkpoint, CheckpointError, r"no checkpoint file at",
         path="/nonexistent/dir/last.pt"),
    case("ckpt state", save_checkpoint, TypeError, r"state must be a dict, got list",
         path="unused.pt", state=[1, 2]),
    # ---- data
    case("images name", load_images, ValueError,
         r"name='imagenet' is not allowed; use one of", name="imagenet"),
    case("images split", load_images, ValueError,
         r"split \(for 'cifar10'\)='val' is not allowed", name="cifar10", split="val"),
    case("images download", load_images, TypeError,
         r"download must be True or False, got 'no'", name="mnist", download="no"),
    case("val fraction 0", validation_split, ValueError,
         r"fraction must be > 0, got 0", X=F_, y=Y, fraction=0),
    case("val fraction 1", validation_split, ValueError, r"fraction must be < 1",
         X=F_, y=Y, fraction=1),
    case("manifold name", make_manifolds, ValueError, r"name='squares' is not allowed",
         name="squares"),
    case("manifold n", make_manifolds, ValueError, r"n_samples must be >= 3, got 2",
         name="spirals", n_samples=2),
    case("manifold dim", make_manifolds, ValueError, r"dim must be >= 2, got 1",
         name="moons", dim=1),
    # ---- the estimator: checked when fit is called, before training
    case("ML K=1", _ml, ValueError, r"n_manifolds must be >= 2, got 1",
         n_manifolds=1),
    case("ML K float", _ml, TypeError, r"n_manifolds must be an integer, got 2.0",
         n_manifolds=2.0),
    case("ML beta<0", _ml, ValueError, r"beta must be >= 0, got -1", beta=-1),
    case("ML epochs 0", _ml, ValueError, r"max_epochs must be >= 1, got 0",
         max_epochs=0),
    case("ML batch 1", _ml, ValueError, r"batch_size must be >= 2, got 1",
         batch_size=1),
    case("ML hidden ()", _ml, TypeError, r"hidden must be a non-empty sequence",
         hidden=()),
    case("ML hidden 0", _ml, ValueError, r"hidden\[0\] must be >= 1, got 0",
         hidden=(0,)),
    case("ML lr inf", _ml, ValueError, r"lr must be finite, got inf", lr=INF),
    case("ML restarts 0", _ml, ValueError, r"n_restarts must be >= 1, got 0",
         n_restarts=0),
    case("ML seed<0", _ml, ValueError, r"random_state must be >= 0, got -1",
         random_state=-1),
    case("ML callback", _ml, TypeError, r"callback must be callable or None",
         callback="print"),
    case("ML device", _ml, ValueError, r"device='gpu9' is not a torch device",
         device="gpu9"),
    case("ML X NaN", _ml, ValueError,
         r"X contains NaN or inf in 1 row\(s\) \(first: row 3\)",
         X=_with(torch.randn(20, 2), (3, 1), NAN)),
    case("ML X 1-D", _ml, ValueError, r"X must be 2-D.*got shape \(20,\)",
         X=np.zeros(20)),
    case("ML X 1 row", _ml, ValueError, r"X has 1 row\(s\) but n_manifolds=2",
         X=np.zeros((1, 2))),
    case("ML X empty", _ml, ValueError, r"X has 0 row\(s\)", X=np.zeros((0, 2))),
    case("ML X text", _ml, TypeError, r"X must be a numeric array",
         X=[["a", "b"], ["c", "d"]]),
]  # fmt: skip


if not torch.cuda.is_available():
    CASES.append(
        case("no CUDA", pick_device, ValueError,
             r"device='cuda' but CUDA is not available", device="cuda")
    )  # fmt: skip


@pytest.mark.parametrize(("fn", "kwargs", "exc", "pattern"), CASES)
def test_bad_input_is_refused_with_a_clear_message(fn, kwargs, exc, pattern, tmp_path):
    kwargs = dict(kwargs)
    if kwargs.get("path") == "unused.pt":
        kwargs["path"] = tmp_path / "unused.pt"
    with pytest.raises(exc, match=pattern):
        fn(**kwargs)


class CountingModel(nn.Module):
    """Wraps a model; counts forward calls; can give NaN from one call on."""

    def __init__(self, inner, nan_at_call=None, hidden=True):
        super().__init__()
        self.inner, self.calls = inner, 0
        self.nan_at_call, self.hidden = nan_at_call, hidden

    def forward(self, x, return_hidden=False):
        self.calls += 1
        if self.hidden:
            out, states = self.inner(x, return_hidden=True)
        else:
            out, states = self.inner(x), []
        if self.calls == self.nan_at_call:
            out = out * NAN
            states = [*states[:-1], states[-1] * NAN] if states else states
        return (out, states) if return_hidden else out


class NaNGradient(torch.autograd.Function):
    """Identity forward; NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * NAN


class NaNGradientModel(nn.Module):
    """A finite loss whose gradient becomes NaN at one forward call."""

    def __init__(self, inner, nan_at_call):
        super().__init__()
        self.inner, self.calls, self.nan_at_call = inner, 0, nan_at_call

    def forward(self, x, return_hidden=False):
        self.calls += 1
        out, states = self.inner(x, return_hidden=True)
        if self.calls == self.nan_at_call:
            states = [NaNGradient.apply(h) for h in states]
            out = states[-1]
        return (out, states) if return_hidden else out


MIM_OK = {"epochs": 1, "mbs": 20}
TRAIN_CASES = [
    ("epochs 0", {"epochs": 0}, ValueError, r"epochs must be >= 1, got 0"),
    ("epochs float", {"epochs": 1.5}, TypeError, r"epochs must be an integer"),
    ("mbs 0", {"mbs": 0}, ValueError, r"mbs must be >= 2, got 0"),
    ("mbs 1", {"mbs": 1}, ValueError, r"mbs must be >= 2, got 1"),
    ("mbs > bs", {"mbs": 30, "bs": 20}, ValueError, r"mbs=30 is larger than bs=20"),
    ("bs % mbs", {"mbs": 20, "bs": 30}, ValueError,
     r"bs=30 is not a multiple of mbs=20 \(bs % mbs = 10\)"),
    ("mbs > N", {"mbs": 50}, ValueError, r"X has 40 samples, fewer than mbs=50"),
    ("alpha<0", {"alpha": -1.0}, ValueError, r"alpha must be >= 0, got -1.0"),
    ("beta<0", {"beta": -0.1}, ValueError, r"beta must be >= 0, got -0.1"),
    ("beta inf", {"beta": INF}, ValueError, r"beta must be finite, got inf"),
    ("lr 0", {"lr": 0.0}, ValueError, r"lr must be > 0, got 0.0"),
    ("lr NaN", {"lr": NAN}, ValueError, r"lr must be finite, got nan"),
    ("prior", {"prior": "uniform"}, ValueError, r"prior='uniform' is not allowed"),
    ("seed str", {"seed": "0"}, TypeError, r"seed must be an integer, got '0'"),
    ("log_every 0", {"log_every": 0}, ValueError, r"log_every must be >= 1, got 0"),
    ("checkpoint_every 0", {"checkpoint_every": 0}, ValueError,
     r"checkpoint_every must be >= 1, got 0"),
    ("callback", {"callback": 5}, TypeError, r"callback must be callable or None"),
    ("device", {"device": "gpu2"}, ValueError, r"device='gpu2' is not a device"),
    ("on_nonfinite", {"on_nonfinite": "ignore"}, ValueError,
     r"on_nonfinite='ignore' is not allowed; use one of 'raise', 'skip'"),
    ("sampling", {"sampling": "replace"}, ValueError, r"sampling='replace'"),
    ("resume no dir", {"resume": True}, ValueError, r"resume=True needs checkpoint"),
    ("X NaN", {"X": _with(X, (5, 2), NAN)}, ValueError,
     r"X contains NaN or inf.*1 sample"),
    ("X inf", {"X": _with(X, (7, 0), -INF)}, ValueError, r"X contains NaN or inf"),
    ("X int", {"X": torch.ones(40, 12, dtype=torch.long)}, TypeError,
     r"X must hold floating point values, got torch.int64"),
    ("X list", {"X": X.tolist()}, TypeError, r"X must be a torch.Tensor or numpy"),
    ("X empty", {"X": torch.empty(0, 12)}, ValueError, r"X has 0 samples"),
    ("X 1-D", {"X": torch.randn(40)}, ValueError, r"X must be \(N, \.\.\.\)"),
    ("model", {"model": "mlp"}, TypeError, r"model must be a torch.nn.Module"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "exc", "pattern"),
    [pytest.param(*c[1:], id=c[0]) for c in TRAIN_CASES],
)
def test_train_mim_refuses_before_any_forward_pass(changes, exc, pattern, tmp_path):
    model = CountingModel(_mlp())
    kwargs = {"model": model, "X": X, **MIM_OK, **FAST, **changes}
    with pytest.raises(exc, match=pattern):
        train_mim(**kwargs)
    assert model.calls == 0


DML_CASES = [
    ("batch 1", {"batch_size": 1}, ValueError, r"batch_size must be >= 2, got 1"),
    ("batch 0", {"batch_size": 0}, ValueError, r"batch_size must be >= 2, got 0"),
    ("beta<0", {"beta": -1.0}, ValueError, r"beta must be >= 0, got -1.0"),
    ("epochs 0", {"epochs": 0}, ValueError, r"epochs must be >= 1, got 0"),
    ("one sample", {"X": X[:1]}, ValueError, r"X has 1 samples; DML needs at least 2"),
    ("X NaN", {"X": _with(X, (0, 0), NAN)}, ValueError, r"X contains NaN or inf"),
    ("eps<0", {"eps": -1e-7}, ValueError, r"eps must be >= 0"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "exc", "pattern"), [pytest.param(*c[1:], id=c[0]) for c in DML_CASES]
)
def test_train_dml_refuses_before_any_forward_pass(changes, exc, pattern):
    model = CountingModel(_dml_net(), hidden=False)
    kwargs = {"model": model, "X": X, "epochs": 1, "batch_size": 20, **FAST, **changes}
    with pytest.raises(exc, match=pattern):
        train_dml(**kwargs)
    assert model.calls == 0


def test_train_dml_refuses_a_single_output_before_any_update():
    # softmax over one logit is 1 everywhere: JS stays 0 and nothing is learned
    torch.manual_seed(0)
    model = MLP(12, (16,), out_features=1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"logits of shape \(20, 1\).*K >= 2"):
        train_dml(model, X, epochs=1, batch_size=20, **FAST)
    after = list(model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_checkpoint_dir_must_be_a_writable_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    model = CountingModel(_mlp())
    with pytest.raises(NotADirectoryError, match=r"checkpoint_dir=.*a_file"):
        train_mim(model, X, checkpoint_dir=blocker / "ckpt", **MIM_OK, **FAST)
    assert model.calls == 0
    # a folder whose parents do not exist yet is made when first needed
    deep = tmp_path / "not" / "yet" / "there"
    train_mim(_mlp(), X, checkpoint_dir=deep, **MIM_OK, **FAST)
    assert (deep / "last.pt").is_file()


# ----------------------------------------------------------- non-finite


@pytest.mark.parametrize("log_every", [1, 3])
def test_dml_nan_loss_stops_naming_step_and_terms(tmp_path, log_every):
    # 40 samples, batch 10: 4 steps an epoch; beta=0 gives one call a step
    model = CountingModel(_dml_net(), nan_at_call=6, hidden=False)
    with pytest.raises(NonFiniteError) as info:
        train_dml(
            model,
            X,
            epochs=3,
            batch_size=10,
            beta=0.0,
            log_every=log_every,
            checkpoint_every=1,
            checkpoint_dir=tmp_path,
            **FAST,
        )
    message = str(info.value)
    assert "step 6 (loss=nan, dml=nan, smoothness=0, js=nan)" in message
    assert f"last good checkpoint: {tmp_path / 'last.pt'}" in message
    assert "on_nonfinite='skip'" in message
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["progress"]["step"] == 5
    assert all(bool(torch.isfinite(v).all()) for v in state["model"].values())


def test_dml_nan_steps_can_be_skipped():
    model = CountingModel(_dml_net(), nan_at_call=6, hidden=False)
    history = train_dml(
        model, X, epochs=3, batch_size=10, beta=0.0, on_nonfinite="skip", **FAST
    )
    assert [r["skipped"] for r in history] == [0, 1, 1]
    assert history[-1]["steps"] == 12
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["js"]) for r in history)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_mim_nan_gradient_with_a_finite_loss_is_caught(tmp_path):
    # mbs 10, bs 20: an update every 2 steps; the NaN gradient of step 3
    # spoils the update after step 4, which the error names
    model = NaNGradientModel(_mlp(), nan_at_call=3)
    with pytest.raises(NonFiniteError) as info:
        train_mim(
            model,
            X,
            epochs=2,
            mbs=10,
            bs=20,
            beta=0.0,
            log_every=1,
            checkpoint_every=1,
            checkpoint_dir=tmp_path,
            **FAST,
        )
    message = str(info.value)
    assert "non-finite loss or gradient at step 4 (loss=" in message
    for term in ("entropy=", "prior=", "smoothness="):
        assert term in message
    assert "nan" not in message.split("(")[1].split(")")[0]  # the loss was finite
    assert load_checkpoint(tmp_path / "last.pt")["progress"]["step"] == 3

    model = NaNGradientModel(_mlp(), nan_at_call=3)
    history = train_mim(
        model, X, epochs=2, mbs=10, bs=20, beta=0.0, on_nonfinite="skip", **FAST
    )
    assert history[-1]["skipped"] == 1 and history[-1]["updates"] == 3
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_manifold_labeler_that_diverges_raises_instead_of_labelling():
    Xm, _ = make_manifolds("moons", 200)
    epochs = []
    labeler = ManifoldLabeler(
        lr=1e8,
        max_epochs=50,
        n_restarts=2,
        max_restarts=3,  # none formed: a third restart is tried too
        progress=False,
        callback=lambda restart, epoch, info: epochs.append((restart, epoch)),
    )
    with pytest.raises(FloatingPointError) as info:
        labeler.fit(Xm)
    message = str(info.value)
    assert (
        "diverged in all 3 restart(s)" in message and "lr (now 100000000.0)" in message
    )
    assert not hasattr(labeler, "labels_")
    # each restart stops at its first non-finite epoch, not after 50
    assert {r for r, _ in epochs} == {0, 1, 2} and len(epochs) < 30


# ------------------------------------------------------- experiments


def test_two_runs_into_one_output_dir_never_overwrite(tmp_path):
    out = tmp_path / "run"
    kw = {"profile": "smoke", "output_dir": out, "download": False}
    config = ex.resolve_config("mnist", **kw)
    ex.write_results(ex.start_run(config), config, [_row()], device="cpu")
    saved = (out / "results.json").read_text()
    with pytest.raises(FileExistsError, match=r"output_dir=.*already holds"):
        ex.resolve_config("mnist", **kw)
    assert (out / "results.json").read_text() == saved
    # overwrite=True is the explicit way to replace it
    again = ex.start_run(ex.resolve_config("mnist", **kw, overwrite=True))
    assert again.dir == out and not (out / "results.json").exists()


def _row():
    return {
        "method": "Neural Bayes-MIM",
        "features": "last",
        "probe": "linear",
        "accuracy": 0.5,
        "random_accuracy": 0.4,
    }


def _papermill(tmp_path, *params):
    """Run notebooks/mnist.ipynb at profile smoke: the finished process."""
    pytest.importorskip("papermill")
    command = [sys.executable, "-m", "papermill", "--cwd", str(tmp_path)]
    command += [str(ROOT / "notebooks" / "mnist.ipynb"), str(tmp_path / "out.ipynb")]
    command += ["-p", "profile", "smoke", "-p", "progress", "False", *params]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("params", "words"),
    [
        (["-p", "mbs", "300", "-p", "bs", "1000"], ["bs=1000", "mbs=300"]),
        (["-p", "dataset", "imagenet"], ["dataset='imagenet'", "'mnist'"]),
    ],
    ids=["bs % mbs", "dataset"],
)
def test_papermill_shows_the_parameter_error(tmp_path, params, words):
    done = _papermill(tmp_path, "-p", "output_dir", str(tmp_path / "run"), *params)
    assert done.returncode != 0
    assert "PapermillExecutionError" in done.stderr
    for word in words:
        assert word in done.stderr
    assert not (tmp_path / "run").exists()  # refused before the run folder


@pytest.mark.slow
def test_papermill_into_an_earlier_runs_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    config = ex.resolve_config("mnist", profile="smoke", output_dir=out)
    ex.write_results(ex.start_run(config), config, [_row()], device="cpu")
    earlier = {p.name: p.read_bytes() for p in out.iterdir()}
    done = _papermill(tmp_path, "-p", "output_dir", str(out))
    assert done.returncode != 0
    assert "FileExistsError" in done.stderr
    for word in ("already holds an earlier run", "overwrite=True", "resume=True"):
        assert word in done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == earlier
