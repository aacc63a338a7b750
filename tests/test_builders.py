"""The model builders: registry, output shapes, offline behaviour, pretrained loading, seed compatibility.

Every test runs with network connections refused and an empty torch hub cache (autouse fixture), so "every
builder builds" also proves that no builder downloads anything.
"""

from __future__ import annotations

import csv
import hashlib
import math
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.ops.misc import FrozenBatchNorm2d

from pneumoview.errors import ManifestError, ModelLoadError
from pneumoview.inference import backbones
from pneumoview.inference.builders import (
    BUILDERS,
    build,
    builder_arguments,
    builder_names,
    builder_task,
    count_parameters,
    register,
)
from pneumoview.inference.segmentation import padded_size
from pneumoview.inference.segmentation_blocks import SCSE
from pneumoview.training.recipes import LIGHT_DETECTOR

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RSNA = DATA / "rsna"

EXPECTED = {
    "resnet18_classifier": "classify",
    "resnet34_classifier": "classify",
    "resnet50_classifier": "classify",
    "fasterrcnn_resnet50_fpn": "detect",
    "fasterrcnn_resnet18_fpn": "detect",
    "fasterrcnn_mobilenet_v3_fpn": "detect",
    "unet": "segment",
    "scse_unet": "segment",
    "deeplabv3plus": "segment",
}
DETECTORS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet18_fpn", "fasterrcnn_mobilenet_v3_fpn")


