"""Training recipes: every hyperparameter of a run in one :class:`TrainConfig`, with named presets per family.

Presets (``--recipe``), kept as data in :data:`RECIPES` (one :class:`Recipe` each):

=========== ============ ======================================================================================
family      recipe       what
=========== ============ ======================================================================================
classifier  default      ResNet-18, 1 channel, 256 px, AdamW 1e-3 + cosine with 2 warm-up epochs, 40 epochs,
                         batch 32, label smoothing 0.05, full augmentation; rsna3 classes (from scratch)
classifier  seed002      seed 002: ResNet-18, 3 channels, centre crop 224, mean 0.55006141 / std 0.17962446,
                         SGD 1e-3 momentum 0.5 wd 1e-2, batch 128, 40 epochs, flip only; acse4 classes
detector    default      Faster R-CNN ResNet-18 FPN, 384 px, AdamW 2e-4 + cosine with 1 warm-up epoch,
                         24 epochs, batch 16, gradient clipping 10, full augmentation (from scratch)
detector    light        CPU-sized Faster R-CNN ResNet-18 FPN: 256 px, FPN of width 128 on stages 2-4 (strides
                         8-64), anchors 32-256 px with height/width ratios 0.7-2 (RSNA boxes are tall), 128 RoIs
                         and 500 proposals per training image, AdamW 3e-4 + cosine, 12 epochs, batch 8, gradient
                         clipping 10, full augmentation; about 6× less compute per image than ``default``
detector    seed003      seed 003: Faster R-CNN ResNet-50 FPN at 800 px, SGD 0.005 momentum 0.9 wd 5e-4,
                         StepLR(3, 0.1) after torchvision's 1/1000 linear warm-up, 5 epochs, batch 8, no
                         augmentation; negatives have **no** box (not seed 003's full-frame box)
segmenter   default      U-Net ResNet-18 (decoder 256-128-64-32), 1 channel, 256 px, AdamW 1e-3 + cosine with 2
                         warm-up epochs, 40 epochs, batch 16, loss 0.5·BCE + 0.5·soft IoU, full augmentation
segmenter   seed001      seed 001: 128 px, 3 channels scaled to [-1, 1], Adam 1e-4, batch 16, 20 epochs, loss
                         0.5·BCE + 0.5·soft IoU (smooth 1) on the opacity channel only (the seed included the
                         background channel, which inflates IoU), no augmentation, no schedule
=========== ============ ======================================================================================

The seeds started from ImageNet (001, 002) or COCO (003) weights; ``--imagenet`` starts from torchvision's ImageNet
weights where they are in the torch hub cache, and ``--init-from MODEL`` starts a ResNet backbone from a model
PneumoView trained before (the shipped detector starts from the shipped rsna3 classifier). Segmentation targets are the RSNA boxes filled in as masks, as in
seed 001.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from pneumoview.preprocess import InputSpec

FAMILIES = ("classifier", "detector", "segmenter")
TASK_OF_FAMILY = {"classifier": "classify", "detector": "detect", "segmenter": "segment"}
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "step", "constant")
AMP_MODES = ("auto", "bf16", "fp16", "off")
AUGMENTS = ("full", "flip", "none")

SEED002_MEAN = 0.55006141
SEED002_STD = 0.17962446
# Seed 001 ensemble members (builder:encoder); the default ensemble uses three light ones.
SEED001_MEMBERS = ("unet:resnet152", "unet:densenet121", "scse_unet:vgg19", "deeplabv3plus:resnet152")
DEFAULT_MEMBERS = ("unet:resnet18", "scse_unet:vgg11", "deeplabv3plus:resnet18")
LIGHT_DECODER = [256, 128, 64, 32]
# The light detector's architecture (builder arguments of fasterrcnn_resnet18_fpn), sized for 256-px inputs.
LIGHT_DETECTOR: dict[str, Any] = {
    "fpn_levels": [2, 3, 4],
    "fpn_channels": 128,
    "anchor_sizes": [32, 64, 128, 256],
    "anchor_ratios": [0.7, 1.0, 1.4, 2.0],
    "box_batch_size_per_image": 128,
    "rpn_pre_nms_top_n_train": 500,
    "rpn_post_nms_top_n_train": 500,
}


@dataclass
class TrainConfig:
    """Everything that defines one training run (recipe + command-line overrides).

    Sizes are in pixels (square inputs); ``lr`` is the peak learning rate; ``warmup_epochs`` may be fractional;
    ``warmup_steps``, when set, replaces it with torchvision's detection warm-up (``min(warmup_steps, steps per
    epoch - 1)`` optimiser steps, from ``warmup_factor`` to 1);
    ``step_size`` is in epochs; ``max_minutes`` caps the whole run's wall time (the schedule is shortened to fit
    after the first epoch); ``max_steps`` caps the optimiser steps per epoch (smoke tests); ``stop_after`` ends
    this session after that many epochs (the checkpoint can be resumed).
    """

    family: str
    recipe: str
    model_id: str
    builder: str
    builder_args: dict[str, Any] = field(default_factory=dict)
    size: int = 256
    channels: int = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    resize: str = "stretch"
    scheme: str | None = None
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.01
    warmup_steps: int | None = None
    step_size: int = 3
    gamma: float = 0.1
    epochs: int = 40
    batch_size: int = 16
    eval_batch_size: int | None = None
    accumulate: int = 1
    patience: int = 0
    augment: str = "full"
    balanced: bool = False
    label_smoothing: float = 0.0
    dropout: float = 0.0
    seg_bce_weight: float = 0.5
    grad_clip: float = 0.0
    imagenet: bool = False
    require_imagenet: bool = False
    init_from: str | None = None
    amp: str = "auto"
    channels_last: bool = True
    val_fraction: float = 0.2
    folds: int | None = None
    fold: int | None = None
    split_seed: int = 0
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    max_minutes: float | None = None
    max_steps: int | None = None
    stop_after: int | None = None
    limit: int | None = None
    version: str = "1.0.0"
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.family in FAMILIES, f"family must be one of {', '.join(FAMILIES)}"),
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}"),
            (self.amp in AMP_MODES, f"--amp must be one of {', '.join(AMP_MODES)}"),
            (self.augment in AUGMENTS, f"--augment must be one of {', '.join(AUGMENTS)}"),
            (self.lr > 0, "--lr must be positive"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.accumulate >= 1, "--accumulate must be at least 1"),
            (self.size >= 32, "--size must be at least 32 px"),
            (self.family != "segmenter" or self.size % 32 == 0, "segmenter --size must be a multiple of 32"),
            (self.channels in (1, 3), "--channels must be 1 or 3"),
            (self.workers >= 0, "--workers must be 0 or more"),
            (0.0 <= self.seg_bce_weight <= 1.0, "the BCE weight must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.input_spec  # noqa: B018 - validates size, channels, mean/std and resize now, not mid-run

    @property
    def task(self) -> str:
        return TASK_OF_FAMILY[self.family]

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec(
            size=(self.size, self.size),
            channels=self.channels,
            mean=tuple(self.mean),
            std=tuple(self.std),
            resize=self.resize,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for k in ("mean", "std"):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def member_builder(member: str) -> tuple[str, dict[str, Any]]:
    """``"unet:resnet34"`` → ``("unet", {"encoder": "resnet34"})``; a bare name has no encoder."""
    builder, _, encoder = member.partition(":")
    if not builder:
        raise ValueError(f"bad model {member!r}; write BUILDER or BUILDER:ENCODER, e.g. unet:resnet34")
    return builder, ({"encoder": encoder} if encoder else {})


def _segmenter_args(builder: str, encoder_args: dict[str, Any], light: bool) -> dict[str, Any]:
    args = dict(encoder_args)
    if light and builder in ("unet", "scse_unet"):
        args.setdefault("decoder_channels", list(LIGHT_DECODER))
    return args


def default_model_id(family: str, builder: str, builder_args: Mapping[str, Any], scheme: str | None) -> str:
    if family == "classifier":
        return f"{scheme or 'rsna3'}-classifier"
    if family == "detector":
        return "detector"
    encoder = builder_args.get("encoder")
    return f"seg-{builder}" + (f"-{encoder}" if encoder else "")


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """One named recipe: the :class:`TrainConfig` values it sets; a field left ``None`` keeps TrainConfig's default.

    ``warmup_steps`` replaces ``warmup_epochs`` with torchvision's detection warm-up (at most that many optimiser
    steps, inside the first epoch); ``light_decoder`` gives U-Net decoders :data:`LIGHT_DECODER`; ``members`` are
    the segmenters ``train ensemble`` trains with this recipe (``builder:encoder``).
    """

    family: str
    name: str
    builder: str
    size: int
    channels: int
    optimizer: str
    lr: float
    weight_decay: float
    scheduler: str
    warmup_epochs: float
    epochs: int
    batch_size: int
    augment: str
    builder_args: Mapping[str, Any] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: str | None = None
    scheme: str | None = None
    momentum: float | None = None
    step_size: int | None = None
    gamma: float | None = None
    warmup_factor: float | None = None
    warmup_steps: int | None = None
    eval_batch_size: int | None = None
    label_smoothing: float | None = None
    dropout: float | None = None
    grad_clip: float | None = None
    light_decoder: bool = False
    members: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        """The TrainConfig fields this recipe sets (a deep copy: a run may change its own values)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_SETTINGS}
        values["builder_args"] = dict(self.builder_args)
        return copy.deepcopy({k: v for k, v in values.items() if v is not None})


