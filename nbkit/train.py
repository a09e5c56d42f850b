"""Training loops: MIM encoders, K-way DML nets, and probes on cached features.

* ``mim_step`` / ``dml_step``: the objective of one mini-batch, as tensors.
* ``train_mim`` / ``train_dml``: epochs over a tensor data set, with gradient
  accumulation, progress bars, callbacks, checkpoints and exact resume.
* ``extract_features``, ``train_probe``, ``evaluate``,
  ``score_paper_protocol``: the frozen-feature evaluation of Table 2.

Words used below: a *step* is one mini-batch (one forward on the clean
batch, one on the perturbed batch, one backward); an *update* is one Adam
step, taken every ``bs / mbs`` steps. The loops never print: they log with
``logging``, draw a ``tqdm.auto`` bar when ``progress`` is true, and call
``callback(record)`` after every epoch.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import nn
from tqdm.auto import tqdm

from ._checks import check_choice, check_int, check_number, check_writable_dir
from .checkpoint import CheckpointError, config_differences, load_checkpoint
from .checkpoint import save_checkpoint as _save
from .distributed import global_batch, mean_over_ranks, rank_world, wrap_model
from .losses import EPS, dml_loss, js_divergence, mim_loss, multiscale_states
from .metrics import binomial_interval
from .models import make_probe
from .regularizers import PRIORS, smoothness, uniform_prior
from .speed import backend_flags, fast_forward, resolve_speed

__all__ = [
    "SMOOTH_TARGETS",
    "NOISY_BN_MODES",
    "TIMING_KEYS",
    "NonFiniteError",
    "pick_device",
    "mim_step",
    "dml_step",
    "train_mim",
    "train_dml",
    "extract_features",
    "train_probe",
    "evaluate",
    "score_paper_protocol",
]

logger = logging.getLogger(__name__)

# what the smoothness penalty Rc is applied to (MIM):
#   "pooled"  global spatial mean of the last hidden state (B, C); authors'
#             code and DESIGN.md; the paper's P(h3) when h3 is 2x2
#   "pool2x2" the paper's literal P(h3): 2x2 stride-2 average pool (for a
#             3x3 map, from 32x32 inputs, this sees only the top-left 2x2)
#   "last"    the last hidden state, flattened, no pooling
#   "output"  the model's output, flattened
SMOOTH_TARGETS = ("pooled", "pool2x2", "last", "output")
# batch norm during the perturbed forward pass (both use batch statistics):
#   "train"     running statistics are updated by the noisy batch too
#               (authors' code: the second forward is a plain train-mode call)
#   "no_update" running statistics see only clean batches
NOISY_BN_MODES = ("train", "no_update")
ON_NONFINITE = ("raise", "skip")
# how mini-batches are drawn:
#   "epoch" each epoch visits a fresh permutation in order (the default)
#   "fresh" every step takes the head of a new permutation, so batches are
#           drawn with replacement across steps (the authors' loader use)
SAMPLING = ("epoch", "fresh")
# history keys that measure time, and so differ between identical runs
TIMING_KEYS = ("seconds", "images_per_second")
CHECKPOINT_NAME = "last.pt"


class NonFiniteError(FloatingPointError):
    """A loss term or gradient became NaN or infinite during training."""


def pick_device(device=None) -> torch.device:
    """``device`` as a torch.device; None picks CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"device={device!r} is not a device; use 'cpu', 'cuda' or None"
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} but CUDA is not available on this machine; use "
            "'cpu', or None to take CUDA only where there is one"
        )
    return dev


@contextlib.contextmanager
def _frozen_bn_stats(model: nn.Module, active: bool):
    """Keep batch statistics but stop running-stat updates inside the block."""
    if not active:
        yield
        return
    bns = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    for m in bns:
        m.track_running_stats = False  # train mode: batch stats, no update
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


def _smooth_features(out, hidden, target: str) -> torch.Tensor:
    """The tensor Rc compares: (B, D) from the output or last hidden state."""
    if target == "output":
        return out.reshape(out.shape[0], -1)
    h = hidden[-1]
    if h.ndim == 4 and target == "pooled":
        return h.mean(dim=(2, 3))  # (B, C)
    if h.ndim == 4 and target == "pool2x2":
        k = (min(2, h.shape[2]), min(2, h.shape[3]))
        h = nnf.avg_pool2d(h, kernel_size=k, stride=k)
    return h.reshape(h.shape[0], -1)


def _forward_hidden(model, x):
    """model(x, return_hidden=True) with a clear error for other models."""
    res = model(x, return_hidden=True)
    if not (isinstance(res, tuple) and len(res) == 2):
        raise TypeError(
            "model(x, return_hidden=True) must return (out, hidden_list), got "
            f"{type(res).__name__}; use nbkit.models.MLP or MIMEncoder"
        )
    return res


