"""GPU speed options of the training loops: bf16, channels-last, TF32, compile.

``resolve_speed`` turns the user's choices (each ``"auto"`` by default) into
a ``SpeedPlan`` for one device; ``backend_flags`` applies the TF32 and
cuDNN settings for the duration of a run and restores them afterwards;
``fast_forward`` wraps a model so that its forward runs under autocast and
in channels-last while everything it returns is cast back to the
parameters' dtype. The losses (softmax, E[L], logs, means) therefore see
float32 tensors and are computed outside autocast.

On the CPU every ``"auto"`` resolves to off, so CPU results are unchanged
by these options; an explicit ``amp="bf16"`` or ``channels_last=True`` is
honoured on the CPU too (CPU autocast supports bf16).

Caveat, the smoothness term: Rc = ||f(x) - f(x + zeta d)||^2 / zeta^2 is a
finite difference, so independent rounding in the two forward passes is
divided by zeta^2 (zeta ~ N(0, 0.1^2)). Measured on the CPU with a
width-0.25 encoder (fp32 Rc about 0.031 at every zeta): bf16 autocast
gives 0.33 at zeta = 0.1 and 16 at zeta = 0.01; TF32 convolutions
(emulated) give 0.033 and 0.25. So "auto" turns bf16 and TF32 on only
when the objective has no finite-difference term (``beta=0``), and on
CUDA ``tf32=False`` forces full float32 convolutions and matmuls, which
PyTorch otherwise runs in TF32 for cuDNN convolutions by default.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ._checks import check_choice

__all__ = [
    "AMP_CHOICES",
    "SpeedPlan",
    "resolve_speed",
    "backend_flags",
    "fast_forward",
]

logger = logging.getLogger(__name__)
_WARNED: set[str] = set()  # precision warnings already given

AMP_CHOICES = ("auto", "bf16", "off")
_SWITCH = ("auto", True, False)


@dataclass(frozen=True)
class SpeedPlan:
    """Resolved speed settings for one device (no "auto" left)."""

    amp_dtype: torch.dtype | None = None  # autocast dtype, None: no autocast
    channels_last: bool = False
    tf32: bool = False
    cudnn_benchmark: bool = False
    compile_backend: str | None = None  # torch.compile backend, None: eager
    cuda: bool = False  # whether the TF32 flags apply (CUDA device)

    @property
    def wraps_forward(self) -> bool:
        """Whether the model's forward needs the autocast/layout wrapper."""
        return self.amp_dtype is not None or self.channels_last


def _switch(name, value, default: bool) -> bool:
    check_choice(name, value, _SWITCH)
    return default if value == "auto" and not isinstance(value, bool) else value


def resolve_speed(
    device,
    *,
    amp="auto",
    channels_last="auto",
    tf32="auto",
    cudnn_benchmark="auto",
    compile=False,  # noqa: A002 - the name users know from torch.compile
    param_dtype: torch.dtype = torch.float32,
    finite_difference: bool = False,
) -> SpeedPlan:
    """The SpeedPlan for ``device``: "auto" means on for CUDA, off elsewhere.

    ``amp``: "auto" (bf16 on a CUDA device that supports it, for float32
    models), "bf16" or "off". ``channels_last``, ``tf32``,
    ``cudnn_benchmark``: "auto", True or False. ``compile``: False, True
    (torch.compile with the default inductor backend) or a backend name.
    ``finite_difference``: the step computes Rc by finite differences
    (beta > 0); then "auto" leaves bf16 and TF32 off (see the caveat above).
    """
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    check_choice("amp", amp, AMP_CHOICES)
    if amp == "auto":
        bf16_ok = on_cuda and torch.cuda.is_available()
        bf16_ok = bf16_ok and torch.cuda.is_bf16_supported()
        # autocast leaves float64 alone, so auto only acts on float32 models
        use_amp = bf16_ok and param_dtype == torch.float32 and not finite_difference
    else:
        use_amp = amp == "bf16"
    use_tf32 = _switch("tf32", tf32, on_cuda and not finite_difference) and on_cuda
    if finite_difference and (use_amp or use_tf32):
        on = [n for n, used in (("bf16 autocast", use_amp), ("TF32", use_tf32)) if used]
        message = (
            f"{' and '.join(on)} with a finite-difference smoothness term "
            "(beta > 0): rounding in the two forward passes inflates Rc, by 10x "
            "or more when |zeta| < 0.1 in bf16; use amp='off', tf32=False for "
            "the paper's Rc"
        )
        if message not in _WARNED:  # once per process, not once per call
            _WARNED.add(message)
            logger.warning(message)
    if isinstance(compile, bool):
        backend = "inductor" if compile else None
    elif isinstance(compile, str) and compile:
        backend = compile
    else:
        raise ValueError(
            f"compile={compile!r} is not allowed; use False, True or a "
            "torch.compile backend name such as 'inductor'"
        )
    return SpeedPlan(
        amp_dtype=torch.bfloat16 if use_amp else None,
        channels_last=_switch("channels_last", channels_last, on_cuda),
        tf32=use_tf32,
        cudnn_benchmark=_switch("cudnn_benchmark", cudnn_benchmark, on_cuda)
        and on_cuda,
        compile_backend=backend,
        cuda=on_cuda,
    )


