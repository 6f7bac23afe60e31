"""ImageNet-style ResNets adapted to 32x32 inputs, as most CIFAR training scripts use them:
a 3x3 stride-1 stem, no max-pool, 1x1 convolution shortcuts (He et al. 2016, option B)."""
from torch import nn
import torch.nn.functional as F

from ._registry import register_model

__all__ = ["ResNet", "resnet18", "resnet34", "resnet50"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection, the block of these
    ResNets and of the CIFAR ResNets (deepcomp.models.resnet_cifar); ``shortcut(in_planes,
    planes, stride)`` makes the residual path (here option B, a 1x1 projection where the shape
    changes)."""
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, shortcut=None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = (shortcut or _projection)(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.shortcut = _projection(in_planes, planes * 4, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


def _projection(in_planes, out_planes, stride):
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
                         nn.BatchNorm2d(out_planes))


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10, in_chans=3, img_size=32):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(block, 64, num_blocks[0], 1)
        self.layer2 = self._stage(block, 128, num_blocks[1], 2)
        self.layer3 = self._stage(block, 256, num_blocks[2], 2)
        self.layer4 = self._stage(block, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _stage(self, block, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.linear(x)


# Counts for 10 classes, as printed by the common CIFAR scripts (e.g. kuangliu/pytorch-cifar).
@register_model(input_size=(3, 32, 32), num_params=11_173_962, family="resnet")
def resnet18(num_classes=10, in_chans=3, img_size=32):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_chans, img_size)


@register_model(input_size=(3, 32, 32), num_params=21_282_122, family="resnet")
def resnet34(num_classes=10, in_chans=3, img_size=32):
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_chans, img_size)


@register_model(input_size=(3, 32, 32), num_params=23_520_842, family="resnet")
def resnet50(num_classes=10, in_chans=3, img_size=32):
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_chans, img_size)
