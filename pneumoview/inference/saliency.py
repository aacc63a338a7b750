"""Grad-CAM saliency for the classifier: which regions raised P(opacity).

Grad-CAM (Selvaraju et al., ICCV 2017): the activations ``A`` of the last convolutional block (``layer4`` of a
torchvision ResNet) are weighted by the spatial mean of the gradient of the target class logit with respect to
them, summed over channels and passed through ReLU. The map is computed at the model's input resolution, mapped to
the original image's pixel frame with the same :class:`~pneumoview.preprocess.FrameMap` the engine uses, and scaled
to ``[0, 1]``.

The hooks only record the calling thread's forward pass, so Grad-CAM can run on a model the engine is using in
another thread at the same time. torch is imported inside the functions; importing this module is cheap.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumoview.preprocess import InputSpec, prepare
from pneumoview.types import XrayImage

if TYPE_CHECKING:
    from torch import nn

__all__ = ["gradcam", "target_layer"]


def target_layer(model: nn.Module) -> nn.Module:
    """The layer Grad-CAM reads: ``layer4`` for ResNets, else the last ``Conv2d`` of the model.

    Raises:
        ValueError: when the model has no convolutional layer (no spatial map to explain).
    """
    # lazy: torch only when Grad-CAM runs (a torch-free install disables it)
    from torch import nn

    block = getattr(model, "layer4", None)
    if isinstance(block, nn.Module):
        return block
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(
            f"the classifier ({type(model).__name__}) has no convolutional layer, so there is no Grad-CAM map"
        )
    return convs[-1]


def _classifier_from_engine(engine: Any) -> tuple[nn.Module, InputSpec, int | None, str]:
    specs = engine.stage_specs("classify")
    if not specs:
        raise ValueError("no classifier is selected, so there is no saliency map to compute")
    spec = specs[0][0]
    # The engine's shared model cache: the model is loaded once whoever asks first.
    model = engine.torch_model(spec)
    return model, spec.input, spec.positive_index, engine.device


def gradcam(
    engine_or_model: Any,
    image: XrayImage,
    *,
    input_spec: InputSpec | None = None,
    class_index: int | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Grad-CAM map of the classifier for one image, in the original frame.

    Args:
        engine_or_model: an :class:`~pneumoview.inference.engine.Engine` (its selected classifier, input spec,
            positive class and device are used) or a classifier ``nn.Module`` returning logits ``(1, C)``.
        image: the radiograph; its ``display`` pixels are the model input, as in the engine.
        input_spec: how to prepare the input; required with a bare model.
        class_index: the logit to explain; default: the engine's positive ("Lung Opacity") class, else the
            predicted class.
        device: with a bare model, where its parameters are (default: where they already are).

    Returns:
        float32 ``(H, W)`` map in ``[0, 1]`` on the original image's pixel grid (all zeros when no region raised
        the score).
    """
    # lazy: torch only when Grad-CAM runs
    import torch
    from torch import nn  # lazy: as above

    if isinstance(engine_or_model, nn.Module):
        if input_spec is None:
            raise ValueError("gradcam() with a bare model needs input_spec (how the model wants its input)")
        model, spec, positive = engine_or_model, input_spec, None
        if device is None:
            first = next(iter(model.parameters()), None)
            device = str(first.device) if first is not None else "cpu"
    else:
        model, spec, positive, device = _classifier_from_engine(engine_or_model)
        spec = input_spec or spec

    layer = target_layer(model)
    array, frame = prepare(image.display, spec)
    x = torch.from_numpy(array[None]).to(device)
    me = threading.get_ident()
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if threading.get_ident() == me:
            captured.append(output)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone().requires_grad_(True)  # gives the graph a leaf even when the weights are frozen
            logits = model(x)
            if logits.ndim != 2 or logits.shape[0] != 1:
                raise ValueError(
                    f"the classifier must return logits of shape (1, C), got {tuple(logits.shape)}"
                )
            target = class_index
            if target is None:
                target = positive if positive is not None else int(logits[0].argmax())
            if not 0 <= target < logits.shape[1]:
                raise ValueError(f"class_index {target} is out of range for {logits.shape[1]} classes")
            acts = captured[-1]
            (grads,) = torch.autograd.grad(logits[0, target], acts)
            weights = grads.mean(dim=(2, 3), keepdim=True)
            cam = torch.relu((weights * acts).sum(dim=1, keepdim=True))
            cam = torch.nn.functional.interpolate(cam, size=spec.size, mode="bilinear", align_corners=False)
            cam_in = cam[0, 0].detach().float().cpu().numpy()
    finally:
        handle.remove()
    out = frame.map_to_original(cam_in.astype(np.float32))
    peak = float(out.max()) if out.size else 0.0
    if peak > 0:
        out = out / peak
    return np.clip(out, 0.0, 1.0).astype(np.float32)