def mim_step(
    model: nn.Module,
    xb: torch.Tensor,
    *,
    alpha: float = 2.0,
    beta: float = 4.0,
    prior: str = "v2",
    pool: bool = True,
    smooth_on: str = "pooled",
    noisy_bn: str = "train",
    generator: torch.Generator | None = None,
    eps: float = EPS,
) -> dict[str, torch.Tensor]:
    """MIM objective (Eq. 14-16) of a mini-batch xb (B, ...): 0-d tensors.

    Returns ``loss`` (with grad), and detached ``entropy``, ``prior`` (Rp
    averaged over the multi-scale states) and ``smoothness`` (Rc). One
    forward pass on xb gives every state and Rc's clean features; one more
    on the perturbed batch gives the rest. E[L] and Rp are per mini-batch.
    """
    out, hidden = _forward_hidden(model, xb)
    states = multiscale_states(hidden, pool=pool)
    loss = torch.stack(
        [mim_loss(L, alpha, prior, eps, validate=False) for L in states]
    ).mean()
    with torch.no_grad():  # split the MIM value into its two terms for logs
        Rp = torch.stack(
            [uniform_prior(L, prior, validate=False) for L in states]
        ).mean()
        entropy = loss.detach() - (1 + alpha) * Rp
    if beta > 0:
        fx = _smooth_features(out, hidden, smooth_on)

        def f(z):
            with _frozen_bn_stats(model, noisy_bn == "no_update"):
                return _smooth_features(*_forward_hidden(model, z), smooth_on)

        Rc = smoothness(f, xb, generator=generator, fx=fx)
        loss = loss + beta * Rc
    else:  # no perturbed pass at all when Rc is off
        Rc = torch.zeros((), device=xb.device, dtype=loss.dtype)
    return {"loss": loss, "entropy": entropy, "prior": Rp, "smoothness": Rc.detach()}


def dml_step(
    model: nn.Module,
    xb: torch.Tensor,
    *,
    beta: float = 1.0,
    noisy_bn: str = "train",
    generator: torch.Generator | None = None,
    eps: float = EPS,
) -> dict[str, torch.Tensor]:
    """K-way DML (Eq. 69) + beta Rc on logits of a batch xb (B, ...): 0-d tensors.

    Returns ``loss`` (with grad), and detached ``dml`` (Eq. 69 alone),
    ``smoothness`` (Rc on the pre-softmax output) and ``js`` (nats).
    """
    logits = model(xb)
    if logits.ndim != 2 or logits.shape[1] < 2:
        # a softmax over one output is 1 everywhere: nothing would be learned
        raise ValueError(
            f"the model gives logits of shape {tuple(logits.shape)}; K-way DML "
            "needs (B, K) logits with K >= 2 (two partitions: 2 outputs)"
        )
    L = torch.softmax(logits, dim=1)
    dml = dml_loss(L, eps, validate=False)
    loss = dml
    if beta > 0:

        def f(z):
            with _frozen_bn_stats(model, noisy_bn == "no_update"):
                return model(z)

        Rc = smoothness(f, xb, generator=generator, fx=logits)
        loss = loss + beta * Rc
    else:
        Rc = torch.zeros((), device=xb.device, dtype=loss.dtype)
    js = js_divergence(L.detach(), validate=False)
    return {"loss": loss, "dml": dml.detach(), "smoothness": Rc.detach(), "js": js}


