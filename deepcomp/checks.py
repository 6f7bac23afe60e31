"""The range of every numeric setting, in one place: the CLI parses its options with these (a
bad value is a one-line usage error before any work, and ``--help`` shows the range), and the
configs check themselves with the same ones when the Python API is called directly.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .errors import UsageError
from .patterns import parse_setting

__all__ = ["Range", "RANGES", "Setting", "check_fields"]


@dataclass(frozen=True)
class Range:
    """A number of ``kind`` (int or float) with optional bounds, open or closed."""
    kind: type
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def text(self, name: str = "value") -> str:
        """The range as a reader writes it, e.g. ``0 < lr <= 10``."""
        def num(v):
            return f"{int(v):,}" if self.kind is int else f"{v:g}"
        lo = "" if self.lo is None else f"{num(self.lo)} {'<' if self.lo_open else '<='} "
        hi = "" if self.hi is None else f" {'<' if self.hi_open else '<='} {num(self.hi)}"
        kind = ", an integer" if self.kind is int else ""
        return f"{lo}{name}{hi}{kind}"

    def ok(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.kind is int and not float(v).is_integer():
            return False
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or self.lo_open and v == self.lo):
            return False
        return self.hi is None or not (v > self.hi or self.hi_open and v == self.hi)

    def check(self, v, name: str):
        """``v`` if it lies in the range, else a :class:`UsageError` naming ``name``."""
        if not self.ok(v):
            what = name.lstrip("-").rpartition(".")[2]
            raise UsageError(f"{name}: {v!r} is out of range ({self.text(what)})")
        return v

    def __call__(self, text: str):
        """argparse's ``type=``: parse and check, or an error argparse prints in one line."""
        try:
            v = self.kind(text)
        except ValueError:
            what = "an integer" if self.kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not self.ok(v):
            raise argparse.ArgumentTypeError(f"{text} is out of range ({self.text()})")
        return v

    @property
    def __name__(self):           # argparse names the type in some messages
        return "int" if self.kind is int else "float"


# Every numeric option's range. Learning rates above 10 and weight decay above 1 are typos or
# divergence in every recipe we know (the papers train at 0.01-0.1, decay 1e-4-5e-4).
RANGES = {
    "epochs": Range(int, 1, 1_000_000),
    "retrain_epochs": Range(int, 0, 1_000_000),
    "finetune_epochs": Range(int, 0, 1_000_000),
    "budget_epochs": Range(int, 1, 1_000_000),
    "lr": Range(float, 0, 10, lo_open=True),
    "momentum": Range(float, 0, 1, hi_open=True),
    "weight_decay": Range(float, 0, 1),
    "batch_size": Range(int, 1, 1 << 24),
    "warmup_epochs": Range(float, 0, 1_000_000),
    "label_smoothing": Range(float, 0, 1, hi_open=True),
    "distill_weight": Range(float, 0, 1),
    "distill_temperature": Range(float, 0, 1000, lo_open=True),
    "seed": Range(int, 0, 2 ** 63 - 1),
    "iterations": Range(int, 1, 10_000),
    "min_keep": Range(float, 0, 1),
    "mask_every": Range(int, 1, 1 << 40),
    "ramp_fraction": Range(float, 0, 1, lo_open=True),
    "sparsity": Range(float, 0, 1, hi_open=True),
    "sensitivity": Range(float, 0, 1000),
    "scan_images": Range(int, 1, 1 << 30),
    "max_images": Range(int, 1, 1 << 30),
    "max_drop": Range(float, 0, 100),
    "dense_bits": Range(int, 0, 12),
    "mantissa_bits": Range(int, 0, 10),
    "bits": Range(int, 1, 12),
    "auto_bits": Range(float, 2, 8),
}


def check_fields(config, names, prefix: str = "") -> None:
    """Check the fields ``names`` of a config dataclass against :data:`RANGES` (a field set to
    None means "the default" and is not checked)."""
    for n in names:
        v = getattr(config, n)
        if v is not None:
            RANGES[n].check(v, prefix + n)


@dataclass(frozen=True)
class Setting:
    """argparse's ``type=`` for a per-layer setting (deepcomp.patterns): one value or
    ``PATTERN=VALUE`` pairs, every value a number in ``range`` or one of ``words``; ``auto``
    also takes ``auto:MEAN`` with MEAN in ``auto``'s range (``--bits auto:4``). The text is
    returned as it was given: the layer names it matches are known only once the model is."""
    range: Range
    words: tuple = ()
    auto: Range | None = None

    def __call__(self, text: str) -> str:
        if self.auto is not None and text.startswith("auto"):
            mean = text.partition(":")[2]
            self.auto(mean)              # raises argparse's error when out of range
            return text

        def convert(v: str):
            return v if v in self.words else self.range(v)
        try:
            parse_setting(text, convert)
        except UsageError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    @property
    def __name__(self):
        return "setting"
