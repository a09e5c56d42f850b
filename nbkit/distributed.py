"""Data-parallel training across processes with E[L] over the global batch.

Run under torchrun, e.g. (``main`` below is that script's body)::

    torchrun --nproc_per_node=4 scripts/train_mim_ddp.py --dataset cifar10 --epochs 100

With N processes each holding m samples of a global mini-batch of N*m,
the MIM and DML objectives need E[L] over all N*m samples, not m. Inside
``global_batch()``, ``nbkit.bayes.expectation`` (and so ``prior``,
``uniform_prior``, ``mim_loss``, ``dml_loss``) sums the local batch and
its size, all-reduces both with a differentiable all-reduce, and divides;
``nbkit.regularizers.data_directions`` draws the (N*m, N*m) mixing
matrix from the shared seeded generator and mixes the all-gathered global
batch, keeping this rank's rows. Batch norm becomes synchronised batch
norm (``sync_batchnorm``), so normalisation statistics are global too.
Together with DistributedDataParallel's gradient average, N ranks with
m samples each give the loss and gradients of one process with N*m.

Why the all-reduce's backward is also a sum: every rank's loss contains
the same global term G(E[L]); the gradient of the mean of the N rank
losses with respect to rank r's samples is sum_r' dG/dE * dE/dS_r, and
DDP divides the summed gradients by N. An identity backward would be N
times too small.

Why the all-gather for Rc: the paper's directions d_i = X v_i / ||X v_i||
lie in the span of the batch X. Mixing only the local shard would give a
different (and N-dependent) regulariser. The gather moves N*m inputs per
step, about as much as the data the step reads anyway, and the (m, N*m)
mixing matmul is negligible next to the convolutions.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_reduce_sum",
    "global_batch",
    "current",
    "rank_world",
    "mean_over_ranks",
    "GlobalBatchNorm",
    "sync_batchnorm",
    "wrap_model",
    "main",
]

logger = logging.getLogger(__name__)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the incoming gradients over ranks."""

    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        out = t.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    """Differentiable sum of t over the ranks of group: same shape as t."""
    return _AllReduceSum.apply(t, group)


