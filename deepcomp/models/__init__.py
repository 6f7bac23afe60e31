"""Model registry: ``create(name, **kwargs)`` and ``list_models()``; one file per family."""
from ._registry import (ModelInfo, allow_reference, create, factory_accepts, is_reference,
                        list_models, model_info, register_model)
from . import lenet, resnet, resnet_cifar, torchvision_models  # noqa: F401  (registers models)

__all__ = ["ModelInfo", "create", "list_models", "model_info", "register_model", "is_reference",
           "allow_reference", "factory_accepts"]
