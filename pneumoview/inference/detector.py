"""Faster R-CNN detectors (seed 003: torchvision ``fasterrcnn_resnet50_fpn`` with a 2-class box predictor).

Input: a list of float tensors ``(3, H, W)`` in ``[0, 1]`` (a grey image copied to 3 channels by the caller); the
model's own ``GeneralizedRCNNTransform`` normalises with ``image_mean``/``image_std`` and resizes so the short side
is ``min_size`` (long side at most ``max_size``). Output in eval mode: torchvision's list of dicts with ``boxes``
``(N, 4)`` float ``xyxy`` in the **input tensor's pixel frame** (torchvision maps them back), ``labels`` ``(N,)``
int64 (1 = opacity; 0 is background and never returned) and ``scores`` ``(N,)`` in ``[0, 1]``.

In training mode the model takes ``(images, targets)`` with ``targets[i] = {"boxes": (K, 4) xyxy float,
"labels": (K,) int64}`` and returns a dict of losses. A negative image has **empty** boxes, shape ``(0, 4)``;
seed 003 gave negatives a full-frame box labelled as pneumonia, a bug we do not repeat.

Arguments that define the model (record them in the manifest): ``num_classes``, ``min_size``, ``max_size``,
``image_mean``, ``image_std``, ``frozen_batchnorm`` and the ``box_*`` post-processing settings. ``pretrained``
and ``trainable_backbone_layers`` only choose the starting weights and what trains. Two defaults follow
``pretrained`` as in torchvision: ``image_mean``/``image_std`` (ImageNet values, else grey 0.5/0.25) and
``frozen_batchnorm`` (``FrozenBatchNorm2d``, whose state dict lacks ``num_batches_tracked``, else
``BatchNorm2d``). So a model trained with ``pretrained=True`` is rebuilt for inference with ``pretrained=False,
frozen_batchnorm=True, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from pneumoview.inference import backbones
from pneumoview.inference._registry import check_bool, check_float, check_floats, check_int, register

GREY_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
GREY_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _common_kwargs(
    *,
    num_classes: int,
    min_size: int,
    max_size: int,
    pretrained: bool,
    box_detections_per_img: int,
    box_score_thresh: float,
    box_nms_thresh: float,
    image_mean: Sequence[float] | None,
    image_std: Sequence[float] | None,
    box_batch_size_per_image: int = 512,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
) -> dict[str, object]:
    check_int("num_classes", num_classes, minimum=2)
    check_int("min_size", min_size, minimum=32)
    check_int("max_size", max_size, minimum=min_size)
    check_bool("pretrained", pretrained)
    check_int("box_detections_per_img", box_detections_per_img, minimum=1)
    check_float("box_score_thresh", box_score_thresh, minimum=0.0, maximum=1.0)
    check_float("box_nms_thresh", box_nms_thresh, minimum=0.0, maximum=1.0)
    check_int("box_batch_size_per_image", box_batch_size_per_image, minimum=1)
    check_int("rpn_pre_nms_top_n_train", rpn_pre_nms_top_n_train, minimum=1)
    check_int("rpn_post_nms_top_n_train", rpn_post_nms_top_n_train, minimum=1)
    mean = check_floats("image_mean", image_mean, 3) if image_mean is not None else None
    std = check_floats("image_std", image_std, 3) if image_std is not None else None
    if std is not None and min(std) <= 0:
        raise ValueError(f"image_std must be positive, got {list(std)}")
    return {
        "num_classes": num_classes,
        "min_size": min_size,
        "max_size": max_size,
        "image_mean": list(mean or (IMAGENET_MEAN if pretrained else GREY_MEAN)),
        "image_std": list(std or (IMAGENET_STD if pretrained else GREY_STD)),
        "box_detections_per_img": box_detections_per_img,
        "box_score_thresh": float(box_score_thresh),
        "box_nms_thresh": float(box_nms_thresh),
        "box_batch_size_per_image": box_batch_size_per_image,
        "rpn_pre_nms_top_n_train": rpn_pre_nms_top_n_train,
        "rpn_post_nms_top_n_train": rpn_post_nms_top_n_train,
    }


def _trainable_layers(value: int | None, *, pretrained: bool, maximum: int, default: int) -> int:
    """torchvision's rule: a backbone trained from scratch trains every layer whatever ``value`` says."""
    if value is not None:
        check_int("trainable_backbone_layers", value, minimum=0, maximum=maximum)
    if not pretrained:
        return maximum
    return default if value is None else value


def _norm_layer(frozen_batchnorm: bool | None, pretrained: bool) -> type[nn.Module]:
    # torchvision's recipe: batch norm statistics are frozen only under ImageNet weights.
    frozen = pretrained if frozen_batchnorm is None else check_bool("frozen_batchnorm", frozen_batchnorm)
    return FrozenBatchNorm2d if frozen else nn.BatchNorm2d


