"""The CIFAR ResNets of He et al. 2016 (section 4.2): 6n+2 layers, 16/32/64 channels.

Shortcuts are "option A": when the shape changes, the input is subsampled with stride 2 and
zero-padded in channels, so shortcuts have no parameters. Parameter names follow Idelbayev's
widely used implementation, so ``resnet20-12fca82f.th`` loads once its ``module.`` prefix goes.
"""
from torch import nn
import torch.nn.functional as F

from ._registry import register_model
from .resnet import BasicBlock

__all__ = ["CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


class _ShortcutA(nn.Module):
    def __init__(self, planes):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


def _option_a(in_planes, planes, stride):
    """The shortcut of He et al.'s option A: the input itself, or subsampled and padded."""
    return nn.Identity() if stride == 1 and in_planes == planes else _ShortcutA(planes)


class CifarResNet(nn.Module):
    def __init__(self, depth, num_classes=10, in_chans=3, img_size=32):
        super().__init__()
        if (depth - 2) % 6:
            raise TypeError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes, planes, blocks, stride):
        layers = [BasicBlock(in_planes, planes, stride, _option_a)]
        layers += [BasicBlock(planes, planes, 1, _option_a) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


# Parameter counts: He et al. 2016, Table 6 gives 0.27M, 0.46M, 0.66M, 0.85M, 1.7M; exact values
# as counted by Idelbayev's reference implementation (README "Total number of params").
@register_model(input_size=(3, 32, 32), num_params=269_722, family="resnet_cifar")
def resnet20(num_classes=10, in_chans=3, img_size=32):
    return CifarResNet(20, num_classes, in_chans, img_size)


@register_model(input_size=(3, 32, 32), num_params=464_154, family="resnet_cifar")
def resnet32(num_classes=10, in_chans=3, img_size=32):
    return CifarResNet(32, num_classes, in_chans, img_size)


@register_model(input_size=(3, 32, 32), num_params=658_586, family="resnet_cifar")
def resnet44(num_classes=10, in_chans=3, img_size=32):
    return CifarResNet(44, num_classes, in_chans, img_size)


@register_model(input_size=(3, 32, 32), num_params=853_018, family="resnet_cifar")
def resnet56(num_classes=10, in_chans=3, img_size=32):
    return CifarResNet(56, num_classes, in_chans, img_size)


@register_model(input_size=(3, 32, 32), num_params=1_727_962, family="resnet_cifar")
def resnet110(num_classes=10, in_chans=3, img_size=32):
    return CifarResNet(110, num_classes, in_chans, img_size)
