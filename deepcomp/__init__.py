"""deepcomp: Deep Compression (Han, Mao, Dally, ICLR 2016) for PyTorch models.

Stages, each a function over plain data and a command:
``prune`` -> ``quantize`` -> ``encode`` (a ``.dc`` file) -> ``decode``/``load``;
``compress`` runs them all.
"""
__version__ = "0.1.0"

from .prune import PruneConfig, prune  # noqa: E402  (stage 1: pruning)
from .quantize import QuantizeConfig, quantize  # noqa: E402  (stage 2: weight sharing)
from .encode import EncodeConfig, encode  # noqa: E402  (stage 3: the .dc file)
from .decode import decode, load  # noqa: E402  (.dc file -> state dict / model)
from .pipeline import CompressConfig, compress  # noqa: E402  (all stages, resumable)
from .userloop import (GradualSchedule, apply_masks, prune_masks,  # noqa: E402  (your own loop)
                       share_weights)

__all__ = ["PruneConfig", "prune", "QuantizeConfig", "quantize", "EncodeConfig", "encode",
           "decode", "load", "CompressConfig", "compress", "prune_masks", "apply_masks",
           "GradualSchedule", "share_weights", "__version__"]
