"""The model registry: one door in (:func:`create`), one list out (:func:`list_models`).

Besides registered names, :func:`create` builds any importable model given as a reference
``package.module:factory`` (a function or a class; dotted attributes allowed), so a user's own
network goes through the pipeline. The reference is recorded in stage files and ``.dc`` headers.
Importing a module runs its code, so a reference is only imported once the user has named it
(``--model REF`` on the command line, ``model=REF`` in Python, or by passing the module object
itself): a file alone never makes deepcomp import anything (:func:`allow_reference`).
"""
from __future__ import annotations

import fnmatch
import importlib
import inspect
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..errors import UnknownModelError, UntrustedModelError, UsageError

__all__ = ["ModelInfo", "register_model", "create", "list_models", "model_info",
           "is_reference", "allow_reference", "factory_accepts"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fn: Callable[..., nn.Module]
    input_size: tuple[int, int, int]   # (channels, height, width) the model is built for by default
    num_classes: int = 10
    num_params: int | None = None      # published parameter count at the defaults, if any
    family: str = ""
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(input_size, num_classes=10, num_params=None, family=""):
    """Register a constructor ``fn(num_classes=..., in_chans=..., img_size=...)`` by its name."""
    def wrap(fn):
        _REGISTRY[fn.__name__] = ModelInfo(fn.__name__, fn, tuple(input_size), num_classes,
                                           num_params, family)
        return fn
    return wrap


def register(info: ModelInfo) -> None:
    _REGISTRY[info.name] = info


def list_models(pattern: str | None = None) -> list[str]:
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models())
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None


_ALLOWED: set[str] = set()     # model references the user has named in this process


def is_reference(name: str) -> bool:
    """True for ``package.module:factory``, False for a registry name."""
    return ":" in name


def allow_reference(ref: str) -> None:
    """The user named ``ref``: :func:`create` may import it."""
    _check_reference(ref)
    _ALLOWED.add(ref)


def _check_reference(ref: str) -> None:
    mod, _, attr = ref.partition(":")
    if not mod or not attr or not all(p.isidentifier() for p in mod.split(".") + attr.split(".")):
        raise UsageError(f"bad model reference {ref!r}: expected package.module:factory")


def _factory(ref: str) -> Callable[..., nn.Module]:
    _check_reference(ref)
    if ref not in _ALLOWED:
        raise UntrustedModelError(
            f"the model is {ref!r}, code that deepcomp imports only when you name it: "
            f"give --model {ref} (in Python, model={ref!r})")
    mod, _, attr = ref.partition(":")
    try:
        obj = importlib.import_module(mod)
    except ImportError as e:
        raise UnknownModelError(f"cannot import {mod!r} for model {ref!r} ({e}); is its "
                                "package installed and on the Python path?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownModelError(f"model {ref!r}: {mod!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UnknownModelError(f"model {ref!r} is not callable")
    return obj


def factory_accepts(ref: str, arg: str) -> bool:
    """Whether the factory of an allowed reference takes keyword ``arg``: it names it, or it
    takes ``**kwargs`` and ``arg`` is ``num_classes`` or ``in_chans`` (the convention of timm's
    factories, ``resnet18(pretrained=False, **kwargs)``)."""
    try:
        params = inspect.signature(_factory(ref)).parameters
    except (TypeError, ValueError):
        return False
    if arg in params:
        return True
    return arg in ("num_classes", "in_chans") and any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def create(name: str, **kwargs) -> nn.Module:
    """Build a registered model, or the model of an allowed ``module:factory`` reference.
    Keyword arguments are the constructor's own (registered models: ``num_classes``,
    ``in_chans``, ``img_size``); an unknown one is an error, not ignored."""
    fn = _factory(name) if is_reference(name) else model_info(name).fn
    try:
        model = fn(**kwargs)
    except TypeError as e:
        raise UnknownModelError(f"bad arguments for model {name!r}: {e}") from None
    if not isinstance(model, nn.Module):
        raise UnknownModelError(f"model {name!r} returned a {type(model).__name__}, "
                                "not a torch.nn.Module")
    return model
