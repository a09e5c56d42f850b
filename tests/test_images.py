"""Image loaders on small files written in the real on-disk formats."""

from __future__ import annotations

import gzip
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from nbkit.data import images
from nbkit.data.images import (
    DATASETS,
    Standardizer,
    load_bundled_mnist,
    load_images,
    minibatches,
    split_bundled_mnist,
    standardize,
    stl10_fold,
    to_device,
    validation_split,
)

rng = np.random.default_rng(0)


def as_uint8(X: torch.Tensor) -> np.ndarray:
    """Undo the [0, 1] scaling exactly."""
    return (X * 255).round().to(torch.uint8).numpy()


# ------------------------------------------------------------- file writers


def write_cifar(root: Path, name: str, batches: dict, str_keys: bool) -> dict:
    """Write CIFAR python pickles; batches maps file name -> number of images."""
    folder = root / images._FOLDERS[name]
    folder.mkdir(parents=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    n_classes = images.NUM_CLASSES[name]
    written = {}
    for file, n in batches.items():
        A = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, n_classes, size=n)]
        # a row is 1024 red, 1024 green, 1024 blue values, each row-major
        entry = {"data": A.reshape(n, 3072), label_key: labels}
        if not str_keys:
            entry = {k.encode(): v for k, v in entry.items()}
        (folder / file).write_bytes(pickle.dumps(entry, protocol=2))
        written[file] = (A, labels)
    meta = "batches.meta" if name == "cifar10" else "meta"
    key = "label_names" if name == "cifar10" else "fine_label_names"
    names = [f"class{i}" for i in range(n_classes)]
    (folder / meta).write_bytes(pickle.dumps({key: names}, protocol=2))
    return written


def write_stl(root: Path, n_train=6, n_test=3, n_unlabeled=4) -> dict:
    """Write STL-10 binaries: per image 3 channels of 96 x 96, column-major."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for part, n in (("train", n_train), ("test", n_test), ("unlabeled", n_unlabeled)):
        A = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)  # [c, row, col]
        (folder / f"{part}_X.bin").write_bytes(A.transpose(0, 1, 3, 2).tobytes())
        labels = rng.integers(1, 11, size=n).astype(np.uint8)  # 1-based on disk
        if part != "unlabeled":
            (folder / f"{part}_y.bin").write_bytes(labels.tobytes())
        written[part] = (A, labels)
    folds = [[(i + 2 * j) % n_train for j in range(3)] for i in range(10)]
    lines = (" ".join(str(r) for r in fold) + " " for fold in folds)
    (folder / "fold_indices.txt").write_text("\n".join(lines) + "\n")
    written["folds"] = folds
    return written


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """Write a uint8 IDX file: big-endian int32 magic and sizes, then bytes."""
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


def write_mnist(root: Path, n_train=5, n_test=3, gz=False) -> dict:
    """Write MNIST IDX files where torchvision keeps them: root/MNIST/raw."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    suffix = ".gz" if gz else ""
    written = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        A = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)  # [row, col]
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", 2051, A)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", 2049, labels)
        written[prefix] = (A, labels)
    return written


# ------------------------------------------------------------------ CIFAR


def test_cifar10_pixels_labels_and_order(tmp_path):
    batches = {f"data_batch_{i}": i for i in range(1, 6)} | {"test_batch": 4}
    written = write_cifar(tmp_path, "cifar10", batches, str_keys=True)

    X, y = load_images("cifar10", tmp_path, "train", download=False)
    assert X.shape == (15, 3, 32, 32) and X.dtype == torch.float32
    assert y.dtype == torch.int64
    A = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    np.testing.assert_array_equal(as_uint8(X), A)
    assert y.tolist() == labels
    # a pixel written at channel 2, row 3, column 17 comes back there
    assert X[4, 2, 3, 17].item() == pytest.approx(A[4, 2, 3, 17] / 255, abs=1e-7)

    X_test, y_test = load_images("cifar10", tmp_path, "test", download=False)
    np.testing.assert_array_equal(as_uint8(X_test), written["test_batch"][0])
    assert y_test.tolist() == written["test_batch"][1]


