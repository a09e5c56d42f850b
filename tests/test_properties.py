"""Properties of the core losses on random states, including saturated ones.

States L are drawn as softmax(scale * z) with z standard normal: a small
scale gives near-uniform rows, a large one rows that underflow to exact
zeros and ones in float32. Some draws make rows one-hot, or put every row
on the same state (a collapsed p(z)). For every draw the losses must be
finite with finite gradients, blind to the order of the batch and of the
states, and keep the dtype.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nbkit.bayes import mutual_information
from nbkit.losses import (
    EPS,
    _two_way_dml,
    dml_loss,
    js_divergence,
    mim_loss,
    neg_mutual_information,
)
from nbkit.regularizers import uniform_prior

DTYPES = (torch.float32, torch.float64)
MODES = ("soft", "one-hot rows", "collapsed", "mixed")
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}
# examples per test: few by default; many under the "explore" profile
SCALE = 200 if os.environ.get("NBKIT_HYPOTHESIS") == "explore" else 1


def examples(n):
    return settings(max_examples=n * SCALE)  # deadline: off in both profiles


@st.composite
def logits(draw, max_k=1000):
    """Logits (B, K) whose softmax covers the simplex's interior and edges."""
    B = draw(st.integers(2, 64))
    K = draw(st.sampled_from([2, 3, 7, draw(st.integers(2, max_k)), max_k]))
    scale = draw(st.sampled_from([1e-3, 0.3, 1.0, 5.0, 30.0, 200.0]))
    dtype = draw(st.sampled_from(DTYPES))
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    a = scale * torch.randn(B, K, generator=g, dtype=torch.float64)
    if mode == "one-hot rows":  # softmax of these is exactly one-hot
        a = 1e4 * torch.nn.functional.one_hot(a.argmax(1), K).double()
    elif mode == "collapsed":  # every row on state 0: E[L_0] = 1
        a[:, 0] += 1e4
    elif mode == "mixed":  # half the rows one-hot, half soft
        a[: B // 2, 0] += 1e4
    return a.to(dtype)


def _states(a):
    return torch.softmax(a, dim=1)


# every function of (B, K) states that the kit trains or reports with
LOSSES = {
    "mim v2": lambda L: mim_loss(L, alpha=2.0),
    "mim v1": lambda L: mim_loss(L, alpha=0.5, prior="v1"),
    "mim v2 alpha 10": lambda L: mim_loss(L, alpha=10.0),
    "dml K-way": dml_loss,
    "uniform_prior v2": lambda L: uniform_prior(L, "v2"),
    "uniform_prior v1": lambda L: uniform_prior(L, "v1"),
    "mutual_information": mutual_information,
    "J": neg_mutual_information,
    "J_hat": lambda L: neg_mutual_information(L, stop_gradient=True),
}


def _grad(fn, x):
    x = x.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x), x)
    return g


def _close(a, b, dtype):
    return math.isclose(float(a), float(b), rel_tol=TOL[dtype], abs_tol=TOL[dtype])


@pytest.mark.parametrize("name", sorted(LOSSES))
@examples(15)
@given(a=logits())
def test_finite_with_finite_gradients(name, a):
    fn = LOSSES[name]
    L = _states(a)
    value = fn(L)
    assert value.dtype == a.dtype and value.ndim == 0
    assert torch.isfinite(value), f"{name} = {value} for {a.shape} {a.dtype}"
    # through the softmax, as in training, and with respect to L itself
    assert torch.isfinite(_grad(lambda x: fn(_states(x)), a)).all()
    assert torch.isfinite(_grad(fn, L)).all()


@pytest.mark.parametrize("name", sorted(LOSSES))
@examples(10)
@given(a=logits(max_k=200), seed=st.integers(0, 1000))
def test_invariant_to_batch_and_state_order(name, a, seed):
    fn = LOSSES[name]
    L = _states(a)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randperm(L.shape[0], generator=g)
    cols = torch.randperm(L.shape[1], generator=g)
    value = fn(L)
    assert _close(fn(L[rows]), value, a.dtype)
    assert _close(fn(L[:, cols]), value, a.dtype)


@examples(30)
@given(a=logits())
def test_mutual_information_lies_in_0_log_k(a):
    L = _states(a)
    mi = mutual_information(L).item()
    slack = TOL[a.dtype] * math.log(L.shape[1])
    assert -slack <= mi <= math.log(L.shape[1]) + slack
    # Prop. 1 and Theorem 1: J is -MI
    assert _close(neg_mutual_information(L), -mi, a.dtype)


@examples(30)
@given(a=logits(max_k=50))
def test_js_divergence_lies_in_0_log_2(a):
    L = _states(a)
    for states in (L, L[:, 0]):  # K-way and binary
        js = js_divergence(states).item()
        assert -TOL[a.dtype] <= js <= math.log(2) + TOL[a.dtype]