@contextlib.contextmanager
def backend_flags(plan: SpeedPlan):
    """Set TF32 (on or off) and cuDNN autotuning inside the block, then restore.

    On CUDA TF32 is set either way: PyTorch's own default runs float32
    cuDNN convolutions in TF32. Nothing is changed for a CPU plan.
    """
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul
    new_api = hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv")
    if new_api:  # torch >= 2.9
        saved = (matmul.fp32_precision, cudnn.conv.fp32_precision, cudnn.benchmark)
    else:
        saved = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    try:
        if plan.cuda and new_api:
            matmul.fp32_precision = "tf32" if plan.tf32 else "ieee"
            cudnn.conv.fp32_precision = "tf32" if plan.tf32 else "ieee"
        elif plan.cuda:
            matmul.allow_tf32 = cudnn.allow_tf32 = plan.tf32
        if plan.cudnn_benchmark:
            cudnn.benchmark = True
        yield plan
    finally:
        if new_api:
            matmul.fp32_precision, cudnn.conv.fp32_precision = saved[:2]
        else:
            matmul.allow_tf32, cudnn.allow_tf32 = saved[:2]
        cudnn.benchmark = saved[2]


def _cast_floats(obj, dtype):
    """Cast every floating tensor in obj (tensor, list or tuple) to dtype."""
    if isinstance(obj, torch.Tensor):
        return obj.to(dtype) if obj.is_floating_point() else obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cast_floats(o, dtype) for o in obj)
    return obj


class _FastForward(nn.Module):
    """A model's forward under autocast and channels-last, outputs cast back."""

    def __init__(self, model: nn.Module, plan: SpeedPlan, out_dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.plan = plan
        self.out_dtype = out_dtype

    def forward(self, x: torch.Tensor, *args, **kwargs):
        """Same signature and outputs as the wrapped model, in out_dtype."""
        if self.plan.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = self.plan.amp_dtype
        with torch.autocast(x.device.type, dtype=amp, enabled=amp is not None):
            res = self.model(x, *args, **kwargs)
        return _cast_floats(res, self.out_dtype)


def fast_forward(
    model: nn.Module, plan: SpeedPlan, out_dtype: torch.dtype, wrap=None
) -> nn.Module:
    """The module to call in the step: model (compiled/wrapped as planned).

    Channels-last is applied to the model's parameters in place; the
    returned module shares them. ``wrap`` (e.g. DistributedDataParallel)
    is applied after that and before torch.compile. Without any option
    and without ``wrap`` it is ``model`` itself.
    """
    if plan.channels_last:
        model.to(memory_format=torch.channels_last)
    fwd = model if wrap is None else wrap(model)
    if plan.compile_backend is not None:
        fwd = torch.compile(fwd, backend=plan.compile_backend)
    return _FastForward(fwd, plan, out_dtype) if plan.wraps_forward else fwd