def _check_fpn(
    fpn_levels: Sequence[int],
    fpn_channels: int,
    anchor_sizes: Sequence[int] | None,
    anchor_ratios: Sequence[float],
) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...], tuple[float, ...]]:
    """Validated FPN stages, anchor sizes (one tuple per pyramid level) and aspect ratios."""
    if isinstance(fpn_levels, str) or not isinstance(fpn_levels, Sequence) or not fpn_levels:
        raise ValueError(f"fpn_levels must be a list of ResNet stages 1-4, got {fpn_levels!r}")
    levels = tuple(check_int(f"fpn_levels[{i}]", v, minimum=1, maximum=4) for i, v in enumerate(fpn_levels))
    if list(levels) != sorted(set(levels)):
        raise ValueError(f"fpn_levels must be increasing without repeats, got {list(levels)}")
    check_int("fpn_channels", fpn_channels, minimum=8)
    n_maps = len(levels) + 1  # the stages plus LastLevelMaxPool's extra level
    if anchor_sizes is None:
        # torchvision's rule: an anchor of 8 strides per level (stage k has stride 2**(k + 1)).
        sizes = tuple(8 * 2 ** (levels[0] + 1 + i) for i in range(n_maps))
    else:
        if (
            isinstance(anchor_sizes, str)
            or not isinstance(anchor_sizes, Sequence)
            or len(anchor_sizes) != n_maps
        ):
            raise ValueError(
                f"anchor_sizes must list {n_maps} sizes in pixels (one per pyramid level: the {len(levels)} "
                f"stages of fpn_levels plus the pooled level), got {anchor_sizes!r}"
            )
        sizes = tuple(check_int(f"anchor_sizes[{i}]", v, minimum=1) for i, v in enumerate(anchor_sizes))
    if isinstance(anchor_ratios, str) or not isinstance(anchor_ratios, Sequence) or not anchor_ratios:
        raise ValueError(f"anchor_ratios must be a list of height/width ratios, got {anchor_ratios!r}")
    ratios = tuple(
        check_float(f"anchor_ratios[{i}]", r, minimum=0.05, maximum=20.0) for i, r in enumerate(anchor_ratios)
    )
    return levels, tuple((s,) for s in sizes), ratios


def _build_resnet_fpn(
    arch: str,
    *,
    trainable_backbone_layers: int | None,
    frozen_batchnorm: bool | None,
    fpn_levels: Sequence[int],
    fpn_channels: int,
    anchor_sizes: Sequence[int] | None,
    anchor_ratios: Sequence[float],
    **common_args: Any,
) -> FasterRCNN:
    """The ResNet FPN builders' body: their arguments (see :func:`fasterrcnn_resnet50_fpn`) → the model.

    Built like torchvision's ``resnet_fpn_backbone`` (same freezing rule, ``LastLevelMaxPool``), with the FPN
    width and the stages it reads as arguments; with the default FPN and anchors, exactly torchvision's module tree.
    """
    common = _common_kwargs(**common_args)
    pretrained = common_args["pretrained"]
    norm = _norm_layer(frozen_batchnorm, pretrained)
    levels, sizes, ratios = _check_fpn(fpn_levels, fpn_channels, anchor_sizes, anchor_ratios)
    layers = _trainable_layers(trainable_backbone_layers, pretrained=pretrained, maximum=5, default=3)
    body = backbones.resnet(arch, in_channels=3, pretrained=False, norm_layer=norm)
    if pretrained:
        state = backbones.imagenet_state_dict(arch)
        body.load_state_dict(state)  # FrozenBatchNorm2d drops num_batches_tracked itself
    to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:layers] + (["bn1"] if layers == 5 else [])
    for name, parameter in body.named_parameters():
        if not any(name.startswith(prefix) for prefix in to_train):
            parameter.requires_grad_(False)
    stage2 = body.inplanes // 8  # channels of layer1's output (64 for ResNet-18/34, 256 for ResNet-50+)
    backbone = BackboneWithFPN(
        body,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(levels)},
        in_channels_list=[stage2 * 2 ** (k - 1) for k in levels],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(sizes, (ratios,) * len(sizes))
    return FasterRCNN(backbone, rpn_anchor_generator=anchors, **common)  # type: ignore[arg-type]


