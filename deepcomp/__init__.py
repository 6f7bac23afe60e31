"""deepcomp: Deep Compression (Han, Mao, Dally, ICLR 2016) for PyTorch models.

Stages, each a function over plain data and a command:
``prune`` -> ``quantize`` -> ``encode`` (a ``.dc`` file) -> ``decode``/``load``;
``compress`` runs them all. docs/ARCHITECTURE.md says which module owns what.

The public names below are imported when first used (PEP 562), so ``import deepcomp.dc``, the
file format, does not import torch.
"""
import sys
import types
from importlib import import_module

from ._version import __version__

# public name -> the module that defines it
_PUBLIC = {"PruneConfig": "prune", "prune": "prune",                      # stage 1: pruning
           "QuantizeConfig": "quantize", "quantize": "quantize",          # stage 2: weight sharing
           "EncodeConfig": "encode", "encode": "encode",                  # stage 3: the .dc file
           "decode": "loading", "load": "loading",           # .dc file -> state dict / model
           "CompressConfig": "pipeline", "compress": "pipeline",          # all stages, resumable
           "prune_masks": "userloop", "apply_masks": "userloop",          # your own loop
           "GradualSchedule": "userloop", "share_weights": "userloop"}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_PUBLIC})


class _Package(types.ModuleType):
    """``deepcomp.prune``, ``.quantize`` and ``.encode`` are the stage functions, as they always
    were, although modules of the same names exist: importing such a module does not replace
    the function (the import system sets a package's attribute to each submodule it loads)."""

    def __setattr__(self, name, value):
        if not (name in _PUBLIC and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
