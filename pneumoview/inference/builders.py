"""Model builders by name: architecture only, never a download.

A manifest names a builder and its keyword arguments; :func:`build` turns them into an ``nn.Module`` with fresh
(or, with ``pretrained=True``, ImageNet-initialised) weights, ready for ``load_state_dict``. Importing this module
imports torch and torchvision.

========================== ========= =====================================================================
name                       task      input → output
========================== ========= =====================================================================
resnet18/34/50_classifier  classify  ``(B, C, H, W)`` normalised float → logits ``(B, num_classes)``
fasterrcnn_*               detect    list of ``(3, H, W)`` in [0, 1] → list of dicts, ``boxes`` xyxy in input px
unet, scse_unet,           segment   ``(B, C, H, W)`` normalised float, H and W multiples of 32 → logits
deeplabv3plus                        ``(B, 1, H, W)``
========================== ========= =====================================================================
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType

from torch import nn

from pneumoview.errors import ManifestError
from pneumoview.inference import classifier, detector, segmentation  # noqa: F401  (importing registers them)
from pneumoview.inference._registry import REGISTRY, TASK_OF, TASKS, Task, register

BUILDERS: Mapping[str, Callable[..., nn.Module]] = MappingProxyType(REGISTRY)

__all__ = [
    "BUILDERS",
    "build",
    "builder_arguments",
    "builder_names",
    "builder_task",
    "count_parameters",
    "register",
]


def _unknown(name: str) -> ManifestError:
    return ManifestError(f"unknown builder {name!r}; valid builders: {', '.join(sorted(REGISTRY))}")


def builder_names(task: str | None = None) -> list[str]:
    """Sorted names of the registered builders, all of them or those of one task (classify, detect, segment)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return sorted(n for n in REGISTRY if task is None or TASK_OF[n] == task)


def builder_task(name: str) -> Task:
    """``"classify"``, ``"detect"`` or ``"segment"``; ``ManifestError`` for an unknown name."""
    if name not in TASK_OF:
        raise _unknown(name)
    return TASK_OF[name]


def builder_arguments(name: str) -> dict[str, object]:
    """The keyword arguments builder ``name`` accepts, each with its default (``inspect.Parameter.empty`` when
    required)."""
    if name not in REGISTRY:
        raise _unknown(name)
    return {p.name: p.default for p in inspect.signature(REGISTRY[name]).parameters.values()}


def build(name: str, **kwargs: object) -> nn.Module:
    """Build model ``name`` with ``kwargs`` (as a manifest's ``builder_args`` gives them).

    Raises:
        ManifestError: unknown builder, unknown or missing argument, or an invalid value (the message lists the
            valid builders or the accepted arguments).
        ModelLoadError: ``pretrained=True`` and the ImageNet weights are not in the torch hub cache.
    """
    accepted = builder_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ManifestError(
            f"builder {name!r} does not accept {', '.join(map(repr, unknown))}; "
            f"accepted arguments: {', '.join(sorted(accepted))}"
        )
    missing = sorted(
        k for k, default in accepted.items() if default is inspect.Parameter.empty and k not in kwargs
    )
    if missing:
        raise ManifestError(
            f"builder {name!r} needs {', '.join(missing)}; accepted arguments: {', '.join(sorted(accepted))}"
        )
    try:
        return REGISTRY[name](**kwargs)
    except ValueError as exc:  # the builders' own argument checks
        raise ManifestError(f"invalid arguments for builder {name!r}: {exc}") from exc


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (scalars) in ``model``, optionally only those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
