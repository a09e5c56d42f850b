"""Training-speed benchmark: ``python -m nbkit.bench --help``.

Measures images per second of Neural Bayes-MIM training of the paper's CNN
(``MIMEncoder``) on random inputs on the current device, after a warm-up,
with CUDA synchronisation around every timed region:

* ``nbkit``: ``train_mim`` itself (one clean forward that gives every
  state and Rc's clean features, one perturbed forward, one backward;
  data resident on the device, no host sync per step);
* ``authors``: a loop shaped like the authors' public code (three forwards
  per step: a clean one for the loss, then a clean and a noisy one for Rc;
  a new DataLoader iterator with shuffling per step over a host-memory
  TensorDataset; every batch copied from host memory to the device).
  Both loops use the same precision and layout settings, so their ratio
  isolates the loop structure.

With beta > 0 (the paper's 4) the defaults keep bf16 and TF32 off, as
``train_mim`` does (``nbkit.speed`` explains why), so on a GPU compare
with its float32 peak; ``--amp bf16 --tf32 on`` measures the fast path.

FLOP count (multiply-adds count two): a 3x3 conv costs
2 * Cin * Cout * 9 * Hout * Wout per image; batch norm, ReLU, pooling, the
softmax states and the losses are left out (a few percent at most).
One forward costs F = the sum over the four convs. nbkit's step runs two
forwards and a backward through both (about twice their cost), so 6 F
per image; the authors' loop does 9 F of work for the same update, but
the TFLOP/s column always counts the useful 6 F.

``--manifolds`` also times ``nbkit.ManifoldLabeler`` on the paper's eight
synthetic tasks (four data sets, in 2-D and lifted to 512-D).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from .losses import mim_loss, multiscale_states
from .models import MIMEncoder
from .regularizers import smoothness
from .speed import backend_flags, fast_forward, resolve_speed
from .train import pick_device, train_mim

__all__ = ["conv_flops", "time_nbkit", "time_authors_loop", "main"]

ALPHA, BETA = 2.0, 4.0  # the paper's MIM settings


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def conv_flops(model: torch.nn.Module, channels: int, size: int) -> int:
    """Forward FLOPs per image of every Conv2d in model, from layer shapes."""
    total = 0

    def count(mod, inp, out):
        nonlocal total
        c_in, (kh, kw) = mod.in_channels // mod.groups, mod.kernel_size
        total += 2 * c_in * mod.out_channels * kh * kw * out.shape[2] * out.shape[3]

    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(count) for m in convs]
    was_training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(1, channels, size, size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def time_nbkit(model, X, *, mbs, steps, speed) -> float:
    """Seconds per step of ``train_mim`` on device-resident X (N, C, H, W)."""
    device = X.device
    kw = {"mbs": mbs, "alpha": ALPHA, "beta": BETA, "device": device}
    kw.update(progress=False, checkpoint_every=None, log_every=10**9, **speed)
    _sync(device)
    t0 = time.perf_counter()
    train_mim(model, X[: mbs * steps], epochs=1, **kw)
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _authors_step(fwd, opt, xb, gen):
    """Three forwards (loss; clean and noisy for Rc), one backward, one step."""
    _, hidden = fwd(xb, return_hidden=True)
    states = multiscale_states(hidden)
    loss = torch.stack([mim_loss(L, ALPHA, validate=False) for L in states]).mean()

    def pooled(z):  # Rc on the globally pooled last hidden state
        return fwd(z).mean(dim=(2, 3))

    loss = loss + BETA * smoothness(pooled, xb, generator=gen)  # fx recomputed
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_authors_loop(model, X_host, device, *, mbs, steps, speed) -> float:
    """Seconds per step of the authors'-style loop on host-memory X_host."""
    model.to(device).train()
    p = next(model.parameters())
    plan = resolve_speed(
        device, **speed, param_dtype=p.dtype, finite_difference=BETA > 0
    )
    fwd = fast_forward(model, plan, p.dtype)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator(device=device).manual_seed(1)
    loader = DataLoader(TensorDataset(X_host), batch_size=mbs, shuffle=True)
    with backend_flags(plan):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            (xb,) = next(iter(loader))  # a fresh iterator every step
            _authors_step(fwd, opt, xb.to(device), gen)
        _sync(device)
    return (time.perf_counter() - t0) / steps


def _time_manifolds(device, epochs):
    """Wall seconds (and ARI) of ManifoldLabeler.fit on the eight tasks."""
    from sklearn.metrics import adjusted_rand_score

    from . import ManifoldLabeler
    from .data.synthetic import MANIFOLDS, N_MANIFOLDS, make_manifolds

    rows = []
    for dim in (2, 512):
        for name in MANIFOLDS:
            X, y = make_manifolds(name, dim=dim)
            kw = {"n_manifolds": N_MANIFOLDS[name], "device": str(device)}
            kw.update(progress=False, max_epochs=epochs)
            est = ManifoldLabeler(**kw)
            t0 = time.perf_counter()
            est.fit(X)
            sec = time.perf_counter() - t0
            rows.append(
                (name, dim, X.shape[0], sec, adjusted_rand_score(y, est.labels_))
            )
    return rows


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m nbkit.bench",
        description="Images per second of MIM training of the paper's CNN.",
    )
    ap.add_argument("--width", type=float, default=1.0, help="channel scale")
    ap.add_argument("--mbs", type=int, nargs="+", default=[100, 250])
    ap.add_argument("--size", type=int, default=32, help="image side (pixels)")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    ap.add_argument("--rounds", type=int, default=3, help="alternating repeats")
    ap.add_argument("--n-samples", type=int, default=10000, help="authors' set")
    ap.add_argument("--device", default=None, help="default: cuda if available")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    ap.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--tf32", default="auto", choices=["auto", "on", "off"])
    ap.add_argument("--compile", action="store_true", help="torch.compile")
    ap.add_argument("--no-authors", action="store_true", help="skip that loop")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads")
    ap.add_argument("--manifolds", action="store_true", help="ManifoldLabeler")
    ap.add_argument("--manifold-epochs", type=int, default=None)
    ap.add_argument("--no-cnn", action="store_true", help="only --manifolds")
    return ap