@register("fasterrcnn_resnet50_fpn", task="detect")
def fasterrcnn_resnet50_fpn(
    *,
    num_classes: int = 2,
    min_size: int = 512,
    max_size: int = 1024,
    trainable_backbone_layers: int | None = None,
    pretrained: bool = False,
    box_detections_per_img: int = 100,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    frozen_batchnorm: bool | None = None,
    fpn_levels: Sequence[int] = (1, 2, 3, 4),
    fpn_channels: int = 256,
    anchor_sizes: Sequence[int] | None = None,
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    box_batch_size_per_image: int = 512,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
) -> FasterRCNN:
    """Seed 003's detector: Faster R-CNN, ResNet-50 FPN backbone, box predictor ``FastRCNNPredictor(1024, 2)``.

    The module tree and state-dict keys are those of
    ``torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)``.
    Seed 003 started from COCO weights and trained only the box predictor; that needs COCO weights we do not ship,
    so ``pretrained=True`` here means an ImageNet ResNet-50 backbone.

    Args:
        num_classes: classes including background (2 = background + opacity).
        min_size, max_size: the internal resize, in pixels (short side / long-side cap); 512/1024 by default.
        trainable_backbone_layers: 0–5 trainable ResNet stages when ``pretrained`` (default 3); ignored from
            scratch, where every layer trains.
        pretrained: ImageNet backbone from the torch hub cache (never downloaded; ``ModelLoadError`` when absent).
        box_detections_per_img, box_score_thresh, box_nms_thresh: torchvision's post-processing settings.
        box_batch_size_per_image, rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train: training-time sampling
            (RoIs sampled per image for the box head; proposals kept before/after the RPN's NMS). Smaller values
            train faster on a CPU; inference does not use them.
        fpn_levels: the ResNet stages (1-4, strides 4-32) that feed the FPN; a max-pooled level is added on top.
        fpn_channels: FPN width (torchvision: 256).
        anchor_sizes: one anchor size in input pixels per pyramid level (``len(fpn_levels) + 1`` values); default
            8 strides per level, torchvision's 32-512 for the default levels.
        anchor_ratios: anchor height/width ratios, used on every level (torchvision: 0.5, 1, 2).
        image_mean, image_std: 3 values each, for inputs in [0, 1]; default grey 0.5/0.25, or ImageNet's when
            ``pretrained``.
        frozen_batchnorm: ``FrozenBatchNorm2d`` in the backbone instead of ``BatchNorm2d``; defaults to
            ``pretrained``.
    """
    return _build_resnet_fpn("resnet50", **locals())


@register("fasterrcnn_resnet18_fpn", task="detect")
def fasterrcnn_resnet18_fpn(
    *,
    num_classes: int = 2,
    min_size: int = 512,
    max_size: int = 1024,
    trainable_backbone_layers: int | None = None,
    pretrained: bool = False,
    box_detections_per_img: int = 100,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    frozen_batchnorm: bool | None = None,
    fpn_levels: Sequence[int] = (1, 2, 3, 4),
    fpn_channels: int = 256,
    anchor_sizes: Sequence[int] | None = None,
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    box_batch_size_per_image: int = 512,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
) -> FasterRCNN:
    """Faster R-CNN with a ResNet-18 FPN backbone: a lighter seed-003 architecture.

    Arguments as :func:`fasterrcnn_resnet50_fpn`; from scratch all 5 backbone stages train.
    """
    return _build_resnet_fpn("resnet18", **locals())


@register("fasterrcnn_mobilenet_v3_fpn", task="detect")
def fasterrcnn_mobilenet_v3_fpn(
    *,
    num_classes: int = 2,
    min_size: int = 512,
    max_size: int = 1024,
    trainable_backbone_layers: int | None = None,
    pretrained: bool = False,
    box_detections_per_img: int = 100,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    frozen_batchnorm: bool | None = None,
    box_batch_size_per_image: int = 512,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_train: int = 2000,
) -> FasterRCNN:
    """Faster R-CNN with a MobileNetV3-Large FPN backbone: the light detector.

    Built like ``torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn`` (same anchors, FPN on the last
    two stages, ``rpn_score_thresh=0.05``). Arguments as :func:`fasterrcnn_resnet50_fpn`, except that
    ``trainable_backbone_layers`` ranges over 0–6 (default 3 when ``pretrained``).
    """
    common = _common_kwargs(
        num_classes=num_classes,
        min_size=min_size,
        max_size=max_size,
        pretrained=pretrained,
        box_detections_per_img=box_detections_per_img,
        box_score_thresh=box_score_thresh,
        box_nms_thresh=box_nms_thresh,
        image_mean=image_mean,
        image_std=image_std,
        box_batch_size_per_image=box_batch_size_per_image,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
    )
    norm = _norm_layer(frozen_batchnorm, pretrained)
    layers = _trainable_layers(trainable_backbone_layers, pretrained=pretrained, maximum=6, default=3)
    backbone = mobilenet_backbone(
        backbone_name="mobilenet_v3_large", weights=None, fpn=True, norm_layer=norm, trainable_layers=layers
    )
    if pretrained:
        state = backbones.imagenet_state_dict("mobilenet_v3_large")
        prefix = "features."
        backbone.body.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    anchor_sizes = ((32, 64, 128, 256, 512),) * 3
    anchors = AnchorGenerator(anchor_sizes, ((0.5, 1.0, 2.0),) * len(anchor_sizes))
    return FasterRCNN(backbone, rpn_anchor_generator=anchors, rpn_score_thresh=0.05, **common)  # type: ignore[arg-type]
