"""The model registry: one door in (:func:`create`), one list out (:func:`list_models`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..errors import UnknownModelError

__all__ = ["ModelInfo", "register_model", "create", "list_models", "model_info"]


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
    import fnmatch
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_models())
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None


def create(name: str, **kwargs) -> nn.Module:
    """Build a registered model. Keyword arguments are the constructor's own
    (``num_classes``, ``in_chans``, ``img_size``); an unknown one is an error, not ignored."""
    info = model_info(name)
    try:
        model = info.fn(**kwargs)
    except TypeError as e:
        raise UnknownModelError(f"bad arguments for model {name!r}: {e}") from None
    return model
