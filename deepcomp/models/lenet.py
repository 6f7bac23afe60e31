"""LeNets, the reference points of Deep Compression (Han et al. 2016, Table 1).

- ``lenet300``: LeNet-300-100, a 784-300-100-10 multilayer perceptron, 266,610 parameters.
- ``lenet5``: the Caffe LeNet-5 the paper used: conv 5x5x20, max-pool, conv 5x5x50, max-pool,
  fc 500, fc 10; 431,080 parameters on 28x28 inputs.
Both take the input size and class count as arguments, so ``lenet300`` also runs on 8x8 digits.
"""
from torch import nn
import torch.nn.functional as F

from ._registry import register_model

__all__ = ["LeNet300", "LeNet5", "lenet300", "lenet5"]


class LeNet300(nn.Module):
    def __init__(self, num_classes=10, in_chans=1, img_size=28, hidden=(300, 100)):
        super().__init__()
        self.fc1 = nn.Linear(in_chans * img_size * img_size, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x):
        x = x.flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    def __init__(self, num_classes=10, in_chans=1, img_size=28):
        super().__init__()
        side = ((img_size - 4) // 2 - 4) // 2
        if side < 1:
            raise TypeError(f"lenet5 needs inputs of at least 16x16 pixels, got {img_size}")
        self.conv1 = nn.Conv2d(in_chans, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


@register_model(input_size=(1, 28, 28), num_params=266_610, family="lenet")
def lenet300(num_classes=10, in_chans=1, img_size=28):
    return LeNet300(num_classes, in_chans, img_size)


@register_model(input_size=(1, 28, 28), num_params=431_080, family="lenet")
def lenet5(num_classes=10, in_chans=1, img_size=28):
    return LeNet5(num_classes, in_chans, img_size)
