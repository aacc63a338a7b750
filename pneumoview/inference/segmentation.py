"""Segmentation models: seed 001's four ensemble members, re-built in PyTorch.

Every model maps ``(B, in_channels, H, W)`` float (normalised by the caller; seed 001 used ``x / 127.5 − 1`` on a
grey image copied to 3 channels at 128×128) to **logits** ``(B, 1, H, W)`` at the input's size: apply a sigmoid
for the opacity probability. Seed 001 had 2 softmax/sigmoid channels (background, opacity); one logit carries the
same information. H and W must be multiples of 32 (:func:`padded_size` gives the size to pad to).

Seed 001's members:

* model1 = ``unet(encoder="resnet152")``
* model2 = ``unet(encoder="densenet121")``
* model3 = ``scse_unet(encoder="vgg19")``
* model4 = ``deeplabv3plus(encoder="resnet152")``
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from pneumoview.inference import backbones
from pneumoview.inference._registry import check_bool, check_choice, check_int, register
from pneumoview.inference.segmentation_blocks import (
    SCSE,
    DecoderBlock,
    FeatureEncoder,
    conv_bn_relu,
    deeplab_encoder,
    unet_encoder,
)

SIZE_MULTIPLE = 32
UNET_ENCODERS: tuple[str, ...] = (*backbones.RESNETS, "densenet121", *backbones.VGGS)
SCSE_UNET_ENCODERS: tuple[str, ...] = backbones.VGGS
DEEPLAB_ENCODERS: tuple[str, ...] = backbones.RESNETS


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The smallest ``(height, width)`` at least as large whose sides are multiples of 32."""
    return (-(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE, -(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE)


def check_input(x: torch.Tensor, in_channels: int) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_channels, H, W)`` with H and W multiples of 32."""
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected input of shape (B, {in_channels}, H, W), got {tuple(x.shape)}")
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        ph, pw = padded_size(h, w)
        raise ValueError(
            f"segmentation input height and width must be multiples of {SIZE_MULTIPLE}, got {h}×{w} (H×W); "
            f"pad it to {ph}×{pw}"
        )


class UNet(nn.Module):
    """U-Net on a tapped encoder: 4 decoder blocks from the stride-16 bridge up to stride 1, then a 1×1 head.

    With ``attention_reduction`` set, an :class:`SCSE` block re-weights every skip and the bridge.
    """

    def __init__(
        self,
        encoder: FeatureEncoder,
        decoder_channels: Sequence[int],
        *,
        in_channels: int,
        attention_reduction: int | None = None,
        attention_mode: str = "add",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = encoder
        c, d = encoder.channels, tuple(decoder_channels)
        self.attention = (
            None
            if attention_reduction is None
            else nn.ModuleList(SCSE(ch, attention_reduction, attention_mode) for ch in c)
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(i, s, o) for i, s, o in zip((c[4], *d[:3]), (c[3], c[2], c[1], c[0]), d, strict=True)
        )
        self.head = nn.Conv2d(d[-1], 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        maps = self.encoder(x)
        if self.attention is not None:
            maps = [gate(m) for gate, m in zip(self.attention, maps, strict=True)]
        y = maps[-1]
        for block, skip in zip(self.decoder, reversed(maps[:-1]), strict=True):
            y = block(y, skip)
        return self.head(y)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ on a ResNet: ASPP on ``layer3`` (stride 16), fused with ``layer1`` (stride 4).

    Note: torchvision's ASPP has an image-pooling branch with batch norm on a 1×1 map, so training needs batches
    of at least 2 (as in seed 001, whose pooling branch also had batch norm).
    """

    def __init__(self, encoder: FeatureEncoder, *, in_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = encoder
        low_channels, high_channels = encoder.channels
        self.aspp = ASPP(high_channels, atrous_rates=[6, 12, 18], out_channels=256)
        self.low = nn.Sequential(
            nn.Conv2d(low_channels, 48, kernel_size=1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True)
        )
        # One ReLU per conv: seed 001 gave these convs a ReLU activation and then another ReLU layer.
        self.fuse = nn.Sequential(conv_bn_relu(256 + 48, 256), conv_bn_relu(256, 256))
        self.head = nn.Conv2d(256, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        low, high = self.encoder(x)
        high = F.interpolate(self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.head(self.fuse(torch.cat([high, self.low(low)], dim=1)))
        # Seed 001 upsampled ×4 and then applied the 1×1 head; both are linear and bilinear weights sum to 1, so
        # head-then-upsample gives the same logits with 256× less upsampling work.
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _check_common(encoder: str, encoders: Sequence[str], in_channels: int, pretrained: bool) -> None:
    check_choice("encoder", encoder, encoders)
    check_choice("in_channels", in_channels, (1, 3))
    check_bool("pretrained", pretrained)


def _check_decoder(decoder_channels: Sequence[int]) -> tuple[int, ...]:
    if (
        isinstance(decoder_channels, str)
        or not isinstance(decoder_channels, Sequence)
        or len(decoder_channels) != 4
    ):
        raise ValueError(f"decoder_channels must be a list of 4 integers, got {decoder_channels!r}")
    return tuple(check_int(f"decoder_channels[{i}]", c, minimum=1) for i, c in enumerate(decoder_channels))


@register("unet", task="segment")
def unet(
    *,
    encoder: str,
    in_channels: int = 3,
    pretrained: bool = False,
    decoder_channels: Sequence[int] = (512, 256, 128, 64),
    vgg_batchnorm: bool = True,
) -> UNet:
    """U-Net on a torchvision encoder (seed 001 model1: ``resnet152``, model2: ``densenet121``).

    Skips at strides 1, 2, 4 and 8 and the bridge at stride 16:

    * ResNet: the input (stride 1), ``relu`` after ``conv1`` (2), ``layer1`` (4), ``layer2`` (8), bridge
      ``layer3`` (16). Seed 001 took ResNet152's ``conv3_block4_out`` and ``conv4_block6_out``, mid-stage taps
      copied from a ResNet50 recipe; we use the end-of-stage outputs ``layer2`` and ``layer3``.
    * DenseNet-121: the input, ``features.relu0``, and the ReLU of ``transition1``/``2``/``3`` (= Keras
      ``conv1/relu``, ``pool2_relu``, ``pool3_relu``, bridge ``pool4_relu``, exactly seed 001's taps).
    * VGG: the taps of :func:`scse_unet`, without attention.

    Args:
        encoder: one of resnet18/34/50/101/152, densenet121, vgg11/13/16/19.
        in_channels: 3, or 1 (the first convolution adapted; RGB kernels summed when ``pretrained``).
        pretrained: ImageNet encoder from the torch hub cache (never downloaded; ``ModelLoadError`` if absent).
        decoder_channels: output channels of the 4 decoder blocks, deepest first (seed 001: 512, 256, 128, 64).
        vgg_batchnorm: VGG encoders only: use torchvision's ``vggNN_bn`` (default) or the plain ``vggNN``.
    """
    _check_common(encoder, UNET_ENCODERS, in_channels, pretrained)
    check_bool("vgg_batchnorm", vgg_batchnorm)
    if not vgg_batchnorm and encoder not in backbones.VGGS:
        raise ValueError(f"vgg_batchnorm=False applies to VGG encoders only, not {encoder}")
    decoder = _check_decoder(decoder_channels)
    enc = unet_encoder(encoder, in_channels=in_channels, pretrained=pretrained, vgg_batchnorm=vgg_batchnorm)
    return UNet(enc, decoder, in_channels=in_channels)


@register("scse_unet", task="segment")
def scse_unet(
    *,
    encoder: str,
    in_channels: int = 3,
    pretrained: bool = False,
    decoder_channels: Sequence[int] = (512, 256, 128, 64),
    vgg_batchnorm: bool = True,
    attention_reduction: int = 2,
    attention_mode: str = "add",
) -> UNet:
    """VGG U-Net with scSE attention on every skip and on the bridge (seed 001 model3: ``vgg19``).

    Taps (seed 001's Keras names → torchvision ``features`` ReLUs): ``block1_conv2`` (stride 1, 64 ch),
    ``block2_conv2`` (2, 128), ``block3_conv3`` (4, 256), ``block4_conv3`` (8, 512), bridge ``block5_conv3``
    (16, 512). Blocks with fewer convolutions (VGG-11/13) are tapped at their last one; on VGG-19 the conv3 taps
    are mid-block, as in the seed. By default the encoder is torchvision's batch-norm variant (``vgg19_bn``):
    seed 001 used Keras's plain VGG19 (``vgg_batchnorm=False``), which trains poorly from scratch.

    Seed 001 called its attention block ``spatial_attention`` but implemented channel squeeze-and-excitation
    only; this model uses concurrent spatial and channel SE (:class:`~.segmentation_blocks.SCSE`), which has
    the spatial map the name promised.

    Args:
        encoder: one of vgg11, vgg13, vgg16, vgg19.
        in_channels, pretrained, decoder_channels, vgg_batchnorm: as :func:`unet`.
        attention_reduction: the cSE bottleneck ratio r (hidden width C / r).
        attention_mode: ``"add"`` (x·cSE + x·sSE) or ``"max"`` (their element-wise maximum).
    """
    _check_common(encoder, SCSE_UNET_ENCODERS, in_channels, pretrained)
    check_bool("vgg_batchnorm", vgg_batchnorm)
    check_int("attention_reduction", attention_reduction, minimum=1)
    check_choice("attention_mode", attention_mode, ("add", "max"))
    decoder = _check_decoder(decoder_channels)
    enc = unet_encoder(encoder, in_channels=in_channels, pretrained=pretrained, vgg_batchnorm=vgg_batchnorm)
    return UNet(
        enc,
        decoder,
        in_channels=in_channels,
        attention_reduction=attention_reduction,
        attention_mode=attention_mode,
    )


@register("deeplabv3plus", task="segment")
def deeplabv3plus(*, encoder: str, in_channels: int = 3, pretrained: bool = False) -> DeepLabV3Plus:
    """DeepLabV3+ on a ResNet (seed 001 model4: ``resnet152``).

    High level: ``layer3`` (stride 16) → torchvision ``ASPP(atrous_rates=[6, 12, 18], out_channels=256)``
    (image pooling, 1×1 and three dilated 3×3 branches, 1×1 projection). Low level: ``layer1`` (stride 4) →
    1×1 conv 48 → BN → ReLU. ASPP output upsampled ×4 (bilinear), concatenated, [3×3 conv 256 → BN → ReLU] ×2,
    1×1 head, upsampled ×4 to the input size. Seed 001 tapped ResNet152's mid-stage ``conv4_block6_out`` and
    ``conv2_block2_out``; we use the end-of-stage ``layer3`` and ``layer1``, and one ReLU per conv (the seed
    applied two).

    Args:
        encoder: one of resnet18/34/50/101/152.
        in_channels, pretrained: as :func:`unet`.
    """
    _check_common(encoder, DEEPLAB_ENCODERS, in_channels, pretrained)
    enc = deeplab_encoder(encoder, in_channels=in_channels, pretrained=pretrained)
    return DeepLabV3Plus(enc, in_channels=in_channels)