def test_cifar10_matches_torchvision_orientation(tmp_path, monkeypatch):
    batches = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 2}
    write_cifar(tmp_path, "cifar10", batches, str_keys=True)
    # torchvision refuses files without the real md5s; skip only that check
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *a: True)
    reference = torchvision.datasets.CIFAR10(tmp_path, train=True, download=False)

    X, y = load_images("cifar10", tmp_path, download=False)
    np.testing.assert_array_equal(as_uint8(X), reference.data.transpose(0, 3, 1, 2))
    assert y.tolist() == reference.targets


def test_cifar100_fine_labels_with_bytes_keys(tmp_path):
    written = write_cifar(tmp_path, "cifar100", {"train": 7, "test": 3}, str_keys=False)
    for split in ("train", "test"):
        X, y = load_images("cifar100", tmp_path, split, download=False)
        np.testing.assert_array_equal(as_uint8(X), written[split][0])
        assert y.tolist() == written[split][1]


def test_cifar_resize_shrinks_by_block_mean(tmp_path):
    write_cifar(tmp_path, "cifar100", {"train": 2, "test": 1}, str_keys=True)
    X, _ = load_images("cifar100", tmp_path, download=False, resize=None)
    X16, _ = load_images("cifar100", tmp_path, download=False, resize=16)
    assert X16.shape == (2, 3, 16, 16)
    expected = X.reshape(2, 3, 16, 2, 16, 2).mean(dim=(3, 5))
    torch.testing.assert_close(X16, expected)
    # a size that does not divide 32 uses area interpolation as well
    X20, _ = load_images("cifar100", tmp_path, download=False, resize=20)
    area = torch.nn.functional.interpolate(X, size=(20, 20), mode="area")
    torch.testing.assert_close(X20, area)


def test_corrupt_cifar_pickle_names_the_file(tmp_path):
    batches = {f"data_batch_{i}": 1 for i in range(1, 6)} | {"test_batch": 1}
    write_cifar(tmp_path, "cifar10", batches, str_keys=True)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"\x80\x02garbage that is not a pickle")
    with pytest.raises(ValueError, match=re.escape(str(bad))) as info:
        load_images("cifar10", tmp_path, download=False)
    assert "corrupt" in str(info.value) and "download=True" in str(info.value)


def test_cifar_batch_with_wrong_shape_names_the_file(tmp_path):
    write_cifar(tmp_path, "cifar100", {"train": 2, "test": 1}, str_keys=True)
    bad = tmp_path / "cifar-100-python" / "test"
    entry = {"data": np.zeros((2, 1000), np.uint8), "fine_labels": [0, 1]}
    bad.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(ValueError, match=r"shape \(2, 1000\)") as info:
        load_images("cifar100", tmp_path, "test", download=False)
    assert str(bad) in str(info.value)


