"""Interrupted runs: stop a training process with a signal, resume, compare.

Each run is a separate Python process (tests/resume_worker.py) that pauses
at a known step and waits; the test then sends SIGINT (Ctrl-C) or SIGKILL
(out of memory, a preempted job), starts it again with resume=True, and
requires the final weights and history to equal, bit for bit, those of a
run that was never stopped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nbkit.checkpoint import CheckpointError, load_checkpoint
from nbkit.models import MLP
from nbkit.train import TIMING_KEYS, train_mim

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import resume_worker as worker  # noqa: E402

pytestmark = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="needs POSIX signals"
)
WAIT = 120  # seconds to wait for a worker to reach its pause point


def _command(result, ckpt_dir, *extra):
    return [
        sys.executable,
        str(HERE / "resume_worker.py"),
        str(result),
        str(ckpt_dir),
        *extra,
    ]


def _run(result, ckpt_dir, *extra):
    """Run the worker to the end; fail with its output if it fails."""
    done = subprocess.run(
        _command(result, ckpt_dir, *extra), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(result, weights_only=True)


def _run_and_stop(ckpt_dir, sig, *pause):
    """Start the worker, wait until it pauses, send sig; return its code."""
    ready = ckpt_dir.parent / "ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        _command(ckpt_dir.parent / "unused.pt", ckpt_dir, *pause),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT
        while not ready.exists():
            if proc.poll() is not None:
                pytest.fail(f"worker ended before pausing:\n{proc.stderr.read()}")
            if time.monotonic() > deadline:
                pytest.fail("worker never reached its pause point")
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    proc.stderr.close()
    return proc.returncode, stderr


def _untimed(history):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in history]


def _assert_same_run(got, want):
    assert got["model"].keys() == want["model"].keys()
    for name, value in want["model"].items():
        assert torch.equal(got["model"][name], value), name
    assert _untimed(got["history"]) == _untimed(want["history"])
    assert got["history"][-1]["steps"] == 36 and got["history"][-1]["updates"] == 18


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A run that is never stopped."""
    folder = tmp_path_factory.mktemp("reference")
    return _run(folder / "result.pt", folder / "ckpt")


@pytest.mark.parametrize(
    ("sig", "stop_step", "saved_step"),
    [
        # Ctrl-C in epoch 1, mid-accumulation: the checkpoint of step 3 holds
        # one accumulated mini-batch
        (signal.SIGINT, 5, 3),
        # killed in epoch 2, after the end-of-epoch checkpoint (step 12) and
        # the one of step 15
        (signal.SIGKILL, 17, 15),
    ],
    ids=["SIGINT", "SIGKILL"],
)
def test_signal_then_resume_equals_an_uninterrupted_run(
    tmp_path, reference, sig, stop_step, saved_step
):
    ckpt = tmp_path / "ckpt"
    code, stderr = _run_and_stop(ckpt, sig, "--pause-at-step", str(stop_step))
    assert code != 0
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr
    else:
        assert code == -signal.SIGKILL
    state = load_checkpoint(ckpt / "last.pt")
    assert state["progress"]["step"] == saved_step
    assert state["progress"]["acc"] == 1  # one mini-batch waits for its update
    assert [p.name for p in ckpt.iterdir()] == ["last.pt"]  # no temp files

    resumed = _run(tmp_path / "result.pt", ckpt, "--resume")
    _assert_same_run(resumed, reference)


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, reference):
    ckpt = tmp_path / "ckpt"
    # checkpoints: step 3, 6, 9, 12 (+ epoch end), ...; pause in the 3rd
    code, _ = _run_and_stop(ckpt, signal.SIGKILL, "--pause-in-save", "3")
    assert code == -signal.SIGKILL
    files = sorted(p.name for p in ckpt.iterdir())
    # the half-written file is a temporary one; last.pt is whole
    assert "last.pt" in files and len(files) == 2
    (partial,) = [name for name in files if name != "last.pt"]
    assert partial.startswith(".last.pt.") and partial.endswith(".tmp")
    assert load_checkpoint(ckpt / "last.pt")["progress"]["step"] == 6
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_checkpoint(ckpt / partial)

    resumed = _run(tmp_path / "result.pt", ckpt, "--resume")
    _assert_same_run(resumed, reference)
    # the next successful write removed the partial file
    assert [p.name for p in ckpt.iterdir()] == ["last.pt"]


def test_resume_with_other_settings_is_refused_listing_them(tmp_path):
    ckpt = tmp_path / "ckpt"
    first = {**worker.SETTINGS, "epochs": 1}
    train_mim(worker.make_model(), worker.make_data(), checkpoint_dir=ckpt, **first)
    before = (ckpt / "last.pt").read_bytes()
    torch.manual_seed(0)
    wider = MLP(worker.DIM, (32, 24), out_features=None)
    settings = {**first, "lr": 2e-3, "mbs": 10, "sampling": "fresh"}
    with pytest.raises(CheckpointError) as info:
        train_mim(
            wider, worker.make_data(), checkpoint_dir=ckpt, resume=True, **settings
        )
    message = str(info.value)
    assert str(ckpt / "last.pt") in message
    lines = message.split("(saved -> now): ")[1].split("; ")
    assert {line.split(":")[0] for line in lines} == {
        "lr",
        "mbs",
        "sampling",
        "n_parameters",
    }
    for line in ("lr: 0.001 -> 0.002", "mbs: 20 -> 10", "sampling: 'epoch' -> 'fresh'"):
        assert line in lines
    assert (ckpt / "last.pt").read_bytes() == before  # left as it was


@pytest.mark.parametrize("sampling", ["epoch", "fresh"])
def test_in_process_interrupt_and_resume_for_each_sampling(tmp_path, sampling):
    """Ctrl-C raised from the step callback, for both ways of drawing batches."""
    settings = {**worker.SETTINGS, "epochs": 2, "sampling": sampling}
    X = worker.make_data()
    want = worker.make_model()
    want_history = train_mim(want, X, **settings)

    def interrupt(record):
        if record["step"] == 14:  # epoch 2; last checkpoint at step 12
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_mim(
            worker.make_model(),
            X,
            checkpoint_dir=tmp_path,
            **{**settings, "step_callback": interrupt},
        )
    assert load_checkpoint(tmp_path / "last.pt")["progress"]["step"] == 12
    got = MLP(worker.DIM, (24, 24), out_features=None)  # other initial weights
    history = train_mim(got, X, checkpoint_dir=tmp_path, resume=True, **settings)
    assert _untimed(history) == _untimed(want_history)
    for a, b in zip(got.state_dict().values(), want.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_dml_checkpoint_is_not_resumed_by_train_mim(tmp_path):
    from nbkit.train import train_dml

    torch.manual_seed(0)
    net = MLP(worker.DIM, (24,), out_features=3)
    opts = {"epochs": 1, "progress": False, "device": "cpu"}
    train_dml(net, worker.make_data(), batch_size=40, checkpoint_dir=tmp_path, **opts)
    with pytest.raises(CheckpointError, match=r"kind: 'dml' -> 'mim'"):
        train_mim(
            worker.make_model(),
            worker.make_data(),
            mbs=20,
            checkpoint_dir=tmp_path,
            resume=True,
            **opts,
        )