class _GlobalBatch:
    """The active reducer: batch means and the batch itself across ranks."""

    def __init__(self, group):
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)

    def mean(self, T: torch.Tensor) -> torch.Tensor:
        """Mean over dim 0 of the global batch: (B_local, ...) -> (...)."""
        # one all-reduce for the sum and the sample count together
        count = T.new_full((1,), T.shape[0])
        packed = torch.cat([T.sum(dim=0).reshape(-1), count])
        packed = all_reduce_sum(packed, self.group)
        return packed[:-1].reshape(T.shape[1:]) / packed[-1].detach()

    def gather(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(global batch (N*B, ...), this rank's first row); equal B assumed."""
        parts = [torch.empty_like(x) for _ in range(self.world)]
        dist.all_gather(parts, x.detach().contiguous(), group=self.group)
        return torch.cat(parts), self.rank * x.shape[0]


_ACTIVE: _GlobalBatch | None = None


def current() -> _GlobalBatch | None:
    """The reducer of the enclosing ``global_batch()`` block, or None."""
    return _ACTIVE


@contextlib.contextmanager
def global_batch(group=None, *, enabled: bool = True):
    """Inside the block, batch expectations and Rc span the global batch.

    Every rank must run the same sequence of nbkit losses inside the block
    (each E[L] is a collective call), with the same local batch size.
    Outside a process group (or with ``enabled=False``) it does nothing.
    """
    global _ACTIVE
    if not (enabled and dist.is_available() and dist.is_initialized()):
        yield None
        return
    saved, _ACTIVE = _ACTIVE, _GlobalBatch(group)
    try:
        yield _ACTIVE
    finally:
        _ACTIVE = saved


def rank_world(group=None) -> tuple[int, int]:
    """(rank, world size) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def mean_over_ranks(t: torch.Tensor, group=None) -> torch.Tensor:
    """Mean of t over ranks (no gradient); t itself without a process group."""
    rank, world = rank_world(group)
    if world == 1:
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out / world


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm with statistics over all ranks, for any backend (gloo too).

    ``nn.SyncBatchNorm`` only runs on accelerators; this module computes
    the same thing with two differentiable all-reduces (sum, then squared
    deviations), so it also serves CPU runs and tests. Inputs (B, C, ...).
    """

    def _check_input_dim(self, x):
        if x.ndim < 2:
            raise ValueError(f"expected (B, C, ...) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, ...) -> normalised (B, C, ...)."""
        self._check_input_dim(x)
        on = dist.is_available() and dist.is_initialized()
        reducer = _GlobalBatch(None) if on else None
        use_batch = self.training or self.running_mean is None
        if reducer is None or reducer.world == 1 or not use_batch:
            return super().forward(x)
        update = self.training and self.track_running_stats
        factor = 0.0 if self.momentum is None else self.momentum
        if update and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        C = x.shape[1]
        xt = x.transpose(0, 1).reshape(C, -1).T  # (B * spatial, C)
        mean = reducer.mean(xt)  # (C,)
        var = reducer.mean((xt - mean).pow(2))  # biased, as in batch norm
        if update:
            n = xt.shape[0] * reducer.world
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * n / max(n - 1, 1), factor)
        shape = (1, C) + (1,) * (x.ndim - 2)
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def _convert_bn(module: nn.Module) -> nn.Module:
    """Replace every _BatchNorm below module by a GlobalBatchNorm (shared params)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(new, name, getattr(module, name))
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, _convert_bn(child))
    return module


def sync_batchnorm(model: nn.Module, device) -> nn.Module:
    """Batch norm layers of model made global: SyncBatchNorm on CUDA, else ours."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert_bn(model)


def wrap_model(model: nn.Module, device) -> nn.Module:
    """model with global batch norm, wrapped in DistributedDataParallel.

    Batch-norm layers of ``model`` are replaced in place (parameters and
    buffers are kept, so state dicts do not change). Returns the DDP module
    to call in the step; keep ``model`` for state dicts and checkpoints.
    """
    device = torch.device(device)
    model = sync_batchnorm(model, device)
    ids = None
    if device.type == "cuda":  # "cuda" alone: the current device (set_device)
        ids = [torch.cuda.current_device() if device.index is None else device.index]
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node=N scripts/train_mim_ddp.py",
        description="MIM training of the paper's CNN on N processes (DDP).",
    )
    ap.add_argument("--dataset", default="cifar10", help="cifar10/cifar100/stl10")
    ap.add_argument("--data-dir", default="data")
    ap.add_argument("--download", action="store_true")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--mbs", type=int, default=500, help="global mini-batch")
    ap.add_argument("--bs", type=int, default=4000, help="global batch per update")
    ap.add_argument("--alpha", type=float, default=2.0)
    ap.add_argument("--beta", type=float, default=4.0)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--output", default="mim_encoder.pt", help="weights file")
    ap.add_argument("--checkpoint-dir", default=None)
    ap.add_argument("--resume", action="store_true")
    return ap


def main(argv=None) -> None:
    """torchrun entry point: train a MIMEncoder on N ranks, rank 0 saves it."""
    from .data.images import load_images, standardize
    from .models import MIMEncoder
    from .train import train_mim

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    rank, world = rank_world()
    try:
        if rank == 0:  # one rank downloads, the others wait and read
            X, _ = load_images(args.dataset, args.data_dir, download=args.download)
        dist.barrier()
        if rank != 0:
            X, _ = load_images(args.dataset, args.data_dir, download=False)
        X = standardize(X)
        torch.manual_seed(args.seed)  # DDP copies rank 0's weights anyway
        model = MIMEncoder(X.shape[1], args.width)
        train_mim(
            model,
            X,
            epochs=args.epochs,
            mbs=args.mbs,
            bs=args.bs,
            alpha=args.alpha,
            beta=args.beta,
            lr=args.lr,
            seed=args.seed,
            device=device,
            amp=args.amp,
            compile=args.compile,
            checkpoint_dir=args.checkpoint_dir,
            resume=args.resume,
            progress=rank == 0,
        )
        if rank == 0:
            torch.save(model.state_dict(), args.output)
            logger.info("saved %s (%d ranks)", args.output, world)
    finally:
        dist.destroy_process_group()
