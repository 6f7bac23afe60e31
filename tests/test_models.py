import pytest
import torch

from deepcomp.errors import UnknownModelError
from deepcomp.models import create, list_models, model_info

OWN = [n for n in list_models() if not n.startswith("tv.")]


@pytest.mark.parametrize("name", OWN)
def test_forward_shape_and_published_parameter_count(name):
    info = model_info(name)
    model = create(name).eval()
    assert sum(p.numel() for p in model.parameters()) == info.num_params
    with torch.no_grad():
        out = model(torch.randn(2, *info.input_size))
    assert out.shape == (2, info.num_classes)


def test_lenet300_is_784_300_100_10():
    m = create("lenet300")
    assert [tuple(m.get_parameter(f"fc{i}.weight").shape) for i in (1, 2, 3)] == \
        [(300, 784), (100, 300), (10, 100)]


@pytest.mark.parametrize("name,size", [("lenet300", 8), ("resnet20", 16), ("resnet18", 16)])
def test_input_size_and_classes_are_arguments(name, size):
    c = model_info(name).input_size[0]
    m = create(name, num_classes=3, img_size=size).eval()
    with torch.no_grad():
        assert m(torch.randn(1, c, size, size)).shape == (1, 3)


def test_resnet20_names_match_the_reference_checkpoint():
    keys = set(create("resnet20").state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer3.2.bn2.bias",
            "linear.weight", "linear.bias"} <= keys
    assert not any("shortcut" in k for k in keys)      # option A shortcuts have no parameters


def test_unknown_model_and_bad_arguments():
    with pytest.raises(UnknownModelError, match="unknown model 'resnet21'"):
        create("resnet21")
    with pytest.raises(UnknownModelError, match="bad arguments"):
        create("lenet300", nonsense=1)
