"""Model registry: ``create(name, **kwargs)`` and ``list_models()``; one file per family."""
from ._registry import ModelInfo, create, list_models, model_info, register_model
from . import lenet, resnet, resnet_cifar, torchvision_models  # noqa: F401  (registers models)

__all__ = ["ModelInfo", "create", "list_models", "model_info", "register_model"]