# Recipe fields that are not TrainConfig values (the family and name are passed on separately).
_NOT_SETTINGS = frozenset({"family", "name", "light_decoder", "members"})


# Detectors take 3-channel [0, 1] images (mean 0, std 1): the model normalises them itself.
RECIPES: tuple[Recipe, ...] = (
    Recipe(
        family="classifier", name="default", builder="resnet18_classifier", size=256, channels=1, scheme="rsna3",
        optimizer="adamw", lr=1e-3, weight_decay=0.05, scheduler="cosine", warmup_epochs=2, epochs=40,
        batch_size=32, augment="full", label_smoothing=0.05, dropout=0.2,
    ),
    Recipe(
        family="classifier", name="seed002", builder="resnet18_classifier", size=224, channels=3,
        mean=(SEED002_MEAN,), std=(SEED002_STD,), resize="center_crop", scheme="acse4", optimizer="sgd", lr=1e-3,
        momentum=0.5, weight_decay=1e-2, scheduler="constant", warmup_epochs=0, epochs=40, batch_size=128,
        augment="flip",
    ),
    Recipe(
        family="detector", name="default", builder="fasterrcnn_resnet18_fpn", size=384, channels=3, mean=(0.0,),
        std=(1.0,), optimizer="adamw", lr=2e-4, weight_decay=1e-4, scheduler="cosine", warmup_epochs=1, epochs=24,
        batch_size=16, augment="full", grad_clip=10.0,
    ),
    Recipe(
        family="detector", name="light", builder="fasterrcnn_resnet18_fpn", builder_args=LIGHT_DETECTOR, size=256,
        channels=3, mean=(0.0,), std=(1.0,), optimizer="adamw", lr=3e-4, weight_decay=1e-4, scheduler="cosine",
        warmup_epochs=1, epochs=12, batch_size=8, augment="full", grad_clip=10.0,
    ),
    Recipe(
        family="detector", name="seed003", builder="fasterrcnn_resnet50_fpn", size=800, channels=3, mean=(0.0,),
        std=(1.0,), optimizer="sgd", lr=0.005, momentum=0.9, weight_decay=5e-4, scheduler="step", step_size=3,
        gamma=0.1, warmup_epochs=1, warmup_factor=1e-3, warmup_steps=1000, epochs=5, batch_size=8, augment="none",
    ),
    Recipe(
        family="segmenter", name="default", builder="unet", builder_args={"encoder": "resnet18"}, size=256,
        channels=1, optimizer="adamw", lr=1e-3, weight_decay=1e-4, scheduler="cosine", warmup_epochs=2, epochs=40,
        batch_size=16, augment="full", light_decoder=True, members=DEFAULT_MEMBERS,
    ),
    Recipe(
        family="segmenter", name="seed001", builder="unet", builder_args={"encoder": "resnet152"}, size=128,
        channels=3, mean=(0.5,), std=(0.5,), optimizer="adam", lr=1e-4, weight_decay=0.0, scheduler="constant",
        warmup_epochs=0, epochs=20, batch_size=16, eval_batch_size=32, augment="none", members=SEED001_MEMBERS,
    ),
)  # fmt: skip


