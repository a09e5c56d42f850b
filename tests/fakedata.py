"""Small fake image sets written in the real on-disk formats, for tests.

The files sit where torchvision's classes leave them under a data folder,
so the kit's loaders read them with ``download=False``. Labels are balanced
(row i has class i mod K) and each class gets its own mean brightness, so a
probe can learn something and stratified splits always work.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _images(n: int, n_classes: int, side: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (n, 3, side, side) images and their int labels (n,)."""
    labels = np.arange(n) % n_classes
    base = (40 + 170 * labels / max(n_classes - 1, 1)).astype(np.int64)
    noise = rng.integers(-40, 41, size=(n, 3, side, side))
    A = np.clip(base[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    return A, labels


def write_cifar(
    root: Path, name: str = "cifar10", n_train: int = 250, n_test: int = 100, seed=0
) -> Path:
    """CIFAR-10/100 python pickles (5 train batches + test) under root."""
    rng = np.random.default_rng(seed)
    folder = (
        Path(root)
        / {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    )
    folder.mkdir(parents=True, exist_ok=True)
    n_classes = 10 if name == "cifar10" else 100
    label_key = b"labels" if name == "cifar10" else b"fine_labels"

    def dump(file: str, n: int) -> None:
        A, labels = _images(n, n_classes, 32, rng)
        entry = {b"data": A.reshape(n, 3072), label_key: [int(v) for v in labels]}
        (folder / file).write_bytes(pickle.dumps(entry, protocol=2))

    if name == "cifar10":
        per_batch = -(-n_train // 5)
        for i in range(1, 6):
            dump(f"data_batch_{i}", per_batch)
        dump("test_batch", n_test)
        meta, key = "batches.meta", "label_names"
    else:
        dump("train", n_train)
        dump("test", n_test)
        meta, key = "meta", "fine_label_names"
    names = [f"class{i}" for i in range(n_classes)]
    (folder / meta).write_bytes(pickle.dumps({key: names}, protocol=2))
    return folder


def write_stl(
    root: Path, n_train: int = 200, n_test: int = 100, n_unlabeled: int = 100, seed=0
) -> Path:
    """STL-10 binaries (96 x 96, column-major, labels 1-10) under root."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        A, labels = _images(n, 10, 96, rng)
        (folder / f"{part}_X.bin").write_bytes(A.transpose(0, 1, 3, 2).tobytes())
        if part != "unlabeled":
            (folder / f"{part}_y.bin").write_bytes(
                (labels + 1).astype(np.uint8).tobytes()
            )
    folds = (" ".join(str((i + j) % n_train) for j in range(5)) for i in range(10))
    (folder / "fold_indices.txt").write_text("\n".join(folds) + "\n")
    return folder
