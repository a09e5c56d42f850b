"""Speed options of the training loops: CPU results unchanged, bf16 kept safe."""

import sys

import pytest
import torch
from torch import nn

import nbkit.speed
import nbkit.train as nbtrain
from nbkit.bench import conv_flops
from nbkit.bench import main as bench_main
from nbkit.models import MLP, MIMEncoder
from nbkit.regularizers import data_directions
from nbkit.speed import SpeedPlan, backend_flags, fast_forward, resolve_speed
from nbkit.train import train_dml, train_mim

FAST = {"progress": False, "device": "cpu"}
OFF = {
    "amp": "off",
    "channels_last": False,
    "tf32": False,
    "cudnn_benchmark": False,
    "compile": False,
}


def _images(n=24, size=24, seed=0):
    """(n, 3, size, size) float32 standard normal images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


def _cnn(seed=0):
    torch.manual_seed(seed)
    return MIMEncoder(in_channels=3, width=0.02)  # channels 4-10-14-20


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_auto_resolves_to_off_on_cpu():
    plan = resolve_speed("cpu")
    assert plan == SpeedPlan()  # nothing on, nothing wrapped
    assert fast_forward(nn.Linear(2, 2), plan, torch.float32).__class__ is nn.Linear


def test_explicit_choices_resolve_as_asked():
    plan = resolve_speed("cpu", amp="bf16", channels_last=True, compile="eager")
    assert plan.amp_dtype is torch.bfloat16
    assert plan.channels_last and plan.compile_backend == "eager"
    # TF32 and cuDNN autotuning only exist on CUDA
    assert not resolve_speed("cpu", tf32=True, cudnn_benchmark=True).tf32
    assert resolve_speed("cuda", amp="off", tf32=True).tf32


@pytest.mark.parametrize(
    ("name", "value"),
    [("amp", "fp16"), ("channels_last", "yes"), ("tf32", 1.5), ("compile", "")],
)
def test_bad_choice_names_the_parameter(name, value):
    with pytest.raises(ValueError, match=name):
        resolve_speed("cpu", **{name: value})


def test_train_mim_rejects_bad_amp_before_training():
    with pytest.raises(ValueError, match="amp='float16'"):
        train_mim(_cnn(), _images(), epochs=1, mbs=8, amp="float16", **FAST)


def test_auto_options_leave_cpu_training_bit_identical():
    X = _images()
    kw = {"epochs": 2, "mbs": 8, "bs": 16, "beta": 4.0, **FAST}
    m_auto, m_off = _cnn(), _cnn()
    h_auto = train_mim(m_auto, X, **kw)  # every option left at its default
    h_off = train_mim(m_off, X, **kw, **OFF)
    a, b = _state(m_auto), _state(m_off)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert h_auto[-1]["loss"] == h_off[-1]["loss"]


def test_auto_options_leave_cpu_dml_bit_identical():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(60, 5, generator=g)
    kw = {"epochs": 3, "batch_size": 20, "beta": 1.0, **FAST}
    torch.manual_seed(0)
    m_auto = MLP(5, (8, 8), out_features=3)
    torch.manual_seed(0)
    m_off = MLP(5, (8, 8), out_features=3)
    train_dml(m_auto, X, **kw)
    train_dml(m_off, X, **kw, **OFF)
    a, b = _state(m_auto), _state(m_off)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_on_cpu_runs_and_the_loss_sees_float32(monkeypatch):
    seen_L, seen_h = [], []
    real_mim_loss = nbtrain.mim_loss

    def recording_mim_loss(L, *args, **kwargs):
        seen_L.append(L.dtype)
        return real_mim_loss(L, *args, **kwargs)

    monkeypatch.setattr(nbtrain, "mim_loss", recording_mim_loss)
    model = _cnn()
    model.blocks[0][0].register_forward_hook(
        lambda mod, inp, out: seen_h.append(out.dtype)
    )
    history = train_mim(model, _images(), epochs=1, mbs=8, amp="bf16", **FAST)
    assert seen_h and set(seen_h) == {torch.bfloat16}  # the conv ran in bf16
    assert seen_L and set(seen_L) == {torch.float32}  # E[L] and loss in fp32
    terms = ("loss", "entropy", "prior", "smoothness")
    assert all(torch.isfinite(torch.tensor(history[-1][k])) for k in terms)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_on_cpu_stays_close_to_float32():
    X = _images()
    kw = {"epochs": 1, "mbs": 8, "beta": 0.0, **FAST}
    h_bf16 = train_mim(_cnn(), X, amp="bf16", **kw)
    h_fp32 = train_mim(_cnn(), X, **kw)
    assert h_bf16[0]["loss"] != h_fp32[0]["loss"]  # bf16 really was used
    assert h_bf16[0]["loss"] == pytest.approx(h_fp32[0]["loss"], rel=2e-2)


def test_fast_forward_casts_every_output_back():
    model = _cnn()
    plan = resolve_speed("cpu", amp="bf16", channels_last=True)
    out, hidden = fast_forward(model, plan, torch.float32)(
        _images(4), return_hidden=True
    )
    assert out.dtype == torch.float32
    assert [h.dtype for h in hidden] == [torch.float32] * 4
    w = model.blocks[0][0].weight
    assert w.is_contiguous(memory_format=torch.channels_last)


def test_channels_last_on_cpu_matches_contiguous():
    X = _images()
    kw = {"epochs": 1, "mbs": 8, "beta": 4.0, **FAST}
    m_cl, m_ref = _cnn(), _cnn()
    h_cl = train_mim(m_cl, X, channels_last=True, **kw)
    h_ref = train_mim(m_ref, X, **kw)
    assert h_cl[0]["loss"] == pytest.approx(h_ref[0]["loss"], rel=1e-5)
    a, b = _state(m_cl), _state(m_ref)
    # Adam (lr 1e-3) magnifies float32 rounding in the first updates
    assert all(torch.allclose(a[k], b[k], atol=2e-4) for k in a)


def test_compile_flag_uses_torch_compile_and_matches_eager():
    X = _images()
    kw = {"epochs": 1, "mbs": 8, "beta": 4.0, **FAST}
    m_c, m_ref = _cnn(), _cnn()
    h_c = train_mim(m_c, X, compile="eager", **kw)  # dynamo without codegen
    h_ref = train_mim(m_ref, X, **kw)
    assert h_c[0]["loss"] == pytest.approx(h_ref[0]["loss"], rel=1e-6)
    assert list(m_c.state_dict()) == list(m_ref.state_dict())  # no prefixes


@pytest.mark.parametrize("tf32", [True, False])
def test_backend_flags_set_tf32_either_way_and_restore(tf32):
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if not hasattr(matmul, "fp32_precision"):
        pytest.skip("torch < 2.9 has only the allow_tf32 flags")
    before = (cudnn.benchmark, matmul.fp32_precision, cudnn.conv.fp32_precision)
    with backend_flags(SpeedPlan(tf32=tf32, cudnn_benchmark=True, cuda=True)):
        assert cudnn.benchmark is True
        want = "tf32" if tf32 else "ieee"  # off means full float32 convs
        assert matmul.fp32_precision == cudnn.conv.fp32_precision == want
    after = (cudnn.benchmark, matmul.fp32_precision, cudnn.conv.fp32_precision)
    assert after == before
    with backend_flags(SpeedPlan(tf32=True)):  # a CPU plan touches nothing
        assert matmul.fp32_precision == before[1]


def test_auto_keeps_bf16_and_tf32_off_for_finite_differences(caplog, monkeypatch):
    assert resolve_speed("cuda").tf32  # no Rc: TF32 on CUDA
    plan = resolve_speed("cuda", finite_difference=True)
    assert plan.amp_dtype is None and not plan.tf32
    assert plan.channels_last and plan.cudnn_benchmark  # exact enough
    monkeypatch.setattr(nbkit.speed, "_WARNED", set())
    with caplog.at_level("WARNING", logger="nbkit.speed"):
        for _ in range(3):
            resolve_speed("cuda", amp="bf16", finite_difference=True)
        # on the CPU TF32 never applies: only what is really on is named
        resolve_speed("cpu", amp="bf16", tf32=True, finite_difference=True)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # once, not once per call
    assert warnings[0].startswith("bf16 autocast with a finite-difference")
    assert "inflates Rc" in warnings[0]


def test_bf16_rounding_swamps_the_finite_difference():
    # why "auto" keeps bf16 off when beta > 0 (nbkit.speed caveat)
    torch.manual_seed(0)
    model = MIMEncoder(3, 0.1).train()
    x = _images(32, 32)
    d = data_directions(x, torch.Generator().manual_seed(1))

    def Rc(zeta, amp):
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=amp):
            f0, f1 = model(x).float(), model(x + zeta * d).float()
        diff = (f0 - f1).mean(dim=(2, 3))
        return float(diff.pow(2).sum(dim=1).mean() / zeta**2)

    assert Rc(0.1, False) == pytest.approx(Rc(0.01, False), rel=0.05)
    assert Rc(0.01, True) > 10 * Rc(0.01, False)


class _HostReads:
    """Counts tensor-to-host reads (item, bool, ...) made by nbkit code."""

    names = ("item", "__bool__", "__int__", "__float__", "tolist")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.names:
            real = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counting(real))

    def _counting(self, real):
        def wrapper(t, *args, **kwargs):
            # the optimizer's step counter lives on the host: not a sync
            if "nbkit" in sys._getframe(1).f_code.co_filename:
                self.count += 1
            return real(t, *args, **kwargs)

        return wrapper


def test_step_loop_reads_nothing_back_per_step(monkeypatch):
    # host reads must not grow with the number of steps in an epoch
    X = torch.randn(96, 6)
    counts = []
    for n in (24, 96):  # 3 and 12 steps of 8
        torch.manual_seed(0)
        model = MLP(6, (8, 8), out_features=None)
        reads = _HostReads(monkeypatch)
        train_mim(
            model,
            X[:n],
            epochs=1,
            mbs=8,
            log_every=1000,
            checkpoint_every=None,
            **FAST,
        )
        counts.append(reads.count)
        monkeypatch.undo()
    assert counts[0] == counts[1] > 0


def test_conv_flops_of_the_paper_encoder_by_hand():
    # 32-30 | pool 15-13 | 13-11 | pool 5-3; 2 * Cin * Cout * 9 * Hout * Wout
    by_hand = 2 * 9 * (3 * 200 * 30**2 + 200 * 500 * 13**2)
    by_hand += 2 * 9 * (500 * 700 * 11**2 + 700 * 1000 * 3**2)
    assert by_hand == 1_189_620_000
    assert conv_flops(MIMEncoder(3, 1.0), 3, 32) == by_hand


def test_bench_runs_both_loops_and_prints_a_ratio(capsys):
    bench_main(
        ["--width", "0.02", "--mbs", "8", "--size", "24", "--steps", "1"]
        + ["--warmup", "1", "--rounds", "1", "--n-samples", "32", "--device", "cpu"]
    )
    out = capsys.readouterr().out
    rows = [
        line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["nbkit"], ["authors"])
    ]
    assert [r[0] for r in rows] == ["nbkit", "authors"]
    assert all(float(r[2]) > 0 for r in rows)  # images per second
    assert "x the authors'-style loop" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "21"], "--size must be >= 22, got 21"),
        (["--mbs", "8", "1"], "--mbs must be >= 2"),
        (["--width", "0"], "--width must be a finite number > 0, got 0.0"),
        (["--peak-tflops", "0"], "--peak-tflops must be > 0"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--no-cnn"], "--no-cnn leaves nothing to time"),
    ],
)
def test_bench_refuses_bad_arguments_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        bench_main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err
