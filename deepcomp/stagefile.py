"""Stage files: the plain data that every stage reads and writes.

A *stage file* is a ``torch.save`` of plain data (tensors, strings, numbers, lists, dicts) that
loads with ``weights_only=True``. See docs/STAGEFILE.md. Reading one (or a ``.dc`` file, or a
foreign checkpoint) is :func:`deepcomp.loading.load_stage`.
"""
from __future__ import annotations

import os
import platform
import shlex
import sys
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import nn

from . import dist
from ._version import __version__
from .dc.format import DTYPES
from .errors import CheckpointError, OutputError
from .models import allow_reference, create, factory_accepts, is_reference, model_info
from .torchprune import unpruned_copy

__all__ = ["StageFile", "as_stage", "arch_for", "save_stage", "fit_state_dict", "atomic_write",
           "stage_record", "recording_command", "attached_entries", "STAGE_FORMAT", "TORCH_DTYPES", "DTYPE_NAMES"]

STAGE_FORMAT = "deepcomp-stage/1"
_COMMAND: ContextVar[str | None] = ContextVar("deepcomp_command", default=None)  # recording_command
# The dtypes a .dc file stores (deepcomp.dc.format.DTYPES, by name) as torch's, and back.
TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}


@dataclass
class StageFile:
    """The model at one stage of the pipeline, as plain data keyed by parameter name."""
    arch: dict                                   # {"name": "resnet20", "kwargs": {...}}
    data: dict                                   # Dataset.meta(): spec, mean, std, input_size, classes
    state_dict: dict                             # the effective weights (pruned, quantized values)
    masks: dict = field(default_factory=dict)    # name -> bool tensor, True where a weight is kept
    quant: dict = field(default_factory=dict)    # name -> {"codebook", "indices" (int16, -1 pruned), "bits"}
    history: list = field(default_factory=list)  # stage records, oldest first
    # The user's own module, when a stage was given one in Python: models are built as copies of
    # it, so its constructor need not be importable. Never saved.
    template: nn.Module | None = field(default=None, repr=False, compare=False)

    def build_model(self) -> nn.Module:
        if self.template is not None:        # a copy without deepcomp's or torch's pruning hooks
            model = _plain_copy(self.template)[0]
        else:
            model = create(self.arch["name"], **self.arch.get("kwargs", {}))
        fit_state_dict(model, self.state_dict)
        return model

    def aliases(self) -> dict:
        """Tied weights: ``{other name: first name}`` for every tensor the model holds under
        two names (its state dict repeats it; prune and quantize work on the first name)."""
        return tied_names(self.build_model())

    @property
    def stage(self) -> str:
        return self.history[-1]["stage"] if self.history else "baseline"

    @classmethod
    def from_module(cls, model: nn.Module, data: dict | None = None) -> "StageFile":
        """A baseline stage of the user's own module (Python API): built by copying it; its
        architecture recorded as the reference ``module:Class`` for files written from it."""
        cls_ = type(model)
        ref = f"{cls_.__module__}:{cls_.__qualname__}"
        if "<" not in ref:           # the user handed us the module: its class may be imported
            allow_reference(ref)
        meta = data or {"spec": "", "mean": [], "std": [], "input_size": [], "classes": [],
                        "augment": "none"}
        return cls.from_model(model, {"name": ref, "kwargs": {}}, meta, template=model)

    @classmethod
    def from_model(cls, model: nn.Module, arch: dict, data: dict, **kw) -> "StageFile":
        sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(arch=arch, data=data, state_dict=sd, **kw)

    def to_dict(self) -> dict:
        return {"format": STAGE_FORMAT, "arch": self.arch, "data": self.data,
                "state_dict": self.state_dict, "masks": self.masks, "quant": self.quant,
                "history": self.history}


def tied_names(model: nn.Module) -> dict:
    """``{other name: first name}`` of every parameter ``model`` holds under two names."""
    first, out = {}, {}
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[n] = first[id(p)]
        else:
            first[id(p)] = n
    return out


