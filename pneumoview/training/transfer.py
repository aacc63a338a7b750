"""Start a model's ResNet backbone from a model PneumoView trained before (``pneumoview train --init-from``).

A ResNet's stages have the same names in every family: ``conv1``, ``bn1``, ``layer1`` … ``layer4`` — at the top of
a classifier's state dict, under ``encoder.body.`` in a U-Net or DeepLabV3+, under ``backbone.body.`` in a Faster
R-CNN. Tensors are matched by that stage-relative name and copied where the shapes agree; ``conv1`` is adapted
between 1 and 3 input channels so that a grey image copied to 3 channels gives the same activations (1 → 3: the
kernel divided by 3 on each channel; 3 → 1: the channel kernels summed). Heads (``fc``, decoders, FPN, RPN, box
head) never match and keep their fresh initialisation.

The point is data efficiency: a detector trained from scratch on ~1,300 images learns slowly, while the rsna3
classifier's ResNet-18 has already learned what opacities look like on the same training split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pneumoview.errors import ModelLoadError
from pneumoview.inference.manifest import load_manifest
from pneumoview.inference.weights import load_state_dict_file, sha256_file, verified_weights

_PREFIXES = ("backbone.body.", "encoder.body.", "")
_STAGE = re.compile(r"^(conv1|bn1|layer[1-4])\.")


@dataclass(frozen=True)
class InitSource:
    """Weights to start from: the state dict and a one-line description for the log and the manifest."""

    state: Mapping[str, torch.Tensor]
    description: str
    training: Mapping[str, Any]


@dataclass(frozen=True)
class TransferReport:
    """What :func:`transfer_resnet_weights` copied: tensor counts of the target's ResNet and notes."""

    copied: int
    backbone_tensors: int
    adapted: tuple[str, ...]

    def describe(self) -> str:
        text = f"{self.copied} of {self.backbone_tensors} backbone tensors"
        if self.adapted:
            text += f" ({', '.join(self.adapted)})"
        return text


def resnet_key(key: str) -> str | None:
    """``"backbone.body.layer2.0.conv1.weight"`` → ``"layer2.0.conv1.weight"``; ``None`` for a non-ResNet key."""
    for prefix in _PREFIXES:
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            if _STAGE.match(rest):
                return rest
    return None


def _resnet_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[str, torch.Tensor]]:
    out: dict[str, tuple[str, torch.Tensor]] = {}
    for key, value in state.items():
        name = resnet_key(key)
        if name is not None and not name.endswith("num_batches_tracked") and name not in out:
            out[name] = (key, value)
    return out


