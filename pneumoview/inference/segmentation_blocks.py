"""Building blocks of the segmentation models: encoders with skip taps, U-Net decoder blocks, scSE attention.

Feature maps are ``(B, C, H, W)``; "stride s" means ``H / s × W / s`` for an ``H × W`` input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from pneumoview.inference import backbones

# Output channels of ResNet's relu (stride 2), layer1 (4), layer2 (8), layer3 (16).
_RESNET_CHANNELS = {
    "resnet18": (64, 64, 128, 256),
    "resnet34": (64, 64, 128, 256),
    "resnet50": (64, 256, 512, 1024),
    "resnet101": (64, 256, 512, 1024),
    "resnet152": (64, 256, 512, 1024),
}
# Seed 001 tapped VGG19 at block1_conv2, block2_conv2, block3_conv3, block4_conv3 and block5_conv3.
_VGG_SEED_CONVS = (2, 2, 3, 3, 3)
_VGG_CHANNELS = (64, 128, 256, 512, 512)


class FeatureEncoder(nn.Module):
    """A torchvision backbone cut at its taps; ``forward`` returns the tapped maps, shallowest first.

    With ``include_input`` the input itself is the first map (the stride-1 skip of a U-Net on ResNet/DenseNet).
    ``channels`` lists the channel count of each returned map.
    """

    def __init__(
        self, backbone: nn.Module, taps: Mapping[str, str], channels: Sequence[int], *, include_input: bool
    ) -> None:
        super().__init__()
        # FX tracing keeps only the modules the taps need (e.g. ResNet layer4 and fc are dropped).
        self.body = create_feature_extractor(backbone, return_nodes=dict(taps))
        self.names = tuple(taps.values())
        self.include_input = include_input
        self.channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.body(x)
        maps = [out[name] for name in self.names]
        return [x, *maps] if self.include_input else maps


def unet_encoder(encoder: str, *, in_channels: int, pretrained: bool, vgg_batchnorm: bool) -> FeatureEncoder:
    """Taps at strides 1, 2, 4, 8 and the bridge at 16 for ``encoder`` (a ResNet, DenseNet-121 or VGG)."""
    if encoder in backbones.RESNETS:
        model = backbones.resnet(encoder, in_channels=in_channels, pretrained=pretrained)
        taps = {"relu": "s2", "layer1": "s4", "layer2": "s8", "layer3": "s16"}
        return FeatureEncoder(model, taps, (in_channels, *_RESNET_CHANNELS[encoder]), include_input=True)
    if encoder == "densenet121":
        model = backbones.densenet121(in_channels=in_channels, pretrained=pretrained)
        # Keras conv1/relu, pool2_relu, pool3_relu, pool4_relu: the ReLU inside each transition, before its conv.
        taps = {
            "features.relu0": "s2",
            "features.transition1.relu": "s4",
            "features.transition2.relu": "s8",
            "features.transition3.relu": "s16",
        }
        return FeatureEncoder(model, taps, (in_channels, 64, 256, 512, 1024), include_input=True)
    if encoder in backbones.VGGS:
        features = backbones.vgg_features(
            encoder, batch_norm=vgg_batchnorm, in_channels=in_channels, pretrained=pretrained
        )
        indices = backbones.vgg_tap_indices(features, _VGG_SEED_CONVS)
        taps = {str(i): name for i, name in zip(indices, ("s1", "s2", "s4", "s8", "s16"), strict=True)}
        return FeatureEncoder(features, taps, _VGG_CHANNELS, include_input=False)
    raise ValueError(f"unknown encoder {encoder!r}")


def deeplab_encoder(encoder: str, *, in_channels: int, pretrained: bool) -> FeatureEncoder:
    """ResNet taps for DeepLabV3+: ``layer1`` (stride 4, low level) and ``layer3`` (stride 16, high level)."""
    model = backbones.resnet(encoder, in_channels=in_channels, pretrained=pretrained)
    channels = _RESNET_CHANNELS[encoder]
    return FeatureEncoder(
        model, {"layer1": "low", "layer3": "high"}, (channels[1], channels[3]), include_input=False
    )


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 convolution (no bias: the batch norm has one) → BatchNorm → ReLU, size-preserving."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DecoderBlock(nn.Module):
    """Seed 001's ``decoder_block``: 2×2 stride-2 transposed conv → concat skip → (conv3×3 → BN → ReLU) ×2."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = nn.Sequential(
            conv_bn_relu(out_channels + skip_channels, out_channels), conv_bn_relu(out_channels, out_channels)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-and-excitation (scSE; Roy, Navab & Wachinger, MICCAI 2018).

    * cSE (channel): global average pool → FC(C → C/r) → ReLU → FC(C/r → C) → sigmoid, one weight per channel.
    * sSE (spatial): 1×1 conv (C → 1) → sigmoid, one weight per pixel.
    * output: ``x·cSE + x·sSE`` (``mode="add"``) or ``max(x·cSE, x·sSE)`` (``mode="max"``); same shape as ``x``.

    The FCs are 1×1 convolutions on the pooled ``(B, C, 1, 1)`` vector. ``reduction`` (r) defaults to 2, the
    ratio of seed 001's channel-only block (``Dense(C // 2)``).
    """

    def __init__(self, channels: int, reduction: int = 2, mode: str = "add") -> None:
        super().__init__()
        if mode not in ("add", "max"):
            raise ValueError(f"scSE mode must be 'add' or 'max', got {mode!r}")
        hidden = max(1, channels // reduction)
        self.mode = mode
        self.cse = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, kernel_size=1),
            nn.Sigmoid(),
        )
        self.sse = nn.Sequential(nn.Conv2d(channels, 1, kernel_size=1), nn.Sigmoid())

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """cSE weights ``(B, C, 1, 1)`` in (0, 1)."""
        return self.cse(x)

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """sSE weights ``(B, 1, H, W)`` in (0, 1)."""
        return self.sse(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        by_channel = x * self.channel_gate(x)
        by_pixel = x * self.spatial_gate(x)
        return torch.maximum(by_channel, by_pixel) if self.mode == "max" else by_channel + by_pixel