def test_missing_folder_with_download_off_names_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_images("cifar10", tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py" / "data_batch_1") in message
    assert "download=True" in message and "torchvision.datasets.CIFAR10" in message


# ------------------------------------------------------------- downloading


class FakeTorchvisionSet:
    """Stands in for a torchvision class: records calls, touches no network."""

    calls: list = []
    fail = False

    def __init__(self, root, train=True, download=False):
        type(self).calls.append((root, train, download))
        if type(self).fail:
            raise RuntimeError("Dataset not found or corrupted.")


def test_download_checks_once_with_torchvision_then_uses_marker(tmp_path, monkeypatch):
    write_cifar(tmp_path, "cifar10", {"data_batch_1": 1, "test_batch": 1}, True)
    for i in range(2, 6):
        src = tmp_path / "cifar-10-batches-py" / "data_batch_1"
        (tmp_path / "cifar-10-batches-py" / f"data_batch_{i}").write_bytes(
            src.read_bytes()
        )
    monkeypatch.setattr(FakeTorchvisionSet, "calls", [])
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeTorchvisionSet)

    X, _ = load_images("cifar10", tmp_path, download=True)
    assert X.shape == (5, 3, 32, 32)
    assert FakeTorchvisionSet.calls == [(str(tmp_path), True, True)]
    marker = tmp_path / "cifar-10-batches-py" / ".nbkit-verified"
    assert "torchvision.datasets.CIFAR10" in marker.read_text()

    load_images("cifar10", tmp_path, "test", download=True)
    assert len(FakeTorchvisionSet.calls) == 1  # the marker skips the md5 pass

    # a file gone since the check: torchvision is asked again
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        load_images("cifar10", tmp_path, download=True)
    assert len(FakeTorchvisionSet.calls) == 2


def test_failed_download_says_where_and_what(tmp_path, monkeypatch):
    monkeypatch.setattr(FakeTorchvisionSet, "calls", [])
    monkeypatch.setattr(FakeTorchvisionSet, "fail", True)
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeTorchvisionSet)
    with pytest.raises(RuntimeError, match="torchvision.datasets.CIFAR100") as info:
        load_images("cifar100", tmp_path, download=True)
    assert str(tmp_path) in str(info.value)
    assert not (tmp_path / "cifar-100-python" / ".nbkit-verified").exists()


def test_stl10_download_uses_torchvision_once_then_memory_maps(tmp_path, monkeypatch):
    written = write_stl(tmp_path)
    calls = []

    def fake_stl10(root, split="train", download=False):
        calls.append((root, split, download))

    monkeypatch.setattr(torchvision.datasets, "STL10", fake_stl10)
    for _ in range(2):
        X, _ = load_images("stl10", tmp_path, "test", resize=None)
        np.testing.assert_array_equal(as_uint8(X), written["test"][0])
    assert calls == [(str(tmp_path), "train", True)]
    assert (tmp_path / "stl10_binary" / ".nbkit-verified").is_file()


# ------------------------------------------------------------------ STL-10


def test_stl10_native_pixels_match_torchvision_reader(tmp_path):
    written = write_stl(tmp_path)
    X, y = load_images("stl10", tmp_path, "train", download=False, resize=None)
    A, labels = written["train"]
    assert X.shape == (6, 3, 96, 96)
    np.testing.assert_array_equal(as_uint8(X), A)
    assert y.tolist() == (labels.astype(int) - 1).tolist()
    assert X[2, 1, 10, 70].item() == pytest.approx(A[2, 1, 10, 70] / 255, abs=1e-7)

    # torchvision's own reader of these binaries (its md5 check is not involved)
    reference = torchvision.datasets.STL10.__new__(torchvision.datasets.STL10)
    reference.root = str(tmp_path)
    data, targets = reference._STL10__loadfile("train_X.bin", "train_y.bin")
    np.testing.assert_array_equal(as_uint8(X), data)
    assert y.tolist() == targets.tolist()


def test_stl10_resized_to_32_by_3x3_block_mean(tmp_path, monkeypatch):
    written = write_stl(tmp_path)
    monkeypatch.setattr(images, "_CHUNK", 2)  # several chunks, as for 100k rows
    X, y = load_images("stl10", tmp_path, "test", download=False)
    A, labels = written["test"]
    assert X.shape == (3, 3, 32, 32)
    expected = A.reshape(3, 3, 32, 3, 32, 3).mean(axis=(3, 5)) / 255
    np.testing.assert_allclose(X.numpy(), expected, atol=1e-6)
    assert y.tolist() == (labels.astype(int) - 1).tolist()


