"""Torchvision backbones built without any download, optional ImageNet weights, and 1-channel input.

Every torchvision constructor here gets ``weights=None``. ImageNet weights (``pretrained=True``) are read only from
the torch hub cache (``<torch hub dir>/checkpoints/<file>``, the file torchvision itself would download); when the
file is not there a :class:`~pneumoview.errors.ModelLoadError` says how to get it in place. Nothing here opens a
network connection.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import vgg as tv_vgg

from pneumoview.errors import ModelLoadError

RESNETS: tuple[str, ...] = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
VGGS: tuple[str, ...] = ("vgg11", "vgg13", "vgg16", "vgg19")
_VGG_CFG = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}

# IMAGENET1K_V1 throughout: it is what torchvision's detection builders use for their backbones, and one
# family of files keeps the "copy this file into the cache" instructions simple.
_IMAGENET_WEIGHTS = {
    "resnet18": tvm.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": tvm.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": tvm.ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": tvm.ResNet152_Weights.IMAGENET1K_V1,
    "densenet121": tvm.DenseNet121_Weights.IMAGENET1K_V1,
    "vgg11": tvm.VGG11_Weights.IMAGENET1K_V1,
    "vgg13": tvm.VGG13_Weights.IMAGENET1K_V1,
    "vgg16": tvm.VGG16_Weights.IMAGENET1K_V1,
    "vgg19": tvm.VGG19_Weights.IMAGENET1K_V1,
    "vgg11_bn": tvm.VGG11_BN_Weights.IMAGENET1K_V1,
    "vgg13_bn": tvm.VGG13_BN_Weights.IMAGENET1K_V1,
    "vgg16_bn": tvm.VGG16_BN_Weights.IMAGENET1K_V1,
    "vgg19_bn": tvm.VGG19_BN_Weights.IMAGENET1K_V1,
    "mobilenet_v3_large": tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V1,
}
# torch.hub names its files "<name>-<sha256 prefix>.<ext>" and checks that prefix; so do we.
_HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
# Old DenseNet checkpoints use keys like "denselayer1.norm.1.weight"; torchvision renames them the same way.
_DENSENET_OLD_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def imagenet_checkpoint_path(arch: str) -> Path:
    """Where torchvision keeps the ImageNet weights of ``arch`` in the torch hub cache (it may not exist)."""
    url = _IMAGENET_WEIGHTS[arch].url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """The ImageNet state dict of torchvision's ``arch``, read from the torch hub cache only.

    Raises:
        ModelLoadError: the file is not in the cache (we never download it), is damaged, or cannot be read.
    """
    path = imagenet_checkpoint_path(arch)
    url = _IMAGENET_WEIGHTS[arch].url
    if not path.is_file():
        raise ModelLoadError(
            f"ImageNet weights for {arch} are not available offline ({path} does not exist); train from scratch "
            f"with pretrained=False or copy the file {path.name} (from {url}) into {path.parent}"
        )
    match = _HASH_IN_NAME.search(path.name)
    if match:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if not digest.hexdigest().startswith(match.group(1)):
            raise ModelLoadError(
                f"{path}: the ImageNet weights for {arch} are damaged (their sha256 does not start with "
                f"{match.group(1)}); delete the file and copy it again from {url}"
            )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(f"{path}: could not read the ImageNet weights for {arch} ({exc})") from exc
    if arch == "densenet121":
        for key in list(state):
            m = _DENSENET_OLD_KEY.match(key)
            if m:
                state[m.group(1) + m.group(2)] = state.pop(key)
    return state


def adapt_first_conv(conv: nn.Conv2d, in_channels: int, *, from_pretrained: bool) -> nn.Conv2d:
    """``conv`` rebuilt for ``in_channels`` inputs (same kernel, stride, padding and bias).

    With ``from_pretrained`` the RGB kernels are summed, so a grey image copied to 3 channels and the same grey
    image on 1 channel give identical activations. Otherwise the new kernel is initialised as torchvision
    initialises its convolutions (Kaiming normal, fan-out).
    """
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        if from_pretrained and in_channels == 1:
            new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
            if conv.bias is not None and new.bias is not None:
                new.bias.copy_(conv.bias)
        else:
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            if new.bias is not None:
                nn.init.zeros_(new.bias)
    return new


def resnet(
    arch: str, *, in_channels: int, pretrained: bool, norm_layer: Callable[..., nn.Module] | None = None
) -> tvm.ResNet:
    """torchvision ``arch`` (e.g. ``"resnet18"``), ImageNet weights when ``pretrained``, ``conv1`` adapted."""
    extra = {} if norm_layer is None else {"norm_layer": norm_layer}
    model: tvm.ResNet = getattr(tvm, arch)(weights=None, **extra)
    if pretrained:
        model.load_state_dict(imagenet_state_dict(arch))
    model.conv1 = adapt_first_conv(model.conv1, in_channels, from_pretrained=pretrained)
    return model


def densenet121(*, in_channels: int, pretrained: bool) -> tvm.DenseNet:
    """torchvision DenseNet-121, ImageNet weights when ``pretrained``, ``features.conv0`` adapted."""
    model = tvm.densenet121(weights=None)
    if pretrained:
        model.load_state_dict(imagenet_state_dict("densenet121"))
    model.features.conv0 = adapt_first_conv(model.features.conv0, in_channels, from_pretrained=pretrained)
    return model


def vgg_features(arch: str, *, batch_norm: bool, in_channels: int, pretrained: bool) -> nn.Sequential:
    """The convolutional part (``features``) of torchvision ``arch`` / ``arch_bn``, without the classifier.

    Building only ``features`` skips the ~120 M-parameter fully connected head that a U-Net never uses.
    """
    features = tv_vgg.make_layers(tv_vgg.cfgs[_VGG_CFG[arch]], batch_norm=batch_norm)
    for m in features.modules():  # the initialisation torchvision's VGG applies
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if pretrained:
        state = imagenet_state_dict(f"{arch}_bn" if batch_norm else arch)
        features.load_state_dict(
            {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
        )
    features[0] = adapt_first_conv(features[0], in_channels, from_pretrained=pretrained)
    return features


def vgg_tap_indices(features: nn.Sequential, convs_per_block: tuple[int, ...]) -> list[int]:
    """Indices in ``features`` of the ReLU after conv ``convs_per_block[b]`` of each block ``b`` (1-based convs).

    A block with fewer convolutions is tapped at its last one (VGG-11/13 blocks have only 1 or 2 convs).
    """
    relu_at: dict[tuple[int, int], int] = {}
    block, conv = 0, 0
    for i, m in enumerate(features):
        if isinstance(m, nn.Conv2d):
            conv += 1
        elif isinstance(m, nn.ReLU):
            relu_at[(block, conv)] = i
        elif isinstance(m, nn.MaxPool2d):
            block, conv = block + 1, 0
    taps = []
    for b, wanted in enumerate(convs_per_block):
        available = max(c for (blk, c) in relu_at if blk == b)
        taps.append(relu_at[(b, min(wanted, available))])
    return taps