@examples(30)
@given(a=logits(max_k=2))
def test_binary_dml_finite_and_order_free(a):
    # a single sigmoid output: L of shape (B,) and (B, 1)
    x = a[:, 0] - a[:, 1]
    L = torch.sigmoid(x)
    value = dml_loss(L)
    assert value.dtype == a.dtype and torch.isfinite(value)
    assert torch.equal(dml_loss(L[:, None]), value)
    assert torch.isfinite(_grad(lambda z: dml_loss(torch.sigmoid(z)), x)).all()
    assert torch.isfinite(_grad(dml_loss, L)).all()
    flipped = L.flip(0)
    assert _close(dml_loss(flipped), value, a.dtype)
    # relabelling the two partitions (L -> 1 - L) changes nothing; compared
    # on states whose complement is exact (1 - 3e-14 is 1 in float32)
    M = 1 - L
    assert _close(dml_loss(1 - M), dml_loss(M), a.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_collapsed_states_give_finite_losses(dtype):
    """Regression: every row on one state used to give inf (v2) or NaN (DML)."""
    L = torch.zeros(6, 4, dtype=dtype)
    L[:, 1] = 1
    uniform = torch.full((6, 4), 0.25, dtype=dtype)
    for name, fn in LOSSES.items():
        assert torch.isfinite(fn(L)), name
        assert torch.isfinite(_grad(fn, L)).all(), name
        # collapse is worse than the uniform prior for every prior term
        if name.startswith(("mim", "uniform_prior")):
            assert fn(L) > fn(uniform), name
    # no separation at all: DML at its maximum log 2, JS zero
    assert dml_loss(L, eps=0.0).item() == pytest.approx(math.log(2), abs=1e-6)
    assert js_divergence(L).item() == pytest.approx(0.0, abs=1e-6)
    assert dml_loss(torch.ones(5, dtype=dtype), eps=0.0).item() == pytest.approx(
        math.log(2), abs=1e-6
    )


def test_faint_state_keeps_dml_gradients_finite():
    """Regression: a float32 state with subnormal mass (E[L_k] ~ 1e-40) made
    every gradient of the K-way DML loss NaN (-L / E[L]^2 overflowed)."""
    a = torch.tensor([[0.0, 5.0, -92.0], [0.0, -5.0, -94.0], [0.0, 0.0, -91.0]])
    L = torch.softmax(a, dim=1)
    assert 0 < L[:, 2].mean().item() < 1e-38  # subnormal in float32
    g = _grad(lambda x: dml_loss(torch.softmax(x, dim=1)), a)
    assert torch.isfinite(g).all()
    # the value is the one float64 gives for the same states
    exact = dml_loss(L.double())
    assert dml_loss(L).item() == pytest.approx(exact.item(), rel=1e-5)

    # float32 cannot hold dloss/dL_2 (~1e40): the faint state's own term is
    # held fixed and the rest gets the gradient float64 gives it
    def held(x):
        L64 = torch.softmax(x, dim=1)
        L64 = torch.cat([L64[:, :2], L64[:, 2:].detach()], dim=1)
        return _two_way_dml(L64, EPS).mean()

    g64 = _grad(held, a.double())
    assert torch.allclose(g.double(), g64, atol=1e-6)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
@pytest.mark.parametrize("K", (3, 12))
def test_half_precision_states(dtype, K):
    """Regression: bfloat16 softmax rows (off by up to 0.004) were refused, and
    v2's clamp at 1 - 1e-7 rounded to 1 in half precision: log 0 = -inf."""
    g = torch.Generator().manual_seed(K)
    a = (30 * torch.randn(8, K, 2, 2, generator=g)).to(dtype)
    a[:, 0] += 200  # every row on state 0: E[L_0] rounds to 1
    for fn in (lambda x: mim_loss(x, alpha=2.0), lambda x: mim_loss(x, prior="v1")):
        assert torch.isfinite(fn(torch.softmax(a, dim=1)))
        grad = _grad(lambda x, f=fn: f(torch.softmax(x, dim=1)), a)
        assert torch.isfinite(grad).all()
    # the v2 prior of a collapsed batch: E[L] clamped one epsilon below 1
    top = 1 - torch.finfo(dtype).eps
    L = torch.softmax(a[:, :, 0, 0], dim=1)
    expected = -((K - 1) * math.log(1e-7) / K + math.log(top) / K) - (
        (K - 1) / K * ((K - 1) * math.log1p(-1e-7) + math.log1p(-top))
    )
    assert uniform_prior(L, "v2").item() == pytest.approx(expected, rel=2e-2)
    # rows a half-precision softmax makes are accepted, a real miss is not
    soft = torch.softmax(torch.randn(64, K, generator=g).to(dtype) * 3, dim=1)
    assert torch.isfinite(dml_loss(soft))
    with pytest.raises(ValueError, match="rows must sum to one"):
        dml_loss(soft * 0.9)
