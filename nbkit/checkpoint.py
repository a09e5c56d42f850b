"""Training checkpoints: tensors and plain values only, written atomically.

A checkpoint is a dict saved with ``torch.save`` and read back with
``torch.load(..., weights_only=True)``, so loading never runs code from the
file. Writes go to a temporary file in the same folder, are flushed to disk
(fsync) and then renamed over the old file, so a crash mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import tempfile
from pathlib import Path

import torch

__all__ = [
    "FORMAT",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "config_differences",
]

FORMAT = "nbkit-checkpoint-v1"
_PLAIN = (bool, int, float, str, bytes, type(None), torch.dtype, torch.Size)


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, foreign or does not match."""


def _check_plain(value, where: str) -> None:
    """Raise TypeError unless value is tensors, plain values and containers."""
    if isinstance(value, (torch.Tensor, *_PLAIN)):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int):
                raise TypeError(f"checkpoint key {where}[{k!r}] must be str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__name__}; only tensors, "
        "numbers, strings, None and dicts/lists of them can be saved"
    )


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` (tensors and plain values) to ``path`` atomically."""
    if not isinstance(state, dict):
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    _check_plain(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # a process killed mid-write (SIGKILL, power loss) leaves its temporary
    # file behind; the next successful write of the same name removes it
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
    # make the rename itself durable where the platform allows it
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by ``save_checkpoint``; never runs its code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated zip, foreign pickle, bad globals
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is truncated, corrupt or "
            f"not an nbkit checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state)
        raise CheckpointError(
            f"{path} is not an nbkit checkpoint (format {found!r}, expected {FORMAT!r})"
        )
    del state["format"]
    return state


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float | int):
        return a == b or (math.isnan(a) and math.isnan(float(b)))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def config_differences(saved: dict, current: dict) -> list[str]:
    """Lines ``name: saved -> current`` for every setting that differs."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        missing = object()
        a, b = saved.get(key, missing), current.get(key, missing)
        if a is missing or b is missing or not _same(a, b):
            a = "(absent)" if a is missing else repr(a)
            b = "(absent)" if b is missing else repr(b)
            lines.append(f"{key}: {a} -> {b}")
    return lines
