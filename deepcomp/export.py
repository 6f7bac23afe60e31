"""ONNX export: the decoded model of any stage as an ONNX graph with dense weights.

``to_onnx(source, path)`` reads what :func:`deepcomp.loading.load_stage` reads (a ``.dc`` file, a
stage file of any stage, a checkpoint with ``model=``), or takes a StageFile or an ``nn.Module``,
and writes one self-contained ``.onnx`` file: the effective weights stored dense as float32
initializers (pruned weights are zeros, quantized weights their centroids), the input named
``input`` (``[batch, C, H, W]``, normalized as the data spec says: ``mean``/``std`` are in the
file's metadata) and the output ``logits`` (``[batch, classes]``).

Exporter: torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). It needs
only the ``onnx`` package and works offline; the ``torch.export``-based default of torch >= 2.9
also needs ``onnxscript`` and ``onnx_ir`` and gives nothing more for these convolutional and
linear networks. torch 2.13 warns that the TorchScript exporter will be removed; the day it is,
pass ``dynamo=True`` and add ``onnxscript`` to the ``onnx`` extra.

onnx and onnxruntime are the optional extra ``deepcomp-pytorch[onnx]``; without them :func:`to_onnx`
raises :class:`MissingDependencyError` (one line, no traceback from the CLI).
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import json
import os
import sys
import tempfile
import warnings

import torch
from torch import nn

from ._version import __version__
from .errors import DeepcompError, MissingDependencyError, UsageError
from .loading import load_stage
from .models import is_reference, model_info
from .stagefile import StageFile, as_stage, atomic_write

__all__ = ["to_onnx", "run_onnx", "DEFAULT_OPSET", "ExportError"]

# ONNX opset 17 (ONNX 1.12, 2022): read by onnxruntime >= 1.13 and by the common mobile and
# microcontroller converters.
DEFAULT_OPSET = 17
# The oldest opset the TorchScript exporter writes: enough for the LeNets and ResNet-18/34/50;
# the CIFAR ResNets' option-A shortcuts (strided slices) need 10.
MIN_OPSET = 9
# The check accepts |onnxruntime - PyTorch| <= ATOL x max(1, largest |logit|): float32 rounding
# grows with the logits, which reach 1e9 in an untrained 110-layer ResNet (trained ones: ~10).
ATOL = 1e-4
INSTALL = "pip install 'deepcomp-pytorch[onnx]'"


class ExportError(DeepcompError):
    """The model could not be exported, or onnxruntime does not agree with PyTorch on it."""


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"ONNX export needs the {module} package, which is not "
                                     f"installed: {INSTALL}") from None


def _max_opset() -> int:
    """The newest opset the TorchScript exporter of this torch writes (20 in torch 2.13)."""
    try:       # torch's private module, deferred: only an export asks, and it may be gone
        from torch.onnx import _constants
        return int(getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET",
                           _constants.ONNX_MAX_OPSET))
    except (ImportError, AttributeError):
        return DEFAULT_OPSET


def _stage(source, model: str | None) -> tuple[StageFile, str | None]:
    if isinstance(source, (str, os.PathLike)):
        return load_stage(os.fspath(source), model=model), os.fspath(source)
    if model is not None:
        raise UsageError("model= applies to a file source only")
    return as_stage(source), None


def _input_size(sf: StageFile, input_size) -> list[int]:
    size = list(input_size or sf.data.get("input_size") or [])
    if not size and not is_reference(sf.arch["name"]):
        size = list(model_info(sf.arch["name"]).input_size)
    if not size:
        raise UsageError(f"the input size of {sf.arch['name']} is not recorded: give "
                         "input_size=(C, H, W)")
    if len(size) != 3 or not all(isinstance(n, int) and n > 0 for n in size):
        raise UsageError(f"input size must be three positive integers (C, H, W), got {size}")
    return size


def _metadata(sf: StageFile, source: str | None) -> dict[str, str]:
    """String key-value pairs stored in the ONNX file (``metadata_props``), sorted."""
    d = sf.data
    meta = {"deepcomp.version": __version__,
            "deepcomp.arch": json.dumps(sf.arch, sort_keys=True),
            "deepcomp.stage": sf.stage,
            "deepcomp.input": "normalized: (pixel / 255 - mean) / std per channel",
            "deepcomp.data": json.dumps({k: d.get(k) for k in ("spec", "mean", "std",
                                                               "input_size", "classes")},
                                        sort_keys=True)}
    if source:
        meta["deepcomp.source"] = os.path.basename(source)
    return dict(sorted(meta.items()))


def _export_bytes(net: nn.Module, x: torch.Tensor, opset: int, dynamic_batch: bool) -> bytes:
    buf = io.BytesIO()
    kw = {"dynamo": False} if _has_dynamo_flag() else {}
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
    is_on = getattr(torch._C, "_jit_is_onnx_log_enabled", lambda: False)
    set_log = getattr(torch._C, "_jit_set_onnx_log_enabled", lambda on: None)
    logging = is_on()
    # The exporter's deprecation and constant-folding notes are warnings; on failure it also
    # writes the whole TorchScript graph to the C++ stdout (torch 2.13 turns its log on for every
    # export): both stay out of the command's output.
    with warnings.catch_warnings(), _quiet_stdout():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (x,), buf, input_names=["input"], output_names=["logits"],
                              opset_version=opset, dynamic_axes=axes, do_constant_folding=True,
                              **kw)
        finally:
            set_log(logging)
    return buf.getvalue()


def _lowest_opset(net: nn.Module, x: torch.Tensor, lo: int, hi: int,
                  dynamic_batch: bool) -> int | None:
    """The lowest opset in ``lo..hi`` that exports ``net``, or None (an export failed at a lower
    one: the error names the opset to ask for instead)."""
    for opset in range(lo, hi + 1):
        try:
            _export_bytes(net, x, opset, dynamic_batch)
            return opset
        except Exception:
            continue
    return None


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptor 1 to a discarded file, C++ writes included."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _has_dynamo_flag() -> bool:
    return "dynamo" in inspect.signature(torch.onnx.export).parameters


def run_onnx(blob_or_path, x) -> "numpy.ndarray":  # noqa: F821
    """The logits onnxruntime computes for the batch ``x`` (a tensor or array), on the CPU."""
    ort = _require("onnxruntime")
    so = ort.SessionOptions()
    so.log_severity_level = 3                   # errors only: no notes on stderr
    sess = ort.InferenceSession(blob_or_path, so, providers=["CPUExecutionProvider"])
    arr = x.numpy() if torch.is_tensor(x) else x
    return sess.run(["logits"], {"input": arr})[0]


def _check_opset_and_batch(opset, batch) -> int:
    """The newest opset this torch exports, after checking ``opset`` and ``batch``."""
    hi = _max_opset()
    if not isinstance(opset, int) or not MIN_OPSET <= opset <= hi:
        raise UsageError(f"opset must be an integer from {MIN_OPSET} to {hi} (this torch's "
                         f"exporter), got {opset}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise UsageError(f"batch must be a positive integer or None (dynamic), got {batch}")
    return hi


def _export(net: nn.Module, x: torch.Tensor, opset: int, hi: int, batch, sf) -> bytes:
    """The ONNX bytes of ``net``; a failure names the lowest opset that would export it."""
    try:
        return _export_bytes(net, x, opset, dynamic_batch=batch is None)
    except Exception as e:          # torch's own errors span many lines: keep the first
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        first = first.split("[Caused by")[0].strip()[:200]
        lowest = _lowest_opset(net, x, opset + 1, hi, batch is None)
        hint = (f"; the lowest opset that exports it is {lowest} (--opset {lowest})"
                if lowest else "")
        raise ExportError(f"cannot export {sf.arch['name']} to ONNX opset {opset}: "
                          f"{first}{hint}") from None


def _checked_proto(onnx, blob: bytes, sf, src) -> bytes:
    """The file with deepcomp as its producer and its metadata, checked by onnx's checker."""
    proto = onnx.load_from_string(blob)
    proto.producer_name, proto.producer_version = "deepcomp", __version__
    for k, v in _metadata(sf, src).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the ONNX graph of {sf.arch['name']} is not valid: "
                          f"{str(e).strip().splitlines()[0][:200]}") from None
    return proto.SerializeToString()


