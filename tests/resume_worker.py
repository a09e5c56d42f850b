"""A small MIM training run in its own process, for tests/test_resume.py.

    python tests/resume_worker.py RESULT CKPT_DIR [--pause-at-step K]
        [--pause-in-save N] [--resume]

Trains an MLP with train_mim on fixed random data (bs = 2 * mbs, a
checkpoint every 3 steps, 3 epochs of 12 steps) and writes the final
weights and history to RESULT. ``--pause-at-step K`` writes
``CKPT_DIR/../ready`` from the step callback at step K and then waits to
be signalled; ``--pause-in-save N`` does the same half way through
writing the N-th checkpoint (only part of the file is on disk).
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import torch

from nbkit.models import MLP
from nbkit.train import train_mim

SETTINGS = {
    "epochs": 3,
    "mbs": 20,
    "bs": 40,  # accumulate two mini-batches per update
    "alpha": 2.0,
    "beta": 4.0,
    "seed": 7,
    "checkpoint_every": 3,  # odd: some checkpoints fall mid-accumulation
    "log_every": 1,
    "progress": False,
    "device": "cpu",
}
N_SAMPLES, DIM = 240, 16  # 12 steps an epoch


def make_data() -> torch.Tensor:
    """Fixed random inputs (N_SAMPLES, DIM), standardised per dimension."""
    g = torch.Generator().manual_seed(123)
    X = torch.randn(N_SAMPLES, DIM, generator=g) @ torch.randn(DIM, DIM, generator=g)
    return (X - X.mean(0)) / X.std(0)


def make_model() -> MLP:
    """The same initial weights in every process."""
    torch.manual_seed(0)
    return MLP(DIM, (24, 24), out_features=None)


def wait_for_signal(ready: Path) -> None:
    """Tell the test where we are, then idle until it signals this process."""
    ready.write_text("ready")
    time.sleep(300)
    sys.exit("resume_worker: never signalled")


def pause_in_save(n: int, ready: Path) -> None:
    """Make the n-th torch.save write half its bytes, then wait."""
    original, calls = torch.save, {"n": 0}

    def slow_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] != n:
            return original(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        original(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        wait_for_signal(ready)

    torch.save = slow_save


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("result", type=Path)
    parser.add_argument("checkpoint_dir", type=Path)
    parser.add_argument("--pause-at-step", type=int, default=None)
    parser.add_argument("--pause-in-save", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the same reduction order in every process
    ready = args.checkpoint_dir.parent / "ready"

    def step_callback(record):
        if record["step"] == args.pause_at_step:
            wait_for_signal(ready)

    if args.pause_in_save is not None:
        pause_in_save(args.pause_in_save, ready)
    model = make_model()
    history = train_mim(
        model,
        make_data(),
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        step_callback=step_callback,
        **SETTINGS,
    )
    torch.save({"model": model.state_dict(), "history": history}, args.result)


if __name__ == "__main__":
    main()
