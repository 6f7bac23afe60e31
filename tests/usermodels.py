"""A user's own models, written as users write them: none is in deepcomp's registry.

The tests name them as ``usermodels:FACTORY`` (this folder is on the test's Python path) or
hand the module objects to the Python API. All take scikit-learn's 8x8 digits (1 channel).
"""
import torch
from torch import nn


class TinyNet(nn.Module):
    """conv-BN-ReLU twice, a pool and a classifier; ``width`` is the user's own argument."""

    def __init__(self, num_classes=10, in_chans=1, width=8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.classifier = nn.Linear(8 * width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def tiny_net(num_classes=10, in_chans=1, width=8):
    return TinyNet(num_classes, in_chans, width)


class Unusual(nn.Module):
    """Layers the registry never builds: a conv without batch norm (with a bias), a grouped and
    a depthwise conv inside nested Sequentials, a 1x1 conv, Linear layers without bias, and two
    layers that share (tie) one weight."""

    def __init__(self, num_classes=10, in_chans=1):
        super().__init__()
        self.stem = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.body = nn.Sequential(
            nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False),
                          nn.BatchNorm2d(16), nn.ReLU()),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.ReLU()),
            nn.Conv2d(16, 16, 1))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc1 = nn.Linear(64, 32, bias=False)
        self.fc2 = nn.Linear(32, 32, bias=False)
        self.fc3 = nn.Linear(32, 32, bias=False)
        self.fc3.weight = self.fc2.weight              # tied: one tensor, two names
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.pool(torch.relu(self.body(torch.relu(self.stem(x))))).flatten(1)
        return self.head(torch.relu(self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))))


class TimmStyle(nn.Module):
    """The shape of a timm model: ``conv_stem``/``bn1``/``blocks``/``conv_head``/``classifier``,
    ``forward_features`` and ``forward_head``, a ``default_cfg``, SiLU and squeeze-excitation."""

    def __init__(self, num_classes=1000, in_chans=3, drop_rate=0.0):
        super().__init__()
        self.num_classes, self.drop_rate = num_classes, drop_rate
        self.default_cfg = {"input_size": (in_chans, 8, 8), "classifier": "classifier"}
        self.conv_stem = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(*[nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.SiLU(),
            SqueezeExcite(16), nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
            for _ in range(2)])
        self.conv_head = nn.Conv2d(16, 32, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, num_classes)

    def forward_features(self, x):
        x = nn.functional.silu(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        return nn.functional.silu(self.bn2(self.conv_head(x)))

    def forward_head(self, x):
        x = self.global_pool(x).flatten(1)
        return self.classifier(nn.functional.dropout(x, self.drop_rate, self.training))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


class SqueezeExcite(nn.Module):
    def __init__(self, chans, reduced=4):
        super().__init__()
        self.conv_reduce = nn.Conv2d(chans, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, chans, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.conv_expand(torch.relu(self.conv_reduce(s))))


def timm_style_net(pretrained=False, **kwargs):
    """A factory as timm writes them: ``num_classes`` and ``in_chans`` arrive in ``**kwargs``."""
    if pretrained:
        raise ValueError("no pretrained weights here")
    return TimmStyle(**kwargs)