def test_stl10_folds_select_exact_rows(tmp_path, monkeypatch):
    written = write_stl(tmp_path)
    monkeypatch.setattr(images, "_CHUNK", 2)
    folds = written["folds"]
    assert stl10_fold(3, tmp_path).tolist() == folds[3]
    assert stl10_fold(3, tmp_path).dtype == torch.int64

    X, y = load_images("stl10", tmp_path, fold=3, download=False, resize=None)
    A, labels = written["train"]
    np.testing.assert_array_equal(as_uint8(X), A[folds[3]])
    assert y.tolist() == (labels[folds[3]].astype(int) - 1).tolist()


def test_stl10_train_plus_unlabeled(tmp_path):
    written = write_stl(tmp_path)
    X, y = load_images("stl10", tmp_path, "train+unlabeled", download=False)
    assert X.shape == (10, 3, 32, 32)
    assert y[6:].tolist() == [-1] * 4
    assert y[:6].tolist() == (written["train"][1].astype(int) - 1).tolist()
    expected = written["unlabeled"][0].reshape(4, 3, 32, 3, 32, 3).mean((3, 5))
    np.testing.assert_allclose(X[6:].numpy(), expected / 255, atol=1e-6)

    X_u, y_u = load_images("stl10", tmp_path, "unlabeled", download=False)
    torch.testing.assert_close(X_u, X[6:])
    assert y_u.dtype == torch.int64 and y_u.tolist() == [-1] * 4

    X_f, y_f = load_images("stl10", tmp_path, "train+unlabeled", fold=0, download=False)
    assert X_f.shape == (3 + 4, 3, 32, 32) and y_f[3:].tolist() == [-1] * 4


def test_stl10_fold_rows_outside_train_are_rejected(tmp_path):
    write_stl(tmp_path)
    path = tmp_path / "stl10_binary" / "fold_indices.txt"
    path.write_text("0 1\n" * 9 + "2 99\n")
    with pytest.raises(ValueError, match="lists row 99, outside the 6 train"):
        load_images("stl10", tmp_path, fold=9, download=False)
    path.write_text("0 1\n" * 3)
    with pytest.raises(ValueError, match="10 lines of indices, found 3"):
        stl10_fold(0, tmp_path)


def test_truncated_stl_binary_names_file_and_size(tmp_path):
    write_stl(tmp_path)
    path = tmp_path / "stl10_binary" / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated") as info:
        load_images("stl10", tmp_path, "test", download=False)
    assert str(path) in str(info.value)
    assert f"{3 * 27648 - 100} bytes" in str(info.value)


def test_stl_labels_count_must_match_images(tmp_path):
    write_stl(tmp_path)
    path = tmp_path / "stl10_binary" / "train_y.bin"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="2 labels for 6 images"):
        load_images("stl10", tmp_path, download=False)


def test_stl_missing_unlabeled_file_with_download_off(tmp_path):
    write_stl(tmp_path)
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_images("stl10", tmp_path, "unlabeled", download=False)
    assert str(tmp_path / "stl10_binary" / "unlabeled_X.bin") in str(info.value)
    assert "torchvision.datasets.STL10" in str(info.value)


# ------------------------------------------------------------------- MNIST


def test_mnist_idx_pixels_match_torchvision(tmp_path):
    written = write_mnist(tmp_path)
    X, y = load_images("mnist", tmp_path, download=False, source="torchvision")
    A, labels = written["train"]
    assert X.shape == (5, 1, 28, 28)  # native size is kept by default
    np.testing.assert_array_equal(as_uint8(X)[:, 0], A)
    assert y.tolist() == labels.tolist() and y.dtype == torch.int64
    # row 4, column 20 stays at [row, column]
    assert X[1, 0, 4, 20].item() == pytest.approx(A[1, 4, 20] / 255, abs=1e-7)

    reference = torchvision.datasets.MNIST(tmp_path, train=True, download=False)
    np.testing.assert_array_equal(as_uint8(X)[:, 0], reference.data.numpy())
    assert y.tolist() == reference.targets.tolist()


