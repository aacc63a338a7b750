"""Image classifiers: torchvision ResNets with a new ``fc`` head (seed 002 used ``resnet18`` with ``fc`` → 4).

Input: ``(B, in_channels, H, W)`` float, already normalised by the caller (H, W ≥ 32; seed 002 used 224×224).
Output: logits ``(B, num_classes)``; apply softmax for probabilities.
"""

from __future__ import annotations

import torchvision.models as tvm
from torch import nn

from pneumoview.inference import backbones
from pneumoview.inference._registry import check_bool, check_choice, check_float, check_int, register


def _resnet_classifier(
    arch: str, *, num_classes: int, in_channels: int, dropout: float, pretrained: bool
) -> tvm.ResNet:
    check_int("num_classes", num_classes, minimum=2)
    check_choice("in_channels", in_channels, (1, 3))
    check_float("dropout", dropout, minimum=0.0, maximum=0.99)
    check_bool("pretrained", pretrained)
    model = backbones.resnet(arch, in_channels=in_channels, pretrained=pretrained)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if dropout > 0:
        # Dropout goes after the parameter-free pooling rather than into ``fc``, so the state-dict keys stay
        # ``fc.weight`` / ``fc.bias`` (as in torchvision and seed 002) whatever the dropout.
        model.avgpool = nn.Sequential(model.avgpool, nn.Dropout(p=dropout))
    return model


@register("resnet18_classifier", task="classify")
def resnet18_classifier(
    *, num_classes: int, in_channels: int = 3, dropout: float = 0.0, pretrained: bool = False
) -> tvm.ResNet:
    """ResNet-18 classifier (seed 002's final model: ``num_classes=4``, 3 channels, ImageNet start).

    Args:
        num_classes: number of output logits (≥ 2).
        in_channels: 3, or 1 to replace ``conv1`` by a 1-channel 7×7 stride-2 convolution without bias (the
            RGB kernels summed when ``pretrained``).
        dropout: dropout probability before ``fc`` (0 disables it; the state-dict keys do not change).
        pretrained: start from torchvision's ImageNet weights, read from the torch hub cache only; raises
            :class:`~pneumoview.errors.ModelLoadError` when the file is not there.
    """
    return _resnet_classifier(
        "resnet18", num_classes=num_classes, in_channels=in_channels, dropout=dropout, pretrained=pretrained
    )


@register("resnet34_classifier", task="classify")
def resnet34_classifier(
    *, num_classes: int, in_channels: int = 3, dropout: float = 0.0, pretrained: bool = False
) -> tvm.ResNet:
    """ResNet-34 classifier; arguments as :func:`resnet18_classifier`."""
    return _resnet_classifier(
        "resnet34", num_classes=num_classes, in_channels=in_channels, dropout=dropout, pretrained=pretrained
    )


@register("resnet50_classifier", task="classify")
def resnet50_classifier(
    *, num_classes: int, in_channels: int = 3, dropout: float = 0.0, pretrained: bool = False
) -> tvm.ResNet:
    """ResNet-50 classifier; arguments as :func:`resnet18_classifier`."""
    return _resnet_classifier(
        "resnet50", num_classes=num_classes, in_channels=in_channels, dropout=dropout, pretrained=pretrained
    )
