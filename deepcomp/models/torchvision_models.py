"""torchvision's classification models as ``tv.NAME``, registered only when torchvision imports
(its compiled operators need libraries a CPU-only machine may lack, so any failure is ignored)."""
from ._registry import ModelInfo, register


def _register_torchvision() -> None:
    try:
        import torchvision.models as tvm    # optional (the vision extra), may fail to load
        names = tvm.list_models(module=tvm)
    except Exception:  # ImportError, or OSError/RuntimeError from its compiled operators
        return
    for name in names:
        def fn(num_classes=1000, in_chans=3, img_size=224, _name=name):
            if in_chans != 3:
                raise TypeError("torchvision models take 3 input channels")
            return tvm.get_model(_name, weights=None, num_classes=num_classes)
        register(ModelInfo(f"tv.{name}", fn, (3, 224, 224), 1000, None, "torchvision"))


_register_torchvision()