def test_mnist_gzipped_idx_and_resize(tmp_path):
    written = write_mnist(tmp_path, gz=True)
    X, y = load_images("mnist", tmp_path, "test", download=False)
    np.testing.assert_array_equal(as_uint8(X)[:, 0], written["t10k"][0])
    assert y.tolist() == written["t10k"][1].tolist()

    X32, _ = load_images("mnist", tmp_path, "test", download=False, resize=32)
    assert X32.shape == (3, 1, 32, 32)
    assert X32.min().item() >= 0.0 and X32.max().item() <= 1.0


def test_mnist_bad_magic_and_truncation(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    write_idx(path, 2051, np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="magic number 2051, expected 2049"):
        load_images("mnist", tmp_path, download=False)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated") as info:
        load_images("mnist", tmp_path, download=False)
    assert str(path) in str(info.value)


def test_mnist_torchvision_source_missing_names_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_images("mnist", tmp_path, download=False, source="torchvision")
    raw = tmp_path / "MNIST" / "raw"
    assert str(raw / "train-images-idx3-ubyte") in str(info.value)
    assert str(raw / "train-images-idx3-ubyte.gz") in str(info.value)
    assert "download=True" in str(info.value)
    assert "source='bundled'" in str(info.value)


def test_bundled_mnist_shape_range_and_balance():
    X, y = load_bundled_mnist()
    assert X.shape == (5000, 1, 28, 28) and X.dtype == torch.float32
    assert X.min().item() == 0.0 and X.max().item() == 1.0
    assert torch.bincount(y).tolist() == [500] * 10
    # upright digits: the mean "1" is a vertical stroke, not a horizontal one
    one = X[y == 1, 0].mean(0)
    assert one[:, 12:16].sum() > 2 * one[12:16, :].sum()

    X_train, X_test, y_train, y_test = split_bundled_mnist(X, y)
    assert X_train.shape == (4000, 1, 28, 28) and X_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(y_train).tolist() == [400] * 10
    assert torch.bincount(y_test).tolist() == [100] * 10
    # a fixed seed gives the same split every time
    torch.testing.assert_close(split_bundled_mnist(X, y)[1], X_test)
    # the file is sorted by digit, the split is not: the first 128 test
    # images (the paper's protocol) hold every digit, not only 0 and 1
    assert y.tolist() == sorted(y.tolist())
    assert len(y_test[:128].unique()) == 10 and len(y_train[:128].unique()) == 10
    # rows still pair with their labels: each "1" is a vertical stroke
    ones = X_test[y_test == 1, 0].mean(0)
    assert ones[:, 12:16].sum() > 2 * ones[12:16, :].sum()

    X_b, y_b = load_images("mnist", source="bundled", split="test")
    torch.testing.assert_close(X_b, X_test)
    assert y_b.tolist() == y_test.tolist()


def test_mnist_auto_falls_back_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="nbkit.data.images"):
        X, y = load_images("mnist", tmp_path, download=False)
    assert X.shape == (4000, 1, 28, 28)
    assert str(tmp_path / "MNIST" / "raw") in caplog.text
    assert "bundled" in caplog.text

    write_mnist(tmp_path)
    X, _ = load_images("mnist", tmp_path, download=False)
    assert X.shape == (5, 1, 28, 28)  # files on disk win over the bundled digits


# ------------------------------------------------------------------ errors


def test_unknown_name_lists_allowed():
    with pytest.raises(ValueError) as info:
        load_images("imagenet", download=False)
    assert "name='imagenet'" in str(info.value)
    assert all(repr(name) in str(info.value) for name in DATASETS)