def find_recipe(family: str, name: str = "default") -> Recipe:
    """The recipe ``name`` of ``family``; ``ValueError`` naming the valid ones otherwise."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid: {', '.join(FAMILIES)}")
    names = [r.name for r in RECIPES if r.family == family]
    for r in RECIPES:
        if r.family == family and r.name == name:
            return r
    raise ValueError(f"unknown {family} recipe {name!r}; valid: {', '.join(names)}")


def _model_settings(preset: Recipe, model: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """``--model``: the builder (and a segmenter's encoder) that replace the recipe's."""
    builder, encoder_args = member_builder(model)
    if preset.family == "segmenter":
        return {"builder": builder, "builder_args": encoder_args or dict(base.get("builder_args", {}))}
    if encoder_args:
        raise ValueError(f"--model {model!r}: only segmenters take an encoder")
    return {"builder": builder}


def recipe(family: str, name: str = "default", *, model: str | None = None, **overrides: Any) -> TrainConfig:
    """The preset ``name`` for ``family`` with ``overrides`` applied (any :class:`TrainConfig` field; ``None``
    values are ignored, ``builder_args`` are merged into the recipe's).

    ``model`` replaces the recipe's builder: a builder name, or ``BUILDER:ENCODER`` for segmenters.
    """
    preset = find_recipe(family, name)
    base = preset.settings()
    if model is not None:
        base.update(_model_settings(preset, model, base))
    if family == "segmenter":
        base["builder_args"] = _segmenter_args(
            base["builder"], dict(base.get("builder_args", {})), light=preset.light_decoder
        )
    extra_args = overrides.pop("builder_args", None)
    if extra_args:
        base["builder_args"] = {**base.get("builder_args", {}), **extra_args}
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "model_id" not in base:
        base["model_id"] = default_model_id(
            family, base["builder"], base.get("builder_args", {}), base.get("scheme")
        )
    return TrainConfig(family=family, recipe=name, **base)