def as_stage(obj, data=None) -> StageFile:
    """A StageFile as it is, or the stage of a plain ``nn.Module`` (the Python API's stage
    functions take either): its weights, with the masks and codebooks it carries from
    deepcomp's handles (deepcomp.userloop) or from ``torch.nn.utils.prune``."""
    if isinstance(obj, StageFile):
        return obj
    if isinstance(obj, nn.Module):
        masks, quant = attached_entries(obj)
        net, torch_masks = _plain_copy(obj)
        sf = StageFile.from_module(net, data.meta() if data is not None else None)
        sf.masks = {k: v.detach().bool().cpu().clone() for k, v in {**torch_masks,
                                                                   **masks}.items()}
        sf.quant = {k: dict(v) for k, v in quant.items()}
        return sf
    raise TypeError(f"expected a StageFile or a torch.nn.Module, got {type(obj).__name__}")


def attached_entries(model: nn.Module) -> tuple[dict, dict]:
    """The masks and quantizer entries ``model`` carries from deepcomp.userloop's handles
    (a share handle is finalized first, so the weights are plain tensors again)."""
    m, q = getattr(model, "_deepcomp_masks", None), getattr(model, "_deepcomp_quant", None)
    return (m.masks if m is not None else {}), (q.finalize() if q is not None else {})


def _plain_copy(model: nn.Module) -> tuple[nn.Module, dict]:
    """A copy of ``model`` without ``torch.nn.utils.prune``'s reparametrizations (made
    permanent; their masks returned) and without deepcomp's handles and hooks."""
    net, masks = unpruned_copy(model)
    for attr in ("_deepcomp_masks", "_deepcomp_quant"):
        handle = net.__dict__.pop(attr, None)
        for h in getattr(handle, "_hooks", ()):
            net._forward_pre_hooks.pop(h.id, None)
    return net, masks


def arch_for(name: str, data: dict, kwargs: dict | None = None) -> dict:
    """Architecture arguments that fit a data set: classes, channels and image size, under the
    ``kwargs`` the user gave. A ``module:factory`` reference gets those of the three its
    signature names."""
    c, h, _ = data["input_size"] if data.get("input_size") else (None, None, None)
    fit = {"num_classes": len(data["classes"]) if data.get("classes") else None,
           "in_chans": c, "img_size": h}
    if is_reference(name):
        allow_reference(name)
        names = [k for k in fit if factory_accepts(name, k)]
    else:
        names = ["num_classes"] if model_info(name).family == "torchvision" else list(fit)
    kw = {k: fit[k] for k in names if fit[k] is not None}
    kw.update(kwargs or {})
    return {"name": name, "kwargs": kw}


def atomic_write(path: str, write) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place, so an
    interrupted or failed write never leaves a half-written output.

    Under torchrun only rank 0 writes; every rank waits until the file is in place."""
    if not dist.is_main():
        dist.barrier()
        return
    _write_atomically(os.fspath(path), write)
    dist.barrier()


def check_writable(path: str) -> None:
    """Raise :class:`OutputError` naming ``path`` unless it could be written now: its folder (or
    the nearest existing one above it) takes a new file. Writes and removes a probe file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError(f"cannot write {path}: it is a directory")
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        if os.path.exists(folder):
            raise OutputError(f"cannot write {path}: {folder} is not a directory")
        folder = os.path.dirname(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    os.unlink(probe)


def _write_atomically(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
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


@contextmanager
def recording_command(command: str):
    """Stage records made inside the block name ``command`` as the command that made them (the
    CLI's ``deepcomp ...`` line); outside any such block a record names ``python <argv>``."""
    token = _COMMAND.set(command)
    try:
        yield
    finally:
        _COMMAND.reset(token)


def stage_record(stage: str, config: dict, metrics: dict, sizes: dict, wall_time: float,
                 **extra) -> dict:
    """One entry of a stage file's ``history``."""
    command = _COMMAND.get() or f"python {shlex.join(sys.argv)}"
    return {"stage": stage, "config": config, "metrics": metrics, "sizes": sizes,
            "wall_time": round(wall_time, 3), "command": command,
            "versions": {"deepcomp": __version__, "torch": str(torch.__version__),
                         "python": platform.python_version()}, **extra}