def _check_run(net: nn.Module, blob: bytes, xs: torch.Tensor, sf) -> float:
    """The largest difference of onnxruntime's logits from PyTorch's on ``xs``; an error where
    it exceeds the tolerance."""
    with torch.no_grad():
        want = net(xs).numpy()
    try:
        got = run_onnx(blob, xs)
    except DeepcompError:
        raise
    except Exception as e:       # onnxruntime's own errors: an operator it lacks, etc.
        raise ExportError(f"onnxruntime cannot run the file: "
                          f"{(str(e).strip().splitlines() or ['?'])[0][:200]}") from None
    diff = float(abs(got - want).max())
    limit = ATOL * max(1.0, float(abs(want).max()))
    if not diff <= limit:
        raise ExportError(f"onnxruntime and PyTorch differ by {diff:.2e} (more than "
                          f"{limit:.1e}) on {sf.arch['name']}; not written (check=False "
                          "writes it)")
    return diff


def to_onnx(source, path: str, *, model: str | None = None, opset: int = DEFAULT_OPSET,
            batch: int | None = None, input_size=None, check: bool = True,
            check_batch: int = 8) -> dict:
    """Write the model of ``source`` to ``path`` as ONNX, atomically.

    ``source``: a path :func:`deepcomp.loading.load_stage` reads (``model`` as there), a
    StageFile, or an ``nn.Module`` (give ``input_size``). ``batch``: a fixed batch size, or None
    for a dynamic batch axis. ``check``: run the file with onnxruntime on ``check_batch`` seeded
    random inputs and refuse to write it unless it agrees with PyTorch within 1e-4 (relative to
    the largest logit where that exceeds 1).

    Returns plain data: ``path``, ``bytes``, ``opset``, ``input_shape`` (``[batch, C, H, W]``,
    batch ``"batch"`` when dynamic), ``max_abs_diff`` and ``check_batch`` (None when not
    checked)."""
    onnx = _require("onnx")
    if check:
        _require("onnxruntime")
    hi = _check_opset_and_batch(opset, batch)
    path = os.fspath(path)
    sf, src = _stage(source, model)
    if src is not None and os.path.exists(path) and os.path.samefile(src, path):
        raise UsageError(f"refusing to overwrite the input {src} with the ONNX file")
    size = _input_size(sf, input_size)
    net = sf.build_model().cpu().eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch or 1, *size, generator=gen)
    blob = _checked_proto(onnx, _export(net, x, opset, hi, batch, sf), sf, src)
    diff = None
    if check:
        diff = _check_run(net, blob, torch.randn(batch or check_batch, *size, generator=gen), sf)
    atomic_write(path, lambda f: f.write(blob))
    return {"path": path, "bytes": len(blob), "opset": opset,
            "input_shape": [batch or "batch", *size],
            "max_abs_diff": diff, "check_batch": (batch or check_batch) if check else None}
