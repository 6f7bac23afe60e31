import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from deepcomp.data import Batches, crop_flip, load_data
from deepcomp.errors import DataError, UsageError


def test_digits_is_the_embedded_default(digits):
    assert digits.input_size == (1, 8, 8)
    assert len(digits.train_y) + len(digits.test_y) == 1797
    assert digits.train_x.dtype == torch.uint8 and digits.num_classes == 10


def _write_idx(path, arr, magic, gz):
    raw = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    # closed explicitly: since Python 3.12 a GzipFile buffers its writes, and one left to the
    # garbage collector can lose them (the test failed so on the GPU machine's Python)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(raw)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reader(tmp_path, gz):
    rng = np.random.default_rng(0)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{sfx}",
                   rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), 2051, gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{sfx}",
                   rng.integers(0, 10, n, dtype=np.uint8), 2049, gz)
    d = load_data(f"mnist:{tmp_path}")
    assert d.train_x.shape == (20, 1, 28, 28) and d.test_y.shape == (10,)


def test_cifar_reader(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, 4)]}
        pickle.dump(batch, open(tmp_path / name, "wb"))
    d = load_data(f"cifar10:{tmp_path}")
    assert d.train_x.shape == (20, 3, 32, 32) and d.augment == "crop_flip"
    # red plane first, row-major, as in the official layout
    raw = pickle.load(open(tmp_path / "test_batch", "rb"))[b"data"][0]
    assert torch.equal(d.test_x[0, 0].reshape(-1), torch.from_numpy(raw[:1024]))


def test_cifar_reader_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pickle.dump({b"data": Evil()}, open(tmp_path / name, "wb"))
    with pytest.raises(DataError, match="not a CIFAR-10 python batch"):
        load_data(f"cifar10:{tmp_path}")


def test_imagefolder(tmp_path):
    from PIL import Image
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.new("RGB", (12, 10), (i * 40, 0, 0)).save(tmp_path / c / f"{i}.png")
    d = load_data(f"imagefolder:{tmp_path}")
    assert d.classes == ["cat", "dog"] and d.input_size == (3, 10, 12)
    assert len(d.train_y) + len(d.test_y) == 10


@pytest.mark.parametrize("spec,err,msg", [
    ("mnist:/no/such/dir", DataError, "directory not found"),
    ("cifar10", UsageError, "needs a directory"),
    ("svhn:x", UsageError, "unknown data spec"),
    ("synthetic:3x32", UsageError, "CxHxW"),
])
def test_bad_specs(spec, err, msg):
    with pytest.raises(err, match=msg):
        load_data(spec)


def test_missing_files_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="expected the four official idx files"):
        load_data(f"mnist:{tmp_path}")
    with pytest.raises(DataError, match="data_batch_1..5, test_batch"):
        load_data(f"cifar10:{tmp_path}")


def test_crop_flip_moves_pixels_within_padding():
    x = torch.arange(2 * 1 * 32 * 32, dtype=torch.int64).reshape(2, 1, 32, 32).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    y = crop_flip(x, g)
    assert y.shape == x.shape and y.dtype == torch.uint8
    # every output row is a (possibly flipped, shifted) run of an input row or zero padding
    nonzero = y[y != 0]
    assert set(nonzero.tolist()) <= set(x.reshape(-1).tolist())


def test_batches_normalize_and_shard(digits):
    b = Batches(digits.train_x, digits.train_y, 100, digits.mean, digits.std)
    x = torch.cat([xb for xb, _ in b])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    shards = [torch.cat([yb for _, yb in Batches(digits.train_x, torch.arange(len(digits.train_y)),
                                                 100, digits.mean, digits.std, shuffle=True,
                                                 rank=r, world_size=2)]) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) and not set(shards[0].tolist()) & set(shards[1].tolist())
