"""Reading what users give deepcomp: stage files, ``.dc`` files and foreign checkpoints, into a
stage file, a state dict or a model.

:func:`load_stage` is the one door in for every command. Above ``stagefile`` (the stage file's
plain data) and ``deepcomp.dc`` (the ``.dc`` format, read into numpy arrays), this module turns
a ``.dc`` file into PyTorch: the architecture's layout the reader checks a file against (built
on the meta device), tensors, masks and quantizer entries, and the encoded record's sizes that
the file does not store. Nothing here unpickles code: ``torch.load(weights_only=True)`` and the
``.dc`` reader only.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from . import dc
from .dc.format import is_int
from .dc.sparse import as_2d
from .errors import (CheckpointError, HeaderError, UnknownArchitectureError, UnknownModelError,
                     UntrustedArchitectureError, UntrustedModelError, UsageError)
from .models import allow_reference, create, is_reference, model_info
from .sizes import stage_sizes
from .stagefile import (DTYPE_NAMES, STAGE_FORMAT, TORCH_DTYPES, StageFile, arch_for, atomic_write,
                        fit_state_dict)
from .torchprune import from_torch_prune

__all__ = ["load_stage", "load_checkpoint_state", "unwrap_state_dict", "read_dc", "decode_bytes",
           "arch_state", "decode", "load"]


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
        head = f.read(len(dc.MAGIC))
    if head == dc.MAGIC:
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


# --- .dc files ---------------------------------------------------------------------------------

def read_dc(path: str, template: torch.nn.Module | None = None) -> StageFile:
    """The stage file stored in the .dc file ``path``. ``template``: the user's own module,
    whose state dict the file is read against (instead of building the architecture it names)."""
    with open(path, "rb") as f:
        buf = f.read()
    return decode_bytes(buf, os.path.basename(path), template)


def decode_bytes(buf: bytes, name: str = "<bytes>", template: torch.nn.Module | None = None
                 ) -> StageFile:
    """The stage file stored in the bytes of a .dc file (``template``: see :func:`read_dc`)."""
    f = dc.read(buf, name, _arch_layout(template))
    state, masks, quant = {}, {}, {}
    for n, t in f.tensors.items():
        x = torch.from_numpy(t.array)
        state[n] = (x.view(torch.bfloat16) if t.stored == "bfloat16" else x).to(
            TORCH_DTYPES[t.dtype])
    for n in sorted(f.tensors):          # masks and quantizer entries in name order
        t = f.tensors[n]
        if t.mask is not None:
            masks[n] = torch.from_numpy(t.mask)
        if t.quant is not None:
            quant[n] = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                        for k, v in t.quant.items()}
    h = f.header
    sf = StageFile(h["arch"], h["data"], state, masks, quant, h["history"], template=template)
    if f.version[0] == 1:
        _complete_v1(sf, f)
    else:
        _complete_v2(sf, f)
    return sf


def _arch_layout(template: torch.nn.Module | None):
    """The reader's ``arch_layout`` (deepcomp.dc.read): the user's ``template``'s state dict,
    or the architecture's (:func:`arch_state`); a ``module:factory`` reference is not built
    where the file lists its tensors (importing it is for building the model, not reading)."""
    def layout(arch: dict, name: str, required: bool) -> dict | None:
        if template is not None:
            return {k: (DTYPE_NAMES[v.dtype], tuple(v.shape))
                    for k, v in template.state_dict().items()}
        if not required and is_reference(arch["name"]):
            return None
        return arch_state(arch, name)
    return layout


def arch_state(arch: dict, name: str) -> dict:
    """The architecture's state dict, ``{key: (dtype name, shape)}`` in the model's order, from
    a model built on the meta device (nothing allocated)."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")      # e.g. zero-element tensors of forged sizes
            net = create(arch["name"], **arch.get("kwargs", {}))
    except UntrustedModelError as e:      # the user must name the model (exit 2)
        raise UntrustedArchitectureError(f"{name}: {e}") from None
    except UnknownModelError as e:
        if ":" in arch["name"]:          # a user's module:factory: say why it cannot be built
            raise UnknownArchitectureError(f"{name}: {e}") from None
        raise UnknownArchitectureError(f"{name}: unknown architecture {arch['name']!r}") from None
    except Exception as e:       # constructor arguments forged or from another version
        raise HeaderError(f"{name}: cannot build {arch['name']!r} with "
                          f"{arch.get('kwargs')}: {str(e)[:100]}") from None
    out = {}
    for k, v in net.state_dict().items():
        if v.dtype not in DTYPE_NAMES:
            raise HeaderError(f"{name}: {arch['name']!r} holds {k} of dtype {v.dtype}, which "
                              "the format cannot store")
        out[k] = (DTYPE_NAMES[v.dtype], tuple(v.shape))
    return out