def test_unknown_split_for_that_set():
    with pytest.raises(ValueError, match=r"split \(for 'cifar10'\)='unlabeled'") as e:
        load_images("cifar10", split="unlabeled", download=False)
    assert "'train', 'test'" in str(e.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "cifar10", "fold": 1}, "only defined for 'stl10'"),
        ({"name": "stl10", "fold": 10}, "fold must be <= 9"),
        ({"name": "stl10", "fold": 1, "split": "test"}, "split='test'"),
        ({"name": "cifar10", "resize": "big"}, "resize='big'"),
        ({"name": "cifar10", "resize": 0}, "resize must be >= 1"),
        ({"name": "cifar10", "source": "bundled"}, "only used for 'mnist'"),
        ({"name": "mnist", "source": "web"}, "source='web'"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_images(download=False, **kwargs)


# --------------------------------------------------- standardize and splits


def test_standardize_uses_train_statistics():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(200, 2, 3, 3, generator=g) * 4 + 1
    train[:, 0, 0, 0] = 0.25  # a constant pixel, like MNIST's borders
    test = torch.rand(50, 2, 3, 3, generator=g)

    Z_train, Z_test = standardize(train, test)
    torch.testing.assert_close(standardize(train), Z_train)
    mean, std = Z_train.mean(0), Z_train.std(0, correction=0)
    assert mean.abs().max().item() < 1e-5
    std_rest = std.flatten()[1:]
    torch.testing.assert_close(std_rest, torch.ones_like(std_rest))
    assert Z_train[:, 0, 0, 0].abs().max().item() == 0.0
    # constant dimensions are only centred, so test values there stay finite
    torch.testing.assert_close(Z_test[:, 0, 0, 0], test[:, 0, 0, 0] - 0.25)

    mu, sd = train.double().mean(0), train.double().std(0, correction=0)
    expected = ((test.double() - mu) / sd).float()
    torch.testing.assert_close(Z_test.flatten(1)[:, 1:], expected.flatten(1)[:, 1:])


def test_standardizer_roundtrip_and_shape_check():
    X = load_bundled_mnist()[0][:300]
    scaler = Standardizer().fit(X)
    assert scaler.mean.shape == (1, 28, 28) and scaler.std[0, 0, 0].item() == 1.0
    torch.testing.assert_close(scaler.inverse_transform(scaler.transform(X)), X)
    with pytest.raises(ValueError, match=r"\(1, 32, 32\)"):
        scaler.transform(torch.zeros(2, 1, 32, 32))
    with pytest.raises(RuntimeError, match="fit"):
        Standardizer().transform(X)


def test_validation_split_is_stratified_and_fixed():
    X = torch.arange(200.0).reshape(200, 1)
    y = torch.arange(200) % 10
    X_tr, X_val, y_tr, y_val = validation_split(X, y, fraction=0.1, seed=0)
    assert torch.bincount(y_val).tolist() == [2] * 10
    assert torch.bincount(y_tr).tolist() == [18] * 10
    rows = torch.cat([X_tr, X_val]).flatten().long().sort().values
    assert rows.tolist() == list(range(200))  # disjoint and complete
    assert (X_tr.flatten().long() % 10 == y_tr).all()  # rows stay aligned
    assert X_val.tolist() == validation_split(X, y, 0.1, seed=0)[1].tolist()
    assert X_val.tolist() != validation_split(X, y, 0.1, seed=1)[1].tolist()


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_validation_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        validation_split(
            torch.zeros(10, 1), torch.zeros(10, dtype=torch.long), fraction
        )


def test_to_device_and_minibatches():
    X, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    X_d, y_d, nothing = to_device(X, y, None, device="cpu")
    assert X_d.device.type == "cpu" and nothing is None
    assert torch.equal(to_device(y, device="cpu"), y)

    g = torch.Generator().manual_seed(0)
    seen = []
    for xb, yb in minibatches(X, y, batch_size=4, generator=g):
        assert torch.equal(xb.flatten().long(), yb)
        seen += yb.tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    sizes = [len(b[0]) for b in minibatches(X, batch_size=4, drop_last=True)]
    assert sizes == [4, 4]