def _adapt_conv1(source: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    if source.dim() != 4 or source.shape[0] != shape[0] or source.shape[2:] != shape[2:]:
        return None
    if source.shape[1] == 1 and shape[1] == 3:
        return source.repeat(1, 3, 1, 1) / 3.0
    if source.shape[1] == 3 and shape[1] == 1:
        return source.sum(dim=1, keepdim=True)
    return None


def transfer_resnet_weights(model: nn.Module, source: Mapping[str, torch.Tensor]) -> TransferReport:
    """Copy ``source``'s ResNet tensors into ``model``'s ResNet in place; see the module docstring.

    Stages the source lacks (a U-Net encoder ends at ``layer3``) keep their initialisation.

    Raises:
        ModelLoadError: the source shares no ResNet tensor with the model (e.g. a VGG or DenseNet source), or is a
            ResNet of another depth (some layer of the same name has another shape); nothing is copied then.
    """
    target = model.state_dict()
    wanted = _resnet_tensors(target)
    offered = _resnet_tensors(source)
    update: dict[str, torch.Tensor] = {}
    adapted: list[str] = []
    mismatched: list[str] = []
    for name, (target_key, tensor) in wanted.items():
        if name not in offered:
            continue
        value = offered[name][1]
        if value.shape != tensor.shape:
            converted = _adapt_conv1(value, tensor.shape) if name == "conv1.weight" else None
            if converted is None:
                mismatched.append(name)
                continue
            adapted.append(f"conv1 {value.shape[1]} → {tensor.shape[1]} channels")
            value = converted
        update[target_key] = value.to(dtype=tensor.dtype)
    if mismatched:
        raise ModelLoadError(
            f"--init-from: the source is a different ResNet: {len(mismatched)} of its layers have other shapes "
            f"(first: {mismatched[0]}); use a source with the same ResNet depth (e.g. the rsna3 classifier, "
            "ResNet-18, for a ResNet-18 detector or U-Net)"
        )
    if not update:
        raise ModelLoadError(
            "--init-from: the source model shares no ResNet layer of the same shape with this model "
            f"({len(offered)} ResNet tensors offered, {len(wanted)} wanted); use a source with the same ResNet "
            "depth (e.g. the rsna3 classifier, ResNet-18, for a ResNet-18 detector or U-Net)"
        )
    with torch.no_grad():
        for key, value in update.items():
            target[key].copy_(value)
    return TransferReport(
        copied=len(update),
        backbone_tensors=len(wanted),
        adapted=tuple(adapted),
    )


def load_init_source(name: str, model_dirs: Iterable[Path]) -> InitSource:
    """The weights ``--init-from`` names: a ``.pt`` file, or a model id in the manifests of ``model_dirs``.

    A model id is resolved like the engine resolves it (first folder that has it) and its file is verified
    against the manifest's sha256 before loading, with ``weights_only=True``.

    Raises:
        ModelLoadError / ModelNotInstalledError / ChecksumError: the file is missing, damaged or not weights.
        ValueError: ``name`` is neither an existing file nor a known model id.
    """
    path = Path(name).expanduser()
    if path.suffix in (".pt", ".pth") or path.is_file():
        if not path.is_file():
            raise ValueError(f"--init-from {name}: no such weights file")
        digest = sha256_file(path)
        return InitSource(load_state_dict_file(path), f"{path.name} (sha256 {digest[:12]})", {})
    dirs = list(dict.fromkeys(Path(d) for d in model_dirs))
    manifest = load_manifest(dirs, check_builders=False)
    if name not in manifest.models:
        known = ", ".join(sorted(manifest.models)) or "none"
        raise ValueError(
            f"--init-from {name}: no model of that id in the models folders "
            f"({', '.join(str(d) for d in dirs)}); known models: {known}; or pass a weights file"
        )
    spec = manifest.model(name)
    weights = verified_weights(spec, dirs)
    return InitSource(
        load_state_dict_file(weights),
        f"{spec.id} {spec.version} (sha256 {spec.sha256[:12]})",
        dict(spec.training),
    )


def split_mismatch(
    source_training: Mapping[str, Any], *, data: str, split_seed: int, folds: int | None, fold: int | None,
    val_images: int,
) -> str | None:  # fmt: skip
    """A warning when the source model may have trained on this run's validation images, else ``None``.

    The split is a deterministic function of the images, the split seed and the validation share (or fold), so a
    source trained on the same data with the same split settings and validation size never saw this run's
    validation patients.
    """
    if not source_training:
        return "the source model has no training record: make sure it never saw this run's validation images"
    theirs = {
        "data": source_training.get("data"),
        "split seed": source_training.get("split_seed"),
        "folds": source_training.get("folds"),
        "fold": source_training.get("fold"),
        "validation images": source_training.get("val_images"),
    }
    ours = {
        "data": data,
        "split seed": split_seed,
        "folds": folds,
        "fold": fold,
        "validation images": val_images,
    }
    differ = [k for k in ours if theirs[k] != ours[k]]
    if differ:
        return (
            f"the source model's {', '.join(differ)} differ from this run's, so it may have trained on this run's "
            "validation images and the validation metrics would be optimistic"
        )
    return None
