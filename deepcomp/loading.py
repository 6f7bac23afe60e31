"""Reading what users give deepcomp: stage files, ``.dc`` files and foreign checkpoints.

:func:`load_stage` is the one door in for every command. It sits above ``stagefile`` (the stage
file's plain data) and ``decode`` (the ``.dc`` reader), which import neither it nor each other.
Nothing here unpickles code: ``torch.load(weights_only=True)`` and the ``.dc`` reader only.
"""
from __future__ import annotations

import os

import torch

from .errors import CheckpointError, UsageError
from .models import allow_reference, create, is_reference, model_info
from .dcformat import MAGIC as DC_MAGIC
from .stagefile import STAGE_FORMAT, StageFile, arch_for, fit_state_dict
from .torchprune import from_torch_prune

__all__ = ["load_stage", "load_checkpoint_state", "unwrap_state_dict"]


def _check_file(path: str) -> None:
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a directory, not a stage file, .dc file or checkpoint")
    if not os.path.isfile(path):
        raise CheckpointError(f"no such file: {path}")


def _torch_load(path: str):
    _check_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        if "Unsupported global" in msg:
            why = "it holds Python objects that weights_only=True refuses to unpickle"
        elif "zip archive" in msg or "central directory" in msg:
            why = "a damaged or truncated torch.save file"
        else:
            why = "not a torch.save file"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({why})") from None


def _check_model_arg(path: str, sf: StageFile, model: str | None, model_kwargs) -> StageFile:
    """A file that names its architecture takes no --model but its own, and no --model-kwargs."""
    if model is not None and model != sf.arch["name"]:
        raise UsageError(f"--model {model} does not apply: {path} names its architecture "
                         f"({sf.arch['name']})")
    if model_kwargs:
        raise UsageError(f"--model-kwargs does not apply: {path} names its architecture and "
                         "its arguments")
    return sf


def load_stage(path: str, model: str | None = None, data: dict | None = None,
               model_kwargs: dict | None = None, template=None) -> StageFile:
    """Read a stage file, a ``.dc`` file, or a foreign checkpoint (which needs ``model``: a
    registry name or a ``module:factory`` reference, built with ``model_kwargs``).

    Naming ``model`` is what allows a reference to be imported (deepcomp.models); for a file
    that names its own architecture, ``model`` must be that one. ``template``: the user's own
    module (Python API), which models are built from instead of the recorded architecture."""
    if model is not None and is_reference(model):
        allow_reference(model)
    _check_file(path)
    with open(path, "rb") as f:
        head = f.read(len(DC_MAGIC))
    if head == DC_MAGIC:
        from .decode import read_dc
        return _check_model_arg(path, read_dc(path, template), model, model_kwargs)
    obj = _torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == STAGE_FORMAT:
        sf = StageFile(obj["arch"], obj["data"], obj["state_dict"], obj.get("masks", {}),
                       obj.get("quant", {}), obj.get("history", []))
        _check_model_arg(path, sf, model, model_kwargs)
        sf.template = template
        sf.build_model()   # validates that the weights fit the architecture
        return sf
    if model is None:
        raise CheckpointError(f"{path} is a plain checkpoint that names no architecture: "
                              "give --model NAME (a registry name or package.module:factory)")
    state, masks = from_torch_prune(unwrap_state_dict(obj, path))
    if data is None:
        info = None if is_reference(model) else model_info(model)
        data = {"spec": "", "mean": [], "std": [],
                "input_size": list(info.input_size) if info else [],
                "classes": [str(i) for i in range(info.num_classes)] if info else [],
                "augment": "none"}
    sf = StageFile(arch_for(model, data, model_kwargs), data, {})
    net = create(sf.arch["name"], **sf.arch["kwargs"])
    fit_state_dict(net, state, path)
    sf.state_dict = {k: v.detach().clone() for k, v in net.state_dict().items()}
    sf.masks = {k: m.bool().cpu().clone() for k, m in masks.items()}   # torch.nn.utils.prune's
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
