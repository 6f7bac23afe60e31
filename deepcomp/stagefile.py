"""Stage files and foreign checkpoints.

A *stage file* is what every stage reads and writes: a ``torch.save`` of plain data (tensors,
strings, numbers, lists, dicts) that loads with ``weights_only=True``. See docs/STAGEFILE.md.
"""
from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
from dataclasses import dataclass, field

import torch
from torch import nn

from . import __version__
from .errors import CheckpointError
from .models import create, model_info

__all__ = ["StageFile", "load_stage", "save_stage", "load_checkpoint_state", "fit_state_dict",
           "atomic_write", "stage_record", "STAGE_FORMAT"]

STAGE_FORMAT = "deepcomp-stage/1"
COMMAND: str | None = None       # the deepcomp command line, set by the CLI for stage records
DC_MAGIC = b"DEEPCOMP"            # the first 8 bytes of a .dc file (docs/FORMAT.md)


@dataclass
class StageFile:
    """The model at one stage of the pipeline, as plain data keyed by parameter name."""
    arch: dict                                   # {"name": "resnet20", "kwargs": {...}}
    data: dict                                   # Dataset.meta(): spec, mean, std, input_size, classes
    state_dict: dict                             # the effective weights (pruned, quantized values)
    masks: dict = field(default_factory=dict)    # name -> bool tensor, True where a weight is kept
    quant: dict = field(default_factory=dict)    # name -> {"codebook", "indices" (int16, -1 pruned), "bits"}
    history: list = field(default_factory=list)  # stage records, oldest first

    def build_model(self) -> nn.Module:
        model = create(self.arch["name"], **self.arch.get("kwargs", {}))
        fit_state_dict(model, self.state_dict)
        return model

    @property
    def stage(self) -> str:
        return self.history[-1]["stage"] if self.history else "baseline"

    @classmethod
    def from_model(cls, model: nn.Module, arch: dict, data: dict, **kw) -> "StageFile":
        sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(arch=arch, data=data, state_dict=sd, **kw)

    def to_dict(self) -> dict:
        return {"format": STAGE_FORMAT, "arch": self.arch, "data": self.data,
                "state_dict": self.state_dict, "masks": self.masks, "quant": self.quant,
                "history": self.history}


def arch_for(name: str, data: dict) -> dict:
    """Architecture arguments that fit a data set: classes, channels and image size."""
    info = model_info(name)
    c, h, _ = data["input_size"]
    kw = {"num_classes": len(data["classes"])}
    if info.family != "torchvision":
        kw.update(in_chans=c, img_size=h)
    return {"name": name, "kwargs": kw}


def atomic_write(path: str, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place, so an
    interrupted or failed write never leaves a half-written output.

    Under torchrun only rank 0 writes; every rank waits until the file is in place."""
    from . import dist
    if not dist.is_main():
        dist.barrier()
        return
    _write_atomically(os.fspath(path), write)
    dist.barrier()


def _write_atomically(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_stage(path: str, sf: StageFile) -> None:
    atomic_write(path, lambda f: torch.save(sf.to_dict(), f))


def _torch_load(path: str):
    if not os.path.isfile(path):
        raise CheckpointError(f"no such file: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        if "Unsupported global" in msg:
            why = "it holds Python objects that weights_only=True refuses to unpickle"
        elif "Weights only load failed" in msg:
            why = "not a torch.save file"
        else:
            why = msg.strip().splitlines()[0][:120] if msg.strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from None


def load_stage(path: str, model: str | None = None, data: dict | None = None) -> StageFile:
    """Read a stage file, a ``.dc`` file, or a foreign checkpoint (which needs ``model``)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(len(DC_MAGIC))
    if head == DC_MAGIC:
        from .decode import read_dc
        return read_dc(path)
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == STAGE_FORMAT:
        sf = StageFile(obj["arch"], obj["data"], obj["state_dict"], obj.get("masks", {}),
                       obj.get("quant", {}), obj.get("history", []))
        sf.build_model()   # validates that the weights fit the architecture
        return sf
    if model is None:
        raise CheckpointError(f"{path} is a plain checkpoint that names no architecture: "
                              "give --model NAME")
    state = unwrap_state_dict(obj, path)
    info = model_info(model)
    data = data or {"spec": "", "mean": [], "std": [], "input_size": list(info.input_size),
                    "classes": [str(i) for i in range(info.num_classes)], "augment": "none"}
    sf = StageFile(arch_for(model, data), data, {})
    net = create(sf.arch["name"], **sf.arch["kwargs"])
    fit_state_dict(net, state, path)
    sf.state_dict = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return sf


def load_checkpoint_state(path: str) -> dict:
    return unwrap_state_dict(_torch_load(path), path)


def unwrap_state_dict(obj, path="checkpoint") -> dict:
    """The state dict inside what users actually have: a bare state dict, or one wrapped as
    ``{"state_dict": ...}``, ``{"net": ...}``, ``{"model": ...}``; ``module.`` (DataParallel)
    and ``_orig_mod.`` (torch.compile) prefixes removed."""
    for key in ("state_dict", "net", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()) or not obj:
        raise CheckpointError(f"{path}: no state dict found (expected a dict of tensors, or one "
                              "under 'state_dict', 'net' or 'model')")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def fit_state_dict(model: nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Load ``state`` strictly; on mismatch, one line naming missing, unexpected and misshaped keys."""
    own = model.state_dict()
    # Checkpoints from PyTorch < 0.4 lack BatchNorm's step counter; it plays no part in inference.
    state = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **state}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def few(xs):
            return ", ".join(xs[:6]) + (f" (+{len(xs) - 6} more)" if len(xs) > 6 else "")
        parts = [f"missing keys: {few(missing)}" if missing else "",
                 f"unexpected keys: {few(unexpected)}" if unexpected else "",
                 f"wrong shapes: {few(shapes)}" if shapes else ""]
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: "
                              + "; ".join(p for p in parts if p))
    model.load_state_dict(state)


def stage_record(stage: str, config: dict, metrics: dict, sizes: dict, wall_time: float,
                 **extra) -> dict:
    """One entry of a stage file's ``history``."""
    return {"stage": stage, "config": config, "metrics": metrics, "sizes": sizes,
            "wall_time": round(wall_time, 3), "command": COMMAND or f"python {shlex.join(sys.argv)}",
            "versions": {"deepcomp": __version__, "torch": str(torch.__version__),
                         "python": platform.python_version()}, **extra}