def main(argv=None) -> None:
    """Run the benchmark and print a table (images/s, TFLOP/s, ratio)."""
    parser = _parser()
    args = parser.parse_args(argv)
    # the CNN needs inputs of at least 22 pixels (four valid 3x3 convs, two pools)
    lows = {"steps": 1, "rounds": 1, "warmup": 0, "size": 22, "channels": 1}
    lows |= {"n_samples": 1, "manifold_epochs": 1}
    for name, low in lows.items():
        if getattr(args, name) is not None and getattr(args, name) < low:
            flag = name.replace("_", "-")
            parser.error(f"--{flag} must be >= {low}, got {getattr(args, name)}")
    if any(m < 2 for m in args.mbs):
        parser.error(f"--mbs must be >= 2 (E[L] needs two samples), got {args.mbs}")
    if not (args.width > 0 and math.isfinite(args.width)):
        parser.error(f"--width must be a finite number > 0, got {args.width}")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        parser.error(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.no_cnn and not args.manifolds:
        parser.error("--no-cnn leaves nothing to time; add --manifolds")
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = pick_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    switch = {"auto": "auto", "on": True, "off": False}
    speed = {
        "amp": args.amp,
        "channels_last": switch[args.channels_last],
        "tf32": switch[args.tf32],
        "compile": args.compile,
    }
    # what train_mim resolves: beta > 0, so "auto" keeps bf16 and TF32 off
    plan = resolve_speed(device, **speed, finite_difference=BETA > 0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device {device} ({name}), torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, {plan}"
    )
    if not args.no_cnn:
        _bench_cnn(args, device, speed)
    if args.manifolds:
        print("ManifoldLabeler.fit wall time")
        print(f"{'data':8} {'dim':>4} {'n':>6} {'seconds':>8} {'ARI':>6}")
        for row in _time_manifolds(device, args.manifold_epochs):
            data, dim, n_pts, sec, ari = row
            print(f"{data:8} {dim:4d} {n_pts:6d} {sec:8.2f} {ari:6.3f}")


def _bench_cnn(args, device, speed) -> None:
    """Time both loops at every --mbs and print the table and ratios."""
    torch.manual_seed(0)
    model = MIMEncoder(args.channels, args.width).to(device)
    F = conv_flops(model, args.channels, args.size)
    print(
        f"MIMEncoder width {args.width} channels {model.channels}, input "
        f"{args.channels}x{args.size}x{args.size}: {F / 1e9:.3f} GFLOP per "
        f"forward, {6 * F / 1e9:.3f} per image per step (6 F)"
    )
    n = max(args.n_samples, max(args.mbs) * max(args.steps, args.warmup, 1))
    g = torch.Generator().manual_seed(0)
    X_host = torch.randn(n, args.channels, args.size, args.size, generator=g)
    X = X_host.to(device)

    print(f"median seconds per step of {args.rounds} rounds of {args.steps} steps")
    head = f"{'loop':8} {'mbs':>5} {'img/s':>9} {'ms/step':>9} {'TFLOP/s':>8}"
    print(head + (f" {'% peak':>7}" if args.peak_tflops else ""))
    loops = {"nbkit": lambda mbs, steps: time_nbkit(model, X, **kw(mbs, steps))}
    if not args.no_authors:
        loops["authors"] = lambda mbs, steps: time_authors_loop(
            model, X_host, device, **kw(mbs, steps)
        )

    def kw(mbs, steps):
        return {"mbs": mbs, "steps": steps, "speed": speed}

    for mbs in args.mbs:
        for run in loops.values():  # warm-up: allocator, autotuning, compile
            if args.warmup > 0:
                run(mbs, args.warmup)
        # the loops take turns, so a change in machine load hits both
        rounds = {name: [] for name in loops}
        for _ in range(args.rounds):
            for name, run in loops.items():
                rounds[name].append(run(mbs, args.steps))
        times = {name: statistics.median(t) for name, t in rounds.items()}
        for loop, sec in times.items():
            tflops = 6 * F * mbs / sec / 1e12
            line = f"{loop:8} {mbs:5d} {mbs / sec:9.1f} {1e3 * sec:9.1f} {tflops:8.3f}"
            if args.peak_tflops:
                line += f" {100 * tflops / args.peak_tflops:7.1f}"
            print(line)
        if "authors" in times:
            ratio = times["authors"] / times["nbkit"]
            per_round = [
                a / b for a, b in zip(rounds["authors"], rounds["nbkit"], strict=True)
            ]
            print(
                f"mbs {mbs}: nbkit is {ratio:.2f}x the authors'-style loop "
                f"(median of {args.rounds} rounds; per round "
                f"{min(per_round):.2f}-{max(per_round):.2f}x)"
            )


if __name__ == "__main__":
    main()
