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
    rng = np.random.default_rng(0)                 # the same draws, in the same order
    for x, y, n in ((d.train_x, d.train_y, 20), (d.test_x, d.test_y, 10)):
        want_x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        want_y = rng.integers(0, 10, n, dtype=np.uint8)
        assert np.array_equal(x[:, 0].numpy(), want_x) and y.tolist() == want_y.tolist()
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64


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


def _images(root, classes, n, size=(12, 10)):
    from PIL import Image
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            # the red channel names the image: class index x 50 + i
            Image.new("RGB", size, (classes.index(c) * 50 + i, 7, 0)).save(root / c / f"{i}.png")


def test_imagefolder_holds_out_a_seeded_fifth(tmp_path):
    _images(tmp_path, ["cat", "dog"], 10)
    d = load_data(f"imagefolder:{tmp_path}")
    assert d.classes == ["cat", "dog"] and d.input_size == (3, 10, 12)
    assert (len(d.train_y), len(d.test_y)) == (16, 4)                 # 20%, held out
    names = lambda x: sorted(int(v) for v in x[:, 0, 0, 0])          # noqa: E731
    assert sorted(names(d.train_x) + names(d.test_x)) == list(range(10)) + list(range(50, 60))
    for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):       # labels follow images
        assert [int(v) // 50 for v in x[:, 0, 0, 0]] == y.tolist()
    again = load_data(f"imagefolder:{tmp_path}")                    # the same split each time
    assert torch.equal(again.test_x, d.test_x) and torch.equal(again.train_y, d.train_y)
    assert d.mean[1] == round(7 / 255, 4) and d.std[1] == 0.0


@pytest.mark.parametrize("held_out", ["val", "test"])
def test_imagefolder_train_and_val_folders(tmp_path, held_out):
    _images(tmp_path / "train", ["a", "b", "c"], 4)
    _images(tmp_path / held_out, ["a", "b", "c"], 2, size=(24, 20))   # resized to train's size
    d = load_data(f"imagefolder:{tmp_path}")
    assert d.classes == ["a", "b", "c"] and d.input_size == (3, 10, 12)
    assert d.train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert d.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert [int(v) for v in d.test_x[:, 0, 5, 6]] == [0, 1, 50, 51, 100, 101]


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
    """Each output image is its input shifted by dy, dx in [-4, 4] (zero padding where it moves
    in from outside) and, for some images, mirrored: checked against the shift and flip that
    reproduce it, found by trying all 81 x 2 of them on distinct pixel values."""
    n, h, w, pad = 16, 12, 10, 4
    x = (torch.arange(n * h * w) % 251 + 1).reshape(n, 1, h, w).to(torch.uint8)   # no zeros
    y = crop_flip(x, torch.Generator().manual_seed(0), pad)
    assert y.shape == x.shape and y.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    seen = set()
    for i in range(n):
        matches = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   for f in (False, True)
                   if torch.equal(y[i], (lambda c: c.flip(-1) if f else c)(
                       padded[i, :, dy:dy + h, dx:dx + w]))]
        assert matches, f"image {i} is no shift or flip of its input"
        seen.update((dy != pad or dx != pad, f) for dy, dx, f in matches[:1])
    assert (True, True) in seen and (True, False) in seen     # shifts, with and without a flip
    again = crop_flip(x, torch.Generator().manual_seed(0), pad)
    assert torch.equal(y, again)                              # the seed decides it all


def test_shift_translates_without_mirroring(digits):
    """--augment shift (for digits): every training image is its input moved by at most 2
    pixels each way, never mirrored, and some move; none leaves the images as they are."""
    x = digits.train_x[:64]
    y = torch.arange(64)
    moved = Batches(x, y, 64, (0.0,), (1 / 255,), augment="shift")
    kept = Batches(x, y, 64, (0.0,), (1 / 255,), augment="none")
    (xs, _), = list(moved)
    (xk, _), = list(kept)
    assert torch.equal(xk, x.float())
    h, w = x.shape[-2:]
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2)).float()
    offsets = []
    for i in range(64):
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(xs[i], padded[i, :, dy:dy + h, dx:dx + w])]
        assert found, f"image {i} is not a translation of its input"
        offsets.append(found)
    assert any((2, 2) not in f for f in offsets)              # some images moved


def test_training_takes_the_augmentation_it_is_given(digits):
    """TrainConfig.augment: auto keeps the data set's own; a choice overrides it; an unknown
    one is refused before training."""
    from deepcomp.errors import UsageError
    from deepcomp.models import create
    from deepcomp.train import TrainConfig, _Run
    model = create("lenet300", num_classes=10, in_chans=1, img_size=8)
    for asked, used in (("auto", "none"), ("shift", "shift")):
        cfg = TrainConfig(epochs=1, augment=asked, compile="off", progress=False).check()
        assert _Run(model, digits, cfg, None, None).batches.augment == used
    with pytest.raises(UsageError, match="train.augment must be one of"):
        TrainConfig(augment="rotate").check()


def test_batches_normalize_and_shard(digits):
    b = Batches(digits.train_x, digits.train_y, 100, digits.mean, digits.std)
    x = torch.cat([xb for xb, _ in b])
    assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05
    shards = [torch.cat([yb for _, yb in Batches(digits.train_x, torch.arange(len(digits.train_y)),
                                                 100, digits.mean, digits.std, shuffle=True,
                                                 rank=r, world_size=2)]) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) and not set(shards[0].tolist()) & set(shards[1].tolist())