def _as_data(X, device, dtype) -> torch.Tensor:
    """X as a floating tensor on the training device (moved once)."""
    if isinstance(X, np.ndarray):
        X = torch.from_numpy(X)
    if not isinstance(X, torch.Tensor):
        raise TypeError(f"X must be a torch.Tensor or numpy array, got {type(X)}")
    if not X.is_floating_point():
        raise TypeError(f"X must hold floating point values, got {X.dtype}")
    if X.ndim < 2:
        raise ValueError(f"X must be (N, ...) with N samples, got {tuple(X.shape)}")
    X = X.to(device=device, dtype=dtype)
    # one pass (and one host sync) per call, so bad data fail before step 1
    bad = ~torch.isfinite(X.reshape(X.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"X contains NaN or inf in {len(rows)} sample(s) (first: row "
            f"{rows[0]}); remove or impute them before training"
        )
    return X


def _check_checkpoint_dir(checkpoint_dir) -> None:
    """Refuse a checkpoint_dir that cannot be made or written, before training."""
    check_writable_dir("checkpoint_dir", checkpoint_dir)


def _param_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _rng_state(shuffle_gen, noise_gen) -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {
        "shuffle": shuffle_gen.get_state(),
        "noise": noise_gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": cuda,
    }


def _set_rng_state(rng: dict, shuffle_gen, noise_gen) -> None:
    shuffle_gen.set_state(rng["shuffle"])
    noise_gen.set_state(rng["noise"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _fit(
    model,
    X,
    *,
    step_fn: Callable,
    terms: tuple[str, ...],
    config: dict,
    epochs: int,
    mbs: int,
    n_acc: int,
    lr: float,
    device,
    seed: int,
    progress: bool,
    callback,
    step_callback,
    checkpoint_dir,
    checkpoint_every,
    resume: bool,
    log_every: int,
    on_nonfinite: str,
    desc: str,
    speed: dict | None = None,
    sampling: str = "epoch",
) -> list[dict]:
    """The shared epoch loop of train_mim and train_dml (see train_mim)."""
    model.to(device)
    # speed options: autocast/channels-last wrapper, TF32 and cuDNN flags
    # (bf16 and TF32 rounding would swamp Rc's finite difference: "auto"
    # leaves them off when beta > 0; see nbkit.speed)
    plan = resolve_speed(
        device,
        **(speed or {}),
        param_dtype=_param_dtype(model),
        finite_difference=config.get("beta", 0) > 0,
    )
    # under torchrun: DDP with global batch norm; each rank takes its shard
    # of every global mini-batch and losses use the global E[L] (nbkit.distributed)
    rank, world = rank_world()
    if mbs % world:
        raise ValueError(
            f"the mini-batch of {mbs} does not split over {world} processes; "
            "use a multiple of the number of processes"
        )
    shard = slice(rank * mbs // world, (rank + 1) * mbs // world)
    wrap = (lambda m: wrap_model(m, device)) if world > 1 else None
    fwd = fast_forward(model, plan, _param_dtype(model), wrap=wrap)
    flags = contextlib.ExitStack()
    model.train()
    X = _as_data(X, device, _param_dtype(model))
    N = X.shape[0]
    n_mb = N // mbs  # mini-batches per epoch; the remainder is left out
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    shuffle_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
    config = {
        **config,
        "n_samples": N,
        "sample_shape": list(X.shape[1:]),
        "device_type": device.type,
        "model": type(model).__name__,
        "n_parameters": sum(p.numel() for p in params),
    }

    T = len(terms)
    zeros = torch.zeros(T, device=device, dtype=torch.float64)
    epoch, i0, step, updates, acc, skipped = 0, 0, 0, 0, 0, 0
    count, win_count = 0, 0
    sums, win_sums = zeros.clone(), zeros.clone()
    perm, history, seconds_before = None, [], 0.0

    if checkpoint_dir:
        _check_checkpoint_dir(checkpoint_dir)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir else None
    if resume and ckpt_path is None:
        raise ValueError("resume=True needs checkpoint_dir (where to resume from)")
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        diff = config_differences(state["config"], config)
        if diff:
            raise CheckpointError(
                f"cannot resume from {ckpt_path}: settings differ from the "
                "checkpoint (saved -> now): " + "; ".join(diff)
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for p, g in zip(params, state["grads"] or [None] * len(params), strict=True):
            p.grad = None if g is None else g.to(device=device, dtype=p.dtype)
        pr = state["progress"]
        epoch, i0, step, updates = pr["epoch"], pr["i"], pr["step"], pr["updates"]
        acc, skipped, count = pr["acc"], pr["skipped"], pr["count"]
        win_count, seconds_before = pr["win_count"], pr["seconds"]
        sums = state["sums"].to(device)
        win_sums = state["win_sums"].to(device)
        perm = None if state["perm"] is None else state["perm"].to(device)
        history = list(state["history"])
        _set_rng_state(state["rng"], shuffle_gen, noise_gen)
        if pr.get("threads", torch.get_num_threads()) != torch.get_num_threads():
            # CPU reductions split work by thread: sums may differ in the
            # last bits, so the run continues correctly but not bit-exactly
            logger.warning(
                "resuming with %d CPU threads, the checkpoint used %d: the "
                "result will not be bit-identical to an uninterrupted run",
                torch.get_num_threads(),
                pr["threads"],
            )
        logger.info("resumed from %s at epoch %d, step %d", ckpt_path, epoch, step)
    elif resume:
        logger.info("no checkpoint at %s; starting from scratch", ckpt_path)

    # first non-finite step and its terms, kept on the device (no sync)
    bad_step = torch.full((), -1, device=device, dtype=torch.long)
    bad_terms = torch.zeros(T, device=device, dtype=torch.float64)

    def raise_if_bad():
        """Sync once; raise NonFiniteError naming the first bad step."""
        first = int(bad_step)
        if first < 0:
            return
        values = dict(zip(terms, bad_terms.tolist(), strict=True))
        shown = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        where = f"; last good checkpoint: {ckpt_path}" if ckpt_path else ""
        raise NonFiniteError(
            f"non-finite loss or gradient at step {first} ({shown}){where}. "
            "Lower lr, check the inputs, or pass on_nonfinite='skip'"
        )

    def update(scale: float = 1.0):
        """One Adam step on the accumulated gradients (None grads ignored)."""
        nonlocal updates, skipped
        grads = [p.grad for p in params if p.grad is not None]
        if scale != 1.0:
            for g in grads:
                g.mul_(scale)
        gnorm = nn.utils.get_total_norm(grads)
        if on_nonfinite == "skip":
            if not bool(torch.isfinite(gnorm)):  # one sync per update
                opt.zero_grad(set_to_none=True)
                skipped += 1
                logger.warning(
                    "skipped update after step %d: gradient not finite", step
                )
                return
        else:
            new = (~torch.isfinite(gnorm)) & (bad_step < 0)
            bad_step.copy_(torch.where(new, step, bad_step))
            bad_terms.copy_(torch.where(new, last_vals, bad_terms))
        opt.step()
        opt.zero_grad(set_to_none=True)
        updates += 1

    def save(path):
        raise_if_bad()  # never overwrite the last good checkpoint
        if rank > 0:  # one writer under torchrun; all ranks hold the same state
            return
        _save(
            path,
            {
                "config": config,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "grads": [p.grad for p in params] if acc else None,
                "progress": {
                    "epoch": epoch,
                    "i": i,
                    "step": step,
                    "updates": updates,
                    "acc": acc,
                    "skipped": skipped,
                    "count": count,
                    "win_count": win_count,
                    "threads": torch.get_num_threads(),
                    "seconds": seconds_before + time.perf_counter() - t0,
                },
                "sums": sums,
                "win_sums": win_sums,
                "perm": None if perm is None else perm.cpu(),
                "rng": _rng_state(shuffle_gen, noise_gen),
                "history": history,
            },
        )

    bar = tqdm(
        total=epochs * n_mb,
        initial=min(step, epochs * n_mb),
        disable=not progress or rank > 0,
        desc=desc,
        unit="step",
    )
    last_vals = zeros
    flags.enter_context(backend_flags(plan))
    flags.enter_context(global_batch(enabled=world > 1))
    try:
        while epoch < epochs:
            t0 = time.perf_counter()
            if i0 == 0:  # a new epoch: draw its order, reset the sums
                if sampling == "epoch":
                    perm = torch.randperm(N, generator=shuffle_gen).to(device)
                sums.zero_()
                count, seconds_before = 0, 0.0
            for i in range(i0, n_mb):
                if sampling == "epoch":
                    idx = perm[i * mbs : (i + 1) * mbs]
                else:  # a fresh draw per step: batches overlap across steps
                    idx = torch.randperm(N, generator=shuffle_gen)[:mbs].to(device)
                xb = X[idx[shard]]  # all of idx without torchrun
                out = step_fn(fwd, xb, noise_gen)
                vals = torch.stack([out[k].detach() for k in terms]).double()
                finite = torch.isfinite(vals).all()
                step += 1
                if on_nonfinite == "skip" and not bool(finite):  # sync per step
                    skipped += 1
                    logger.warning(
                        "skipped step %d: non-finite loss %s",
                        step,
                        dict(zip(terms, vals.tolist(), strict=True)),
                    )
                else:
                    if on_nonfinite == "raise":
                        new = (~finite) & (bad_step < 0)
                        bad_step.copy_(torch.where(new, step, bad_step))
                        bad_terms.copy_(torch.where(new, vals, bad_terms))
                    last_vals = vals
                    (out["loss"] / n_acc).backward()
                    acc += 1
                    sums += vals
                    win_sums += vals
                    count += 1
                    win_count += 1
                    if acc == n_acc:
                        update()
                        acc = 0
                bar.update(1)
                # log before saving: a callback that stops the run then
                # resumes from the previous checkpoint and logs this step again
                if step % log_every == 0:
                    _log_point(
                        win_sums,
                        win_count,
                        terms,
                        step,
                        epoch,
                        bar,
                        step_callback,
                        raise_if_bad,
                    )
                    win_sums.zero_()
                    win_count = 0
                if ckpt_path and checkpoint_every and step % checkpoint_every == 0:
                    i += 1  # the checkpoint resumes after this step
                    save(ckpt_path)
                    i -= 1
            # end of epoch: finish a partial accumulation after the last one
            i, i0 = n_mb, 0
            epoch += 1
            if epoch == epochs and acc > 0:
                update(scale=n_acc / acc)
                acc = 0
            raise_if_bad()
            means = (mean_over_ranks(sums) / max(count, 1)).tolist()
            seconds = seconds_before + time.perf_counter() - t0
            record = {
                "epoch": epoch,
                **dict(zip(terms, means, strict=True)),
                "steps": step,
                "updates": updates,
                "skipped": skipped,
                "seconds": seconds,
                "images_per_second": count * mbs / max(seconds, 1e-12),
            }
            history.append(record)
            logger.info(
                "epoch %d: %s", epoch, ", ".join(f"{k}={record[k]:.4g}" for k in terms)
            )
            if ckpt_path:
                i = 0
                perm_saved, perm = perm, None
                save(ckpt_path)
                perm = perm_saved
            if callback is not None:
                callback(dict(record))
    finally:
        bar.close()
        flags.close()
    return history


def _log_point(
    win_sums, win_count, terms, step, epoch, bar, step_callback, raise_if_bad
):
    """Every log_every steps: one host sync, a log line, the bar, a callback."""
    raise_if_bad()
    means = (win_sums / max(win_count, 1)).tolist()
    record = {"step": step, "epoch": epoch + 1, **dict(zip(terms, means, strict=True))}
    logger.info("step %d: %s", step, ", ".join(f"{k}={record[k]:.4g}" for k in terms))
    bar.set_postfix({k: f"{record[k]:.3g}" for k in terms}, refresh=False)
    if step_callback is not None:
        step_callback(record)


def _check_common(
    sampling,
    epochs,
    lr,
    seed,
    log_every,
    checkpoint_every,
    callback,
    step_callback,
    noisy_bn,
    on_nonfinite,
    model,
):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model)}")
    check_int("epochs", epochs, low=1)
    check_number("lr", lr, low=0, low_open=True)
    check_int("seed", seed)
    check_int("log_every", log_every, low=1)
    if checkpoint_every is not None:
        check_int("checkpoint_every", checkpoint_every, low=1)
    for name, cb in (("callback", callback), ("step_callback", step_callback)):
        if cb is not None and not callable(cb):
            raise TypeError(f"{name} must be callable or None, got {cb!r}")
    check_choice("noisy_bn", noisy_bn, NOISY_BN_MODES)
    check_choice("on_nonfinite", on_nonfinite, ON_NONFINITE)
    check_choice("sampling", sampling, SAMPLING)


def _n_samples(X) -> int:
    if not isinstance(X, torch.Tensor | np.ndarray):
        raise TypeError(f"X must be a torch.Tensor or numpy array, got {type(X)}")
    return int(X.shape[0])


def train_mim(
    model: nn.Module,
    X,
    *,
    epochs: int,
    mbs: int = 500,
    bs: int | None = None,
    alpha: float = 2.0,
    beta: float = 4.0,
    prior: str = "v2",
    pool: bool = True,
    lr: float = 1e-3,
    device=None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[dict], object] | None = None,
    checkpoint_dir=None,
    resume: bool = False,
    log_every: int = 50,
    smooth_on: str = "pooled",
    noisy_bn: str = "train",
    on_nonfinite: str = "raise",
    sampling: str = "epoch",
    checkpoint_every: int | None = 200,
    step_callback: Callable[[dict], object] | None = None,
    eps: float = EPS,
    amp: str = "auto",
    channels_last: bool | str = "auto",
    tf32: bool | str = "auto",
    cudnn_benchmark: bool | str = "auto",
    compile: bool | str = False,  # noqa: A002 - torch.compile's name
) -> list[dict]:
    """Train an encoder with Neural Bayes-MIM (Eq. 14-16) on X (N, ...).

    ``model(x, return_hidden=True)`` must give ``(out, hidden_list)``.
    Each step: ``mim_loss`` averaged over ``multiscale_states(hidden,
    pool)`` + ``beta`` * Rc (``smooth_on``, see SMOOTH_TARGETS). Gradients
    of ``mbs``-sample mini-batches are summed until ``bs`` samples are
    seen, divided by bs / mbs, then Adam steps (``bs=None``: bs = mbs).
    E[L], the prior and batch-norm statistics are per mini-batch even when
    accumulating (as in the paper's and the authors' implementations).
    Each epoch has ``N // mbs`` steps (counted from 1 over the whole run).
    With ``sampling="epoch"`` they visit a permutation drawn from a
    generator seeded with ``seed`` (the remaining N % mbs samples wait for
    a later epoch); ``"fresh"`` draws every mini-batch anew, as the
    authors' loop does (see SAMPLING). Accumulation runs across epoch ends;
    a partial one left at the very end is averaged over what it saw and
    applied.

    Returns the history: one dict per epoch with ``epoch``, mean ``loss``,
    ``entropy``, ``prior``, ``smoothness`` over its steps, ``steps`` and
    ``updates`` so far, ``skipped`` (steps or updates left out by
    ``on_nonfinite="skip"``), ``seconds`` and ``images_per_second``
    (training samples through forward and backward per wall second).
    The model is trained in place and left on ``device``.

    ``noisy_bn``: batch-norm mode of the perturbed pass (NOISY_BN_MODES;
    "train" as the authors). ``on_nonfinite="raise"`` keeps a device-side
    record of the first non-finite step (loss terms, or the gradient norm
    at an update) and raises NonFiniteError at the next log point, epoch
    end or checkpoint, so the weights in memory may already be spoiled but
    no checkpoint is (``log_every=1`` stops at once); "skip" checks every
    step and update on the host (one sync each) and leaves bad ones out.
    The step holds no host sync otherwise: the sums stay on the device
    until a log point. Defaults follow the paper: ``smooth_on="pooled"``
    (its P(h3) on a 2x2 map), ``sampling="epoch"``. With
    ``checkpoint_dir``, ``last.pt`` is written every ``checkpoint_every``
    steps and after every epoch; ``resume=True`` continues from it
    (bit-exactly on the CPU with the same thread count) or starts afresh
    when there is none.
    ``callback(record)`` runs after each epoch, ``step_callback(record)``
    every ``log_every`` steps with means over that window.

    Speed options (see ``nbkit.speed``; each "auto" is on for CUDA and off
    on the CPU, where results are then unchanged): ``amp`` ("auto", "bf16",
    "off") runs the forward passes under bf16 autocast and casts the hidden
    states back to float32, so softmax, E[L] and the losses stay float32;
    ``channels_last`` (CNN layout), ``tf32`` (TF32 matmuls and convs),
    ``cudnn_benchmark`` (cuDNN autotuning); ``compile`` (False, True or a
    torch.compile backend name). TF32 and cuDNN flags are restored after.
    With ``beta > 0`` "auto" leaves bf16 and TF32 off: their rounding in
    the two forward passes swamps Rc's finite difference.
    """
    _check_common(
        sampling,
        epochs,
        lr,
        seed,
        log_every,
        checkpoint_every,
        callback,
        step_callback,
        noisy_bn,
        on_nonfinite,
        model,
    )
    check_int("mbs", mbs, low=2)
    if bs is None:
        bs = mbs
    check_int("bs", bs, low=2)
    if mbs > bs:
        raise ValueError(f"mbs={mbs} is larger than bs={bs}; need mbs <= bs")
    if bs % mbs != 0:
        raise ValueError(
            f"bs={bs} is not a multiple of mbs={mbs} (bs % mbs = {bs % mbs}); "
            "gradients are accumulated over whole mini-batches"
        )
    check_number("alpha", alpha, low=0)
    check_number("beta", beta, low=0)
    check_choice("prior", prior, PRIORS)
    check_choice("smooth_on", smooth_on, SMOOTH_TARGETS)
    check_number("eps", eps, low=0)
    N = _n_samples(X)
    if mbs > N:
        raise ValueError(f"X has {N} samples, fewer than mbs={mbs}; lower mbs")
    config = {
        "kind": "mim",
        "mbs": mbs,
        "bs": bs,
        "alpha": float(alpha),
        "beta": float(beta),
        "prior": prior,
        "pool": bool(pool),
        "lr": float(lr),
        "seed": seed,
        "smooth_on": smooth_on,
        "noisy_bn": noisy_bn,
        "on_nonfinite": on_nonfinite,
        "sampling": sampling,
        "eps": float(eps),
    }

    def step_fn(model, xb, gen):
        return mim_step(
            model,
            xb,
            alpha=alpha,
            beta=beta,
            prior=prior,
            pool=pool,
            smooth_on=smooth_on,
            noisy_bn=noisy_bn,
            generator=gen,
            eps=eps,
        )

    return _fit(
        model,
        X,
        step_fn=step_fn,
        terms=("loss", "entropy", "prior", "smoothness"),
        config=config,
        epochs=epochs,
        mbs=mbs,
        n_acc=bs // mbs,
        lr=lr,
        device=pick_device(device),
        seed=seed,
        progress=progress,
        callback=callback,
        step_callback=step_callback,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        log_every=log_every,
        on_nonfinite=on_nonfinite,
        desc="MIM",
        speed={
            "amp": amp,
            "channels_last": channels_last,
            "tf32": tf32,
            "cudnn_benchmark": cudnn_benchmark,
            "compile": compile,
        },
        sampling=sampling,
    )


def train_dml(
    model: nn.Module,
    X,
    *,
    epochs: int,
    batch_size: int = 5000,
    beta: float = 1.0,
    lr: float = 1e-3,
    device=None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[dict], object] | None = None,
    checkpoint_dir=None,
    resume: bool = False,
    log_every: int = 50,
    noisy_bn: str = "train",
    on_nonfinite: str = "raise",
    sampling: str = "epoch",
    checkpoint_every: int | None = 200,
    step_callback: Callable[[dict], object] | None = None,
    eps: float = EPS,
    amp: str = "auto",
    channels_last: bool | str = "auto",
    tf32: bool | str = "auto",
    cudnn_benchmark: bool | str = "auto",
    compile: bool | str = False,  # noqa: A002 - torch.compile's name
) -> list[dict]:
    """Train a K-way labeller with Neural Bayes-DML (Eq. 69) on X (N, ...).

    ``model(x)`` gives logits (B, K); the loss is ``dml_loss`` of their
    softmax + ``beta`` * Rc on the logits. A ``batch_size`` above N is
    lowered to N (with a warning). History per epoch: ``loss``, ``dml``,
    ``smoothness``, ``js`` (Jensen-Shannon divergence reached, nats) and
    the keys described in ``train_mim``, whose other options it shares.
    """
    _check_common(
        sampling,
        epochs,
        lr,
        seed,
        log_every,
        checkpoint_every,
        callback,
        step_callback,
        noisy_bn,
        on_nonfinite,
        model,
    )
    check_int("batch_size", batch_size, low=2)
    check_number("beta", beta, low=0)
    check_number("eps", eps, low=0)
    N = _n_samples(X)
    if N < 2:
        raise ValueError(f"X has {N} samples; DML needs at least 2")
    if batch_size > N:
        logger.warning(
            "batch_size=%d is above the %d samples; using %d", batch_size, N, N
        )
        batch_size = N
    config = {
        "kind": "dml",
        "batch_size": batch_size,
        "beta": float(beta),
        "lr": float(lr),
        "seed": seed,
        "noisy_bn": noisy_bn,
        "on_nonfinite": on_nonfinite,
        "sampling": sampling,
        "eps": float(eps),
    }

    def step_fn(model, xb, gen):
        return dml_step(model, xb, beta=beta, noisy_bn=noisy_bn, generator=gen, eps=eps)

    return _fit(
        model,
        X,
        step_fn=step_fn,
        terms=("loss", "dml", "smoothness", "js"),
        config=config,
        epochs=epochs,
        mbs=batch_size,
        n_acc=1,
        lr=lr,
        device=pick_device(device),
        seed=seed,
        progress=progress,
        callback=callback,
        step_callback=step_callback,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        resume=resume,
        log_every=log_every,
        on_nonfinite=on_nonfinite,
        desc="DML",
        speed={
            "amp": amp,
            "channels_last": channels_last,
            "tf32": tf32,
            "cudnn_benchmark": cudnn_benchmark,
            "compile": compile,
        },
        sampling=sampling,
    )


# ---------------------------------------------------------------- features


def extract_features(
    encoder: nn.Module,
    X,
    *,
    layer: int | str = -1,
    batch_size: int = 1000,
    device=None,
    pool: bool = False,
) -> torch.Tensor:
    """Frozen features of X (N, ...) -> (N, D) float tensor on the CPU.

    ``layer`` indexes the hidden states of ``encoder(x, return_hidden=True)``
    (-1: last, -2: second to last, as in Table 2) or is ``"output"``.
    ``pool=True`` averages 4-D states over space first (D = channels, what
    the authors' probe does); otherwise they are flattened (D = C*H*W).
    Runs in eval mode without gradients and restores the mode afterwards.
    """
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder)}")
    if not (
        layer == "output" or (isinstance(layer, int) and not isinstance(layer, bool))
    ):
        raise ValueError(f"layer={layer!r} must be an int index or 'output'")
    check_int("batch_size", batch_size, low=1)
    device = pick_device(device)
    was_training = encoder.training
    encoder.to(device).eval()
    X = X if isinstance(X, torch.Tensor) else torch.as_tensor(X)
    chunks = []
    try:
        with torch.no_grad():
            for start in range(0, X.shape[0], batch_size):
                xb = X[start : start + batch_size].to(device, _param_dtype(encoder))
                if layer == "output":
                    h = encoder(xb)
                else:
                    _, hidden = _forward_hidden(encoder, xb)
                    if not -len(hidden) <= layer < len(hidden):
                        raise ValueError(
                            f"layer={layer} is out of range for "
                            f"{len(hidden)} hidden states"
                        )
                    h = hidden[layer]
                if pool and h.ndim == 4:
                    h = h.mean(dim=(2, 3))
                chunks.append(h.reshape(h.shape[0], -1).cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(chunks)


def _labels(y, name) -> torch.Tensor:
    y = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if y.is_floating_point() or y.ndim != 1:
        raise ValueError(
            f"{name} must be (N,) integer labels, got {y.dtype} {tuple(y.shape)}"
        )
    if y.numel() and int(y.min()) < 0:
        raise ValueError(
            f"{name} holds negative labels (smallest {int(y.min())}); classes "
            "are 0, 1, ..., so leave out unlabeled rows (STL-10 marks them -1)"
        )
    return y.long()


def evaluate(probe: nn.Module, F, y, *, batch_size: int = 4096) -> float:
    """Accuracy of probe on features F (N, D) against labels y (N,)."""
    y = _labels(y, "y")
    F = torch.as_tensor(F)
    if F.shape[0] != y.shape[0]:
        raise ValueError(f"F has {F.shape[0]} rows but y has {y.shape[0]}")
    device = next(probe.parameters()).device
    was_training = probe.training
    probe.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    with torch.no_grad():
        for s in range(0, F.shape[0], batch_size):
            fb = F[s : s + batch_size].to(device, _param_dtype(probe))
            pred = probe(fb).argmax(dim=1)
            correct += (pred == y[s : s + batch_size].to(device)).sum()
    probe.train(was_training)
    return int(correct) / max(F.shape[0], 1)


def train_probe(
    F_train,
    y_train,
    F_val,
    y_val,
    *,
    hidden: int | None = 200,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 128,
    weight_decay: float = 0.0,
    patience: int | None = 10,
    device=None,
    seed: int = 0,
    progress: bool = True,
    paper_test=None,
    paper_n: int = 128,
    callback: Callable[[dict], object] | None = None,
) -> tuple[nn.Module, list[dict]]:
    """Fit a probe on cached features (N, D); early-stop on val accuracy.

    Trains ``make_probe(D, n_classes, hidden)`` with Adam and cross-entropy
    on the features only (no encoder involved), keeps the weights of the
    epoch with the best validation accuracy (the first, on ties) and stops
    after ``patience`` epochs without improvement (None: never).
    History per epoch: ``epoch``, ``train_loss``, ``val_accuracy``, and
    ``paper_accuracy`` when ``paper_test=(F_test, y_test)`` is given: the
    accuracy on its first ``paper_n`` items, the paper's protocol (see
    ``score_paper_protocol``). Returns (probe in eval mode, history).
    """
    y_train, y_val = _labels(y_train, "y_train"), _labels(y_val, "y_val")
    F_train, F_val = torch.as_tensor(F_train), torch.as_tensor(F_val)
    for name, Fm, yv in (("F_train", F_train, y_train), ("F_val", F_val, y_val)):
        if Fm.ndim != 2 or Fm.shape[0] != yv.shape[0]:
            raise ValueError(
                f"{name} must be (N, D) with one row per label, got "
                f"{tuple(Fm.shape)} for {yv.shape[0]} labels"
            )
        if Fm.shape[0] == 0 or not bool(torch.isfinite(Fm).all()):
            what = "has no rows" if Fm.shape[0] == 0 else "holds NaN or inf"
            raise ValueError(
                f"{name} {what}; the probe needs finite features to train on "
                "and to select its epoch with"
            )
    if F_val.shape[1] != F_train.shape[1]:
        raise ValueError(
            f"F_val has {F_val.shape[1]} features, F_train {F_train.shape[1]}"
        )
    check_int("epochs", epochs, low=1)
    check_int("batch_size", batch_size, low=2)
    check_number("lr", lr, low=0, low_open=True)
    check_number("weight_decay", weight_decay, low=0)
    if patience is not None:
        check_int("patience", patience, low=1)
    check_int("paper_n", paper_n, low=1)
    device = pick_device(device)
    n_classes = int(max(int(y_train.max()), int(y_val.max())) + 1)
    with torch.random.fork_rng(devices=[]):  # seed the init, leave the caller's
        torch.manual_seed(seed)
        probe = make_probe(F_train.shape[1], max(n_classes, 2), hidden)
    probe = probe.to(device)
    opt = torch.optim.Adam(probe.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    Ft = F_train.to(device, torch.float32)
    yt = y_train.to(device)
    if paper_test is not None:
        F_p, y_p = paper_test
        F_p, y_p = torch.as_tensor(F_p)[:paper_n], _labels(y_p, "y_test")[:paper_n]

    history, best, best_state, waited = [], -1.0, None, 0
    N = Ft.shape[0]
    for epoch in tqdm(range(1, epochs + 1), disable=not progress, desc="probe"):
        probe.train()
        perm = torch.randperm(N, generator=gen).to(device)
        total = torch.zeros((), device=device)
        for s in range(0, N, batch_size):
            idx = perm[s : s + batch_size]
            if idx.numel() < 2:  # batch norm needs two samples
                continue
            loss = nnf.cross_entropy(probe(Ft[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
        record = {
            "epoch": epoch,
            "train_loss": float(total) / N,
            "val_accuracy": evaluate(probe, F_val, y_val),
        }
        if paper_test is not None:
            record["paper_accuracy"] = evaluate(probe, F_p, y_p)
        history.append(record)
        if callback is not None:
            callback(dict(record))
        if record["val_accuracy"] > best:
            best, waited = record["val_accuracy"], 0
            best_state = copy.deepcopy(probe.state_dict())
        else:
            waited += 1
            if patience is not None and waited >= patience:
                logger.info("probe: early stop at epoch %d", epoch)
                break
    probe.load_state_dict(best_state)
    probe.eval()
    return probe, history


def score_paper_protocol(
    history: list[dict], n: int = 128, level: float = 0.95
) -> dict:
    """The paper's score: best per-epoch accuracy on the first n test items.

    Returns ``best_epoch``, ``accuracy``, ``correct``, ``n``, and the
    Clopper-Pearson ``interval`` at ``level`` (``binomial_interval``).
    Selecting the best epoch on the scored items biases it upwards.
    """
    accs = [r.get("paper_accuracy") for r in history]
    if not accs or any(a is None for a in accs):
        raise ValueError(
            "history has no 'paper_accuracy'; train the probe with "
            "paper_test=(F_test, y_test)"
        )
    k = int(np.argmax(accs))
    correct = round(accs[k] * n)
    return {
        "best_epoch": history[k]["epoch"],
        "accuracy": accs[k],
        "correct": correct,
        "n": n,
        "interval": binomial_interval(correct, n, level),
    }