class NetworkUsed(AssertionError):
    pass


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, and a torch hub cache that holds no weights."""

    def refuse(*args, **kwargs):
        raise NetworkUsed("a builder tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    hub = tmp_path / "torch-hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    torch.manual_seed(0)
    return hub


def _ours() -> set[str]:
    # Tests elsewhere register tiny helper builders into the same registry; these are the package's own.
    return {n for n, f in BUILDERS.items() if f.__module__.startswith("pneumoview.inference.")}


# --- registry -------------------------------------------------------------------------------------------------


def test_registry_holds_every_builder_with_its_task():
    assert _ours() == set(EXPECTED)
    for name, task in EXPECTED.items():
        assert builder_task(name) == task
        assert name in builder_names(task)
    assert builder_names() == sorted(builder_names())
    assert not set(builder_names("classify")) & set(builder_names("segment"))


def test_builders_are_keyword_only_and_typed():
    import inspect

    for name in EXPECTED:
        sig = inspect.signature(BUILDERS[name])
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in sig.parameters.values()), name
        assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name
        assert sig.return_annotation is not inspect.Signature.empty, name
        assert builder_arguments(name)["pretrained"] is False


def test_register_rejects_a_duplicate_name():
    before = BUILDERS["unet"]
    with pytest.raises(ValueError, match="already registered"):
        register("unet", task="segment")(lambda: torch.nn.Identity())
    assert BUILDERS["unet"] is before


def test_unknown_builder_lists_the_valid_ones():
    with pytest.raises(
        ManifestError, match=r"unknown builder 'densenet9'; valid builders: .*deeplabv3plus, "
    ):
        build("densenet9")
    with pytest.raises(ManifestError, match="valid builders: .*unet"):
        builder_task("densenet9")
    with pytest.raises(ValueError, match="task must be one of"):
        builder_names("regress")


def test_bad_arguments_raise_manifest_errors_naming_what_is_accepted():
    with pytest.raises(
        ManifestError, match=r"does not accept 'depth'; accepted arguments: .*encoder.*in_channels"
    ):
        build("unet", encoder="resnet18", depth=5)
    with pytest.raises(ManifestError, match="needs num_classes"):
        build("resnet18_classifier")
    with pytest.raises(ManifestError, match="encoder must be one of .*densenet121.*got 'resnet9'"):
        build("unet", encoder="resnet9")
    with pytest.raises(ManifestError, match="encoder must be one of vgg11, vgg13, vgg16, vgg19"):
        build("scse_unet", encoder="resnet18")
    with pytest.raises(ManifestError, match="in_channels must be one of 1, 3"):
        build("resnet18_classifier", num_classes=2, in_channels=2)
    with pytest.raises(ManifestError, match="num_classes must be an integer"):
        build("resnet18_classifier", num_classes=True)
    with pytest.raises(ManifestError, match="trainable_backbone_layers must be at most 5"):
        build("fasterrcnn_resnet18_fpn", trainable_backbone_layers=6)
    with pytest.raises(ManifestError, match="max_size must be at least 512"):
        build("fasterrcnn_resnet18_fpn", max_size=256)
    with pytest.raises(ManifestError, match="decoder_channels must be a list of 4 integers"):
        build("unet", encoder="resnet18", decoder_channels=[64, 32])
    with pytest.raises(ManifestError, match="vgg_batchnorm=False applies to VGG encoders only"):
        build("unet", encoder="resnet18", vgg_batchnorm=False)


def test_offline_fixture_refuses_connections():
    with pytest.raises(NetworkUsed):
        socket.create_connection(("download.pytorch.org", 443), timeout=1)


# --- classifiers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18_classifier", "resnet34_classifier", "resnet50_classifier"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_classifier_gives_one_logit_per_class(name, in_channels):
    model = build(name, num_classes=3, in_channels=in_channels).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_channels, 64, 64)).shape == (2, 3)
        assert model(torch.randn(1, in_channels, 32, 48)).shape == (1, 3)  # any H, W ≥ 32
    conv1 = model.conv1
    assert (conv1.in_channels, conv1.kernel_size, conv1.stride, conv1.bias) == (
        in_channels,
        (7, 7),
        (2, 2),
        None,
    )


def test_resnet18_classifier_is_seed_002s_network():
    ours = build("resnet18_classifier", num_classes=4)
    ref = torchvision.models.resnet18(weights=None, num_classes=4)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    ours.load_state_dict(ref.state_dict())  # strict
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), ref.eval()(x))
    assert count_parameters(ours) == 11_689_512 - (512 * 1000 + 1000) + (
        512 * 4 + 4
    )  # torchvision's 1000-class count


def test_classifier_dropout_keeps_state_dict_keys_and_acts_only_in_training():
    plain = build("resnet18_classifier", num_classes=2)
    dropped = build("resnet18_classifier", num_classes=2, dropout=0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain.eval()(x), dropped.eval()(x))
        dropped.train()
        assert not torch.equal(dropped(x), dropped(x))


# --- segmentation ---------------------------------------------------------------------------------------------

# Each (builder, encoder) once; the light ones with both channel counts, the heavy ones once at 64×64.
SEGMENTERS = [
    ("unet", "resnet18", 1),
    ("unet", "resnet18", 3),
    ("unet", "resnet34", 1),
    ("unet", "resnet50", 3),
    ("unet", "resnet101", 1),
    ("unet", "resnet152", 3),
    ("unet", "densenet121", 3),
    ("unet", "vgg11", 1),
    ("unet", "vgg13", 3),
    ("unet", "vgg16", 1),
    ("unet", "vgg19", 3),
    ("scse_unet", "vgg11", 1),
    ("scse_unet", "vgg11", 3),
    ("scse_unet", "vgg13", 1),
    ("scse_unet", "vgg16", 3),
    ("scse_unet", "vgg19", 3),
    ("deeplabv3plus", "resnet18", 1),
    ("deeplabv3plus", "resnet18", 3),
    ("deeplabv3plus", "resnet34", 3),
    ("deeplabv3plus", "resnet50", 1),
    ("deeplabv3plus", "resnet101", 3),
    ("deeplabv3plus", "resnet152", 3),
]


@pytest.mark.parametrize(("name", "encoder", "in_channels"), SEGMENTERS)
def test_segmenter_gives_one_logit_per_pixel(name, encoder, in_channels):
    model = build(name, encoder=encoder, in_channels=in_channels).eval()
    with torch.no_grad():
        out = model(torch.randn(1, in_channels, 64, 64))
    assert out.shape == (1, 1, 64, 64)
    assert torch.isfinite(out).all()


def test_every_segmentation_encoder_is_tested():
    from pneumoview.inference import segmentation

    tested = {(n, e) for n, e, _ in SEGMENTERS}
    wanted = {("unet", e) for e in segmentation.UNET_ENCODERS}
    wanted |= {("scse_unet", e) for e in segmentation.SCSE_UNET_ENCODERS}
    wanted |= {("deeplabv3plus", e) for e in segmentation.DEEPLAB_ENCODERS}
    assert tested == wanted
    assert len(segmentation.UNET_ENCODERS) == 10


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("unet", {"encoder": "resnet18", "decoder_channels": [64, 32, 16, 16]}),
        ("scse_unet", {"encoder": "vgg11", "decoder_channels": [64, 32, 16, 16]}),
        ("deeplabv3plus", {"encoder": "resnet18"}),
    ],
)
def test_segmenters_train_on_non_square_batches(name, kwargs):
    model = build(name, **kwargs).train()  # a batch of 2: batch norm on the ASPP pooling branch needs it
    out = model(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 1, 64, 96)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("height", "width", "padded"), [(100, 64, "128×64"), (64, 70, "64×96"), (33, 33, "64×64")]
)
def test_segmenter_rejects_sizes_that_are_not_multiples_of_32(height, width, padded):
    model = build("unet", encoder="resnet18").eval()
    with pytest.raises(ValueError, match=f"multiples of 32, got {height}×{width} .*pad it to {padded}"):
        model(torch.zeros(1, 3, height, width))
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 3, H, W\)"):
        model(torch.zeros(1, 1, 64, 64))


def test_padded_size():
    assert padded_size(1024, 1024) == (1024, 1024)
    assert padded_size(1955, 1841) == (1984, 1856)
    assert padded_size(1, 32) == (32, 32)


def test_unet_taps_follow_seed_001():
    vgg19 = build("scse_unet", encoder="vgg19", vgg_batchnorm=False)
    # block1_conv2, block2_conv2, block3_conv3, block4_conv3, block5_conv3 → the ReLUs after those convs.
    out_nodes = [n for n in vgg19.encoder.body.graph.nodes if n.op == "output"][0].args[0]
    assert [n.target for n in out_nodes.values()] == ["3", "8", "15", "24", "33"]
    assert vgg19.encoder.channels == (64, 128, 256, 512, 512)
    dense = build("unet", encoder="densenet121")
    assert dense.encoder.channels == (3, 64, 256, 512, 1024)
    assert not hasattr(dense.encoder.body.features, "denseblock4")  # nothing past the stride-16 bridge
    res = build("unet", encoder="resnet50", in_channels=1)
    assert res.encoder.channels == (1, 64, 256, 512, 1024)
    assert not hasattr(res.encoder.body, "layer4")


def test_deeplabv3plus_uses_torchvision_aspp_and_one_relu_per_fuse_conv():
    from torchvision.models.segmentation.deeplabv3 import ASPP

    model = build("deeplabv3plus", encoder="resnet152")
    assert isinstance(model.aspp, ASPP)
    assert model.aspp.convs[0][0].in_channels == 1024  # layer3 of ResNet-152
    assert model.low[0].out_channels == 48
    for block in model.fuse:
        assert [type(m).__name__ for m in block] == ["Conv2d", "BatchNorm2d", "ReLU"]


def test_real_radiograph_through_a_segmenter():
    path = next(iter(sorted((RSNA / "images-1024").glob("*.png"))))
    grey = np.asarray(Image.open(path).convert("L").resize((128, 128), Image.BILINEAR), dtype=np.float32)
    x = torch.from_numpy(grey / 127.5 - 1.0)[None, None]  # seed 001's scaling
    model = build("unet", encoder="resnet18", in_channels=1).eval()
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1, 128, 128)
    assert torch.isfinite(out).all() and out.std() > 0


# --- scSE -----------------------------------------------------------------------------------------------------


def test_scse_keeps_the_shape_and_modulates_per_pixel():
    block = SCSE(16).eval()
    x = torch.randn(2, 16, 12, 20)
    with torch.no_grad():
        out = block(x)
        gate = block.spatial_gate(x)
        channel = block.channel_gate(x)
    assert out.shape == x.shape
    assert gate.shape == (2, 1, 12, 20) and channel.shape == (2, 16, 1, 1)
    assert gate.std() > 1e-3  # the sSE weight differs from pixel to pixel
    assert ((gate > 0) & (gate < 1)).all()
    # Per pixel, out = x · (cSE + sSE): the factor varies over the image, unlike channel-only SE.
    assert torch.allclose(out, x * (channel + gate), atol=1e-6)
    with torch.no_grad():
        assert not torch.allclose(out, x * channel)
        assert torch.equal(SCSE(16, mode="max").eval()(torch.zeros(1, 16, 4, 4)), torch.zeros(1, 16, 4, 4))


def test_scse_unet_gates_every_skip_and_the_bridge():
    model = build("scse_unet", encoder="vgg11", attention_reduction=4)
    assert [g.cse[1].out_channels for g in model.attention] == [16, 32, 64, 128, 128]
    assert all(isinstance(g, SCSE) for g in model.attention)
    assert build("unet", encoder="vgg11").attention is None


# --- detectors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_boxes_are_in_the_input_frame(name):
    # min_size 256 makes the model resize 128×160 → 256×320 internally; boxes must come back in 160×128 px.
    model = build(name, min_size=256, max_size=512, box_score_thresh=0.0, box_detections_per_img=20).eval()
    image = torch.rand(3, 128, 160)
    with torch.no_grad():
        (out,) = model([image])
    boxes = out["boxes"]
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and 0 < len(boxes) <= 20
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 160).all() and (boxes[:, 3] <= 128).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert (out["labels"] == 1).all()
    assert ((out["scores"] >= 0) & (out["scores"] <= 1)).all()
    assert model.transform.image_mean == [0.5, 0.5, 0.5] and model.transform.image_std == [0.25, 0.25, 0.25]


def _rsna_image(patient: str, size: int = 128) -> torch.Tensor:
    grey = (
        Image.open(RSNA / "images-512" / f"{patient}.jpg").convert("L").resize((size, size), Image.BILINEAR)
    )
    return torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None].repeat(3, 1, 1)


def _rsna_examples() -> tuple[str, list[list[float]], str]:
    """A positive patient with one box (xyxy, 1024-px frame) and a negative patient, both in images-512."""
    rows = list(csv.DictReader((RSNA / "index.csv").open()))
    positive = next(
        r["patientId"] for r in rows if r["target"] == "1" and r["n_boxes"] == "1" and r["file_512"]
    )
    negative = next(r["patientId"] for r in rows if r["target"] == "0" and r["file_512"])
    labels = csv.DictReader((RSNA / "stage_2_train_labels.csv").open())
    boxes = [
        [float(r["x"]), float(r["y"]), float(r["x"]) + float(r["width"]), float(r["y"]) + float(r["height"])]
        for r in labels
        if r["patientId"] == positive
    ]
    return positive, boxes, negative


@pytest.mark.parametrize("name", DETECTORS)
def test_detector_training_step_on_real_positive_and_negative_images(name):
    positive, boxes, negative = _rsna_examples()
    assert len(boxes) == 1
    model = build(name, min_size=128, max_size=128).train()
    images = [_rsna_image(positive), _rsna_image(negative)]
    scale = 128 / 1024  # labels are in the native 1024-px frame
    targets = [
        {"boxes": torch.tensor(boxes) * scale, "labels": torch.ones(1, dtype=torch.int64)},
        # A negative image has no boxes at all (seed 003 gave it a full-frame "pneumonia" box).
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},
    ]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()

    negative_only = model([images[1]], [targets[1]])
    assert all(math.isfinite(v.item()) for v in negative_only.values())
    # With no box, nothing regresses: only the objectness and classification losses remain.
    assert negative_only["loss_box_reg"].item() == 0.0 and negative_only["loss_rpn_box_reg"].item() == 0.0
    assert negative_only["loss_classifier"].item() > 0 and negative_only["loss_objectness"].item() > 0


def test_fasterrcnn_resnet50_fpn_is_seed_003s_architecture():
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

    ours = build("fasterrcnn_resnet50_fpn")
    ref = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2
    )
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    predictor = ours.roi_heads.box_predictor
    assert isinstance(predictor, FastRCNNPredictor)
    assert (predictor.cls_score.in_features, predictor.cls_score.out_features) == (1024, 2)
    assert predictor.bbox_pred.out_features == 8
    assert (ours.transform.min_size, ours.transform.max_size) == ((512,), 1024)
    # From scratch, every layer trains (as torchvision does without pretrained weights).
    assert count_parameters(ours, trainable_only=True) == count_parameters(ours)


def test_detector_normalisation_can_be_given():
    model = build("fasterrcnn_mobilenet_v3_fpn", image_mean=[0.4, 0.4, 0.4], image_std=[0.3, 0.3, 0.3])
    assert model.transform.image_mean == [0.4, 0.4, 0.4] and model.transform.image_std == [0.3, 0.3, 0.3]
    with pytest.raises(ManifestError, match="image_std must be a list of 3 numbers"):
        build("fasterrcnn_mobilenet_v3_fpn", image_std=[0.3])


# --- pretrained weights: offline ------------------------------------------------------------------------------

PRETRAINED_CASES = [
    ("resnet18_classifier", {"num_classes": 2}, "resnet18"),
    ("resnet34_classifier", {"num_classes": 2}, "resnet34"),
    ("resnet50_classifier", {"num_classes": 2}, "resnet50"),
    ("fasterrcnn_resnet50_fpn", {}, "resnet50"),
    ("fasterrcnn_resnet18_fpn", {}, "resnet18"),
    ("fasterrcnn_mobilenet_v3_fpn", {}, "mobilenet_v3_large"),
    ("unet", {"encoder": "densenet121"}, "densenet121"),
    ("scse_unet", {"encoder": "vgg11"}, "vgg11_bn"),
    ("deeplabv3plus", {"encoder": "resnet18"}, "resnet18"),
]


def test_pretrained_cases_cover_every_builder():
    assert {name for name, _, _ in PRETRAINED_CASES} == set(EXPECTED)


@pytest.mark.parametrize(("name", "kwargs", "arch"), PRETRAINED_CASES)
def test_pretrained_without_cached_weights_raises_model_load_error(name, kwargs, arch, offline):
    with pytest.raises(ModelLoadError) as info:
        build(name, pretrained=True, **kwargs)
    message = str(info.value)
    assert message.startswith(f"ImageNet weights for {arch} are not available offline")
    assert "train from scratch with pretrained=False" in message
    assert str(offline / "checkpoints") in message


# --- pretrained weights: from the cache -----------------------------------------------------------------------


@pytest.fixture
def cached_resnet18(monkeypatch, offline):
    """A (random) resnet18 state dict in the hub cache under a torchvision-style name with its sha256 prefix."""
    state = torchvision.models.resnet18(weights=None).state_dict()
    checkpoints = offline / "checkpoints"
    checkpoints.mkdir()
    tmp = checkpoints / "tmp.pth"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    path = tmp.rename(checkpoints / f"resnet18-{digest}.pth")
    fake = SimpleNamespace(url=f"https://download.invalid/models/{path.name}")
    monkeypatch.setitem(backbones._IMAGENET_WEIGHTS, "resnet18", fake)
    return state, path


def test_pretrained_classifier_loads_the_cached_weights(cached_resnet18):
    state, _ = cached_resnet18
    rgb = build("resnet18_classifier", num_classes=2, pretrained=True)
    assert torch.equal(rgb.conv1.weight, state["conv1.weight"])
    assert torch.equal(rgb.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert rgb.fc.out_features == 2


def test_pretrained_one_channel_conv_sums_the_rgb_kernels(cached_resnet18):
    state, _ = cached_resnet18
    rgb = build("resnet18_classifier", num_classes=2, pretrained=True).eval()
    grey = build("resnet18_classifier", num_classes=2, in_channels=1, pretrained=True).eval()
    assert torch.allclose(grey.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    grey.fc.load_state_dict(rgb.fc.state_dict())
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():  # a grey image on 1 channel = the same image copied to 3 channels
        assert torch.allclose(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=1e-4)
    unet = build("unet", encoder="resnet18", in_channels=1, pretrained=True)
    assert torch.allclose(unet.encoder.body.conv1.weight, grey.conv1.weight)
    deeplab = build("deeplabv3plus", encoder="resnet18", pretrained=True)
    assert torch.equal(
        deeplab.encoder.body.get_submodule("layer1.0.conv1").weight, state["layer1.0.conv1.weight"]
    )


def test_pretrained_detector_freezes_like_torchvision_and_reloads_for_inference(cached_resnet18):
    state, _ = cached_resnet18
    trained = build("fasterrcnn_resnet18_fpn", pretrained=True)
    body = trained.backbone.body
    assert torch.equal(body.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert trained.transform.image_mean == [0.485, 0.456, 0.406]
    # Default 3 trainable stages: conv1 and layer1 frozen, layer2-4 train.
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad and body.layer4[0].conv1.weight.requires_grad
    assert count_parameters(trained, trainable_only=True) < count_parameters(trained)
    # Inference rebuilds without the ImageNet file, stating what pretrained implied.
    rebuilt = build(
        "fasterrcnn_resnet18_fpn",
        frozen_batchnorm=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    rebuilt.load_state_dict(trained.state_dict())  # strict
    image = torch.rand(3, 128, 128)
    with torch.no_grad():
        a, b = trained.eval()([image])[0], rebuilt.eval()([image])[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_damaged_cached_weights_are_refused(cached_resnet18):
    _, path = cached_resnet18
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelLoadError, match="damaged"):
        build("resnet18_classifier", num_classes=2, pretrained=True)


# --- count_parameters -----------------------------------------------------------------------------------------


def test_count_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    assert count_parameters(model) == 3 * 4 + 4 + 4 + 1
    model[0].weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 4 + 4 + 1


# --- the light detector: FPN stages, width and anchors as arguments ---------------------------------------------

LIGHT = LIGHT_DETECTOR  # the builder arguments of the `light` detector recipe


def test_light_detector_reads_the_stages_it_is_given_with_its_anchors():
    model = build("fasterrcnn_resnet18_fpn", min_size=128, max_size=128, **LIGHT)
    fpn = model.backbone.fpn
    assert [b[0].in_channels for b in fpn.inner_blocks] == [128, 256, 512]  # layer2, layer3, layer4
    assert model.backbone.out_channels == 128
    gen = model.rpn.anchor_generator
    assert gen.sizes == ((32,), (64,), (128,), (256,)) and gen.aspect_ratios[0] == (0.7, 1.0, 1.4, 2.0)
    assert model.rpn.head.cls_logits.out_channels == 4  # one objectness per ratio
    assert model.roi_heads.fg_bg_sampler.batch_size_per_image == 128
    assert model.rpn._post_nms_top_n["training"] == 500 and model.rpn._post_nms_top_n["testing"] == 1000
    # layer1 feeds nothing: the pyramid starts at stride 8.
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 128, 128))
    assert [f.shape[-1] for f in feats.values()] == [16, 8, 4, 2]
    positive, boxes, negative = _rsna_examples()
    model.train()
    targets = [
        {"boxes": torch.tensor(boxes) * (128 / 1024), "labels": torch.ones(1, dtype=torch.int64)},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)},
    ]
    losses = model([_rsna_image(positive), _rsna_image(negative)], targets)
    assert all(math.isfinite(v.item()) for v in losses.values()) and losses["loss_box_reg"].item() > 0


def test_default_fpn_arguments_keep_torchvisions_resnet18_detector():
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    ours = build("fasterrcnn_resnet18_fpn")
    ref = resnet_fpn_backbone(
        backbone_name="resnet18", weights=None, trainable_layers=5, norm_layer=torch.nn.BatchNorm2d
    )
    assert {k: v.shape for k, v in ours.backbone.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert ours.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,), (512,))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"fpn_levels": [3, 2]}, "increasing"),
        ({"fpn_levels": [0, 1]}, r"fpn_levels\[0\] must be at least 1"),
        ({"fpn_levels": [2, 3, 4], "anchor_sizes": [32, 64, 128]}, "must list 4 sizes"),
        ({"anchor_ratios": []}, "anchor_ratios"),
        ({"fpn_channels": 4}, "fpn_channels must be at least 8"),
        ({"box_batch_size_per_image": 0}, "box_batch_size_per_image"),
    ],
)
def test_bad_fpn_arguments_say_what_is_wrong(args, message):
    with pytest.raises((ValueError, ManifestError), match=message):
        build("fasterrcnn_resnet18_fpn", **args)