def _complete_v1(sf: StageFile, f: dc.DcFile) -> None:
    """A version 1 file stores part of its encoded record's sizes; fill in the rest."""
    rec = sf.history[-1] if sf.history else {}
    if rec.get("stage") == "encoded" and isinstance(rec.get("sizes"), dict) \
            and "bytes" not in rec["sizes"] and is_int(rec["sizes"].get("dense_bytes")):
        complete_record(rec, f.nbytes, f.parts, f.stats)


def _complete_v2(sf: StageFile, f: dc.DcFile) -> None:
    """A version 2 file stores no sizes of its own: the encoded record gets them from the
    decoded stage and the file; a stripped file gets an encoded record of its own."""
    if not sf.history or sf.history[-1].get("stage") != "encoded":
        sf.history.append({"stage": "encoded", "metrics": {}, "stripped": True})
    rec = sf.history[-1]
    rec["sizes"] = {k: v for k, v in stage_sizes(sf).items() if k not in ("bytes", "ratio")}
    complete_record(rec, f.nbytes, f.parts, f.stats)
    for r in sf.history[:-1]:       # sizes every record shares are stored once: the file's
        z = r.get("sizes")
        if isinstance(z, dict) and is_int(z.get("bytes"), 1):
            z.setdefault("params", rec["sizes"]["params"])
            z.setdefault("dense_bytes", rec["sizes"]["dense_bytes"])
            z.setdefault("ratio", z["dense_bytes"] / z["bytes"])


def complete_record(record: dict, nbytes: int, parts: dict, tensors: dict) -> dict:
    """Fill in what the file does not store about itself: its size and ratio, the byte
    breakdown (``parts``: bytes per section kind; the header is the rest) and the per-tensor
    Huffman figures."""
    sizes = record["sizes"]
    sizes["bytes"] = nbytes
    sizes["ratio"] = sizes["dense_bytes"] / max(nbytes, 1)
    sizes["breakdown"] = {**parts, "header": nbytes - sum(parts.values())}
    sizes["tensors"] = tensors
    return record


# --- the public readers: deepcomp.decode and deepcomp.load --------------------------------------

def decode(src: str, out: str | None = None, model: str | None = None,
           sparse: bool = False) -> dict:
    """The effective state dict of a .dc file; also written to ``out`` when given: a
    safetensors file where ``out`` ends in ``.safetensors``, else a plain ``torch.save`` state
    dict (loads with ``weights_only=True``). A file whose architecture is a ``module:factory``
    reference needs ``model`` to name it (deepcomp.models).

    ``sparse=True`` returns every pruned weight as a ``scipy.sparse.csr_matrix`` of its 2-D
    view ``[out, in * kh * kw]`` (the paper's layout; its explicit zeros none, its non-zeros
    exactly the kept weights), for analysis and sparse inference; other tensors as they are."""
    sf = load_stage(src, model=model)
    sd = sf.state_dict
    if out:
        if out.endswith(".safetensors"):
            blob = safetensors_bytes({k: v.contiguous() for k, v in sd.items()},
                                     metadata={"format": "pt", "deepcomp.arch": json.dumps(sf.arch)})
            atomic_write(out, lambda f: f.write(blob))
        else:
            atomic_write(out, lambda f: torch.save(sd, f))
    if sparse:
        return {k: _csr(v, sf.masks[k]) if k in sf.masks else v for k, v in sd.items()}
    return sd


def _csr(w: torch.Tensor, mask: torch.Tensor):
    """A pruned weight as a CSR matrix of its 2-D view, holding exactly the kept weights."""
    from scipy.sparse import csr_matrix    # deferred on purpose: scipy.sparse is heavy, and
    rows, cols = as_2d(w.shape)            # only decode(..., sparse=True) needs it
    m = mask.reshape(rows, cols).numpy()
    r, c = np.nonzero(m)
    values = w.detach().reshape(rows, cols).numpy()[r, c]
    return csr_matrix((values, (r, c)), shape=(rows, cols))


def load(src: str, device: str = "cpu", model: str | torch.nn.Module | None = None
         ) -> torch.nn.Module:
    """The model of a .dc file (or stage file), on ``device``, in eval mode. ``model``: for a
    file of your own architecture, its ``module:factory`` reference (which allows deepcomp to
    import it), or an instance of it, which the weights are loaded into a copy of."""
    if isinstance(model, torch.nn.Module):
        sf = load_stage(src, template=model)
    else:
        sf = load_stage(src, model=model)
    return sf.build_model().to(device).eval()
