"""Data sets held in memory as uint8 tensors, and a batch iterator that augments whole batches.

Spec strings name a data set and where it lives:

    digits              scikit-learn's bundled 8x8 digits (the embedded default, no download)
    mnist:DIR           the four official idx files (plain or .gz)
    cifar10:DIR         the official python layout (data_batch_1..5, test_batch)
    imagefolder:DIR     one folder of images per class (DIR/train and DIR/val|test if present)
    synthetic[:CxHxW]   small, seeded, learnable random data for tests (default 1x8x8)

On 2 CPU cores the input pipeline must not be the bottleneck, so nothing here touches PIL or
Python per image while training: a batch is gathered, cropped and flipped as one tensor.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import DataError, UsageError

__all__ = ["Dataset", "load_data", "Batches", "DATA_HELP"]

DATA_HELP = "digits | mnist:DIR | cifar10:DIR | imagefolder:DIR | synthetic[:CxHxW]"

# Training augmentations, applied to whole batches: crop_flip is the CIFAR ResNets' (He et al.
# 2016: 4-pixel zero padding, random 32x32 crop, horizontal flip); shift is a random translation
# by up to 2 pixels without flip, for digits (Simard et al. 2003 train MNIST on such shifts).
AUGMENTS = ("none", "shift", "crop_flip")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
# The pretrained ResNet-20 in ../shared/models was trained with these (ImageNet) statistics.
CIFAR10_MEAN, CIFAR10_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


@dataclass
class Dataset:
    """A train and a test split as uint8 images ``[N, C, H, W]`` and int64 labels."""
    spec: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple
    std: tuple
    classes: list = field(default_factory=list)
    augment: str = "none"          # one of AUGMENTS: the data set's own training augmentation

    @property
    def input_size(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def meta(self) -> dict:
        """What a stage file keeps about the data (no pixels)."""
        return {"spec": self.spec, "mean": list(self.mean), "std": list(self.std),
                "input_size": list(self.input_size), "classes": list(self.classes),
                "augment": self.augment}


def load_data(spec: str) -> Dataset:
    kind, _, arg = spec.partition(":")
    loaders = {"digits": _digits, "mnist": _mnist, "cifar10": _cifar10,
               "imagefolder": _imagefolder, "synthetic": _synthetic}
    if kind not in loaders:
        raise UsageError(f"unknown data spec {spec!r}; expected {DATA_HELP}")
    needs_dir = kind in ("mnist", "cifar10", "imagefolder")
    if needs_dir and not arg:
        raise UsageError(f"data spec {spec!r} needs a directory: {kind}:DIR")
    if needs_dir and not os.path.isdir(arg):
        raise DataError(f"{kind}: directory not found: {arg}")
    ds = loaders[kind](arg)
    ds.spec = spec
    return ds


# --- the loaders ---------------------------------------------------------------------------

def _stats(x: torch.Tensor) -> tuple[tuple, tuple]:
    f = x.double() / 255
    return (tuple(round(v, 4) for v in f.mean((0, 2, 3)).tolist()),
            tuple(round(v, 4) for v in f.std((0, 2, 3)).tolist()))


def _digits(_arg) -> Dataset:
    from sklearn.datasets import load_digits   # deferred on purpose: scikit-learn is heavy
    d = load_digits()
    x = torch.from_numpy(np.round(d.images * (255 / 16)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1437], perm[1437:]          # a fixed 80/20 split of the 1,797 digits
    mean, std = _stats(x[tr])
    return Dataset("digits", x[tr], y[tr], x[te], y[te], mean, std, [str(i) for i in range(10)])


def _read_idx(path: str, magic: int) -> np.ndarray:
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            opener = gzip.open if p.endswith(".gz") else open
            try:
                with opener(p, "rb") as f:
                    raw = f.read()
            except (OSError, EOFError) as e:
                raise DataError(f"mnist: cannot read {p}: {e}") from None
            break
    else:
        raise DataError(f"mnist: missing {os.path.basename(path)}[.gz] in {os.path.dirname(path)}"
                        " (expected the four official idx files)")
    if len(raw) < 8 or struct.unpack(">I", raw[:4])[0] != magic:
        raise DataError(f"mnist: {p} is not an idx file with magic {magic}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"mnist: {p} holds {data.size} bytes of data, header says {dims}")
    return data.reshape(dims)


def _mnist(root: str) -> Dataset:
    def part(prefix):
        x = _read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte"), 2051)
        y = _read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte"), 2049)
        return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))
    (trx, try_), (tex, tey) = part("train"), part("t10k")
    return Dataset("mnist", trx, try_, tex, tey, MNIST_MEAN, MNIST_STD,
                   [str(i) for i in range(10)])


def _cifar_batch(path: str):
    if not os.path.exists(path):
        raise DataError(f"cifar10: missing {os.path.basename(path)} in {os.path.dirname(path)}"
                        " (expected the python layout: data_batch_1..5, test_batch)")
    # The official CIFAR-10 files are pickles of plain dicts of numpy arrays. We unpickle them
    # with a restricted unpickler that can build nothing but numpy arrays, so a forged file
    # cannot run code.
    try:
        with open(path, "rb") as f:
            d = _SafeUnpickler(f, encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch ({e})") from None
    return torch.from_numpy(x.copy()), torch.from_numpy(y)


class _SafeUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _cifar10(root: str) -> Dataset:
    parts = [_cifar_batch(os.path.join(root, f"data_batch_{i}")) for i in range(1, 6)]
    tex, tey = _cifar_batch(os.path.join(root, "test_batch"))
    trx = torch.cat([p[0] for p in parts])
    try_ = torch.cat([p[1] for p in parts])
    return Dataset("cifar10", trx, try_, tex, tey, CIFAR10_MEAN, CIFAR10_STD,
                   list(CIFAR10_CLASSES), augment="crop_flip")


_IMG_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")


def _read_folder(root: str, classes: list[str] | None, size=None):
    from PIL import Image     # deferred on purpose: optional (the vision extra), folders only
    if classes is None:
        classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    if not classes:
        raise DataError(f"imagefolder: no class folders in {root} (expected DIR/CLASS/IMAGE)")
    xs, ys = [], []
    for label, c in enumerate(classes):
        folder = os.path.join(root, c)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith(_IMG_EXT):
                continue
            try:
                with Image.open(os.path.join(folder, name)) as im:
                    im = im.convert("RGB")
                    size = size or im.size
                    if im.size != size:
                        im = im.resize(size, Image.BILINEAR)
                    xs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            except OSError as e:
                raise DataError(f"imagefolder: cannot read {os.path.join(folder, name)}: {e}") from None
            ys.append(label)
    if not xs:
        raise DataError(f"imagefolder: no images in the class folders of {root}")
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys), classes, size


def _imagefolder(root: str) -> Dataset:
    test_dir = next((os.path.join(root, d) for d in ("val", "test")
                     if os.path.isdir(os.path.join(root, d))), None)
    if os.path.isdir(os.path.join(root, "train")) and test_dir:
        trx, try_, classes, size = _read_folder(os.path.join(root, "train"), None)
        tex, tey, _, _ = _read_folder(test_dir, classes, size)
    else:   # one folder: hold out a fixed, seeded 20% for testing
        x, y, classes, _ = _read_folder(root, None)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
        cut = len(y) - max(1, len(y) // 5)
        trx, try_, tex, tey = x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]]
    mean, std = _stats(trx)
    return Dataset("imagefolder", trx, try_, tex, tey, mean, std, classes)


def _synthetic(arg: str) -> Dataset:
    try:
        c, h, w = (int(v) for v in (arg or "1x8x8").split("x"))
        assert c > 0 and h > 0 and w > 0
    except (ValueError, AssertionError):
        raise UsageError(f"synthetic spec wants CxHxW, e.g. synthetic:3x32x32, got {arg!r}") from None
    g = torch.Generator().manual_seed(0)
    protos = torch.rand(10, c, h, w, generator=g) * 255

    def draw(n):
        y = torch.arange(n) % 10
        x = protos[y] + torch.randn(n, c, h, w, generator=g) * 60
        return x.clamp(0, 255).round().to(torch.uint8), y
    trx, try_ = draw(1000)
    tex, tey = draw(500)
    mean, std = _stats(trx)
    return Dataset("synthetic", trx, try_, tex, tey, mean, std, [str(i) for i in range(10)])


# --- batches -------------------------------------------------------------------------------

class Batches:
    """Normalized float batches from uint8 tensors; shuffled and augmented as whole tensors.

    With ``world_size > 1`` each rank takes its own shard of the same seeded permutation
    (DistributedSampler's scheme), and ``batch_size`` is the global batch: each rank gets
    ``batch_size // world_size`` images a step.
    """

    def __init__(self, x, y, batch_size, mean, std, *, shuffle=False, augment="none", seed=0,
                 device="cpu", rank=0, world_size=1, drop_last=False, channels_last=False):
        self.device = torch.device(device)
        if self.device.type == "cuda":     # the whole uint8 set goes to the GPU once, from pinned memory
            x, y = x.pin_memory(), y.pin_memory()
        self.x = x.to(self.device, non_blocking=True)
        self.y = y.to(self.device, non_blocking=True)
        self.batch_size = max(1, batch_size // world_size)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=self.device).view(shape) * 255
        self.inv_std = 1 / (torch.tensor(std, device=self.device).view(shape) * 255)
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.channels_last = channels_last
        self.epoch = 0
        n = len(self.y)
        self.per_rank = n // world_size if world_size > 1 else n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        full, rest = divmod(self.per_rank, self.batch_size)
        return full + (0 if self.drop_last or rest == 0 else 1)

    def _indices(self, g):
        n = len(self.y)
        idx = (torch.randperm(n, generator=g) if self.shuffle else torch.arange(n))
        if self.world_size > 1:
            idx = idx[self.rank::self.world_size][: self.per_rank]
        return idx.to(self.device)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        idx = self._indices(g)
        for i in range(len(self)):
            b = idx[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.x[b]
            if self.augment == "crop_flip":
                x = crop_flip(x, g)
            elif self.augment == "shift":
                x = crop_flip(x, g, pad=2, flip=False)
            x = (x.float() - self.mean) * self.inv_std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.y[b]


def crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4, flip: bool = True
              ) -> torch.Tensor:
    """Random crop with zero padding and (``flip``) random horizontal flip, for a whole uint8
    batch. Without the flip it is a random translation by up to ``pad`` pixels each way."""
    n, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(dev)
    mirrored = (torch.rand(n, generator=g).to(dev) < 0.5 if flip
                else torch.zeros(n, dtype=torch.bool, device=dev))
    cols = torch.arange(w, device=dev)
    cols = torch.where(mirrored[:, None], cols.flip(0), cols) + dx[:, None]      # [n, w]
    rows = torch.arange(h, device=dev) + dy[:, None]                              # [n, h]
    return padded[torch.arange(n, device=dev)[:, None, None, None],
                  torch.arange(c, device=dev)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
