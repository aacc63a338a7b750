"""Training pipelines on a handful of real RSNA images at 64 px (CPU): data, augmentation, each family's run,
resume determinism, ImageNet fallback, the manifest entry, and DDP with two gloo processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoview.inference.manifest import load_manifest
from pneumoview.inference.weights import build_and_load, verified_weights
from pneumoview.preprocess import InputSpec
from pneumoview.training.augment import AugmentConfig, augment, box_mask, transform_boxes
from pneumoview.training.checkpoint import load_checkpoint
from pneumoview.training.datasets import (
    ACSE4_CLASSES,
    build_cache,
    class_ids,
    load_image_folder,
    load_rsna,
)
from pneumoview.training.loop import subsample, train_model
from pneumoview.training.recipes import recipe
from pneumoview.training.sampling import EpochSampler
from pneumoview.training.schedule import Plan, lr_factor
from pneumoview.training.segmenter import segmentation_loss

ROOT = Path(__file__).resolve().parents[1]
RSNA = ROOT.parent / "shared" / "data" / "rsna"
LABELS = RSNA / "stage_2_train_labels.csv"
CLASSES = RSNA / "stage_2_detailed_class_info.csv"
INDEX = RSNA / "index.csv"
TINY = dict(size=64, workers=0, progress=False, device="cpu", limit=12, val_fraction=0.25, augment="none")


@pytest.fixture(scope="module")
def source():
    return load_rsna(LABELS, RSNA / "images-512", classes_csv=CLASSES, index_csv=INDEX)


@pytest.fixture(autouse=True)
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, so that --imagenet can never find (or fetch) weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


# -- data --------------------------------------------------------------------------------------------------------


def test_rsna_layout_counts_found_and_missing(source):
    assert len(source.records) == 1617
    assert source.n_labelled == 26684
    assert source.n_missing == 26684 - 1617
    assert source.has_rsna_class
    summary = source.summary()
    assert "1617 images found" in summary and "25,067" in summary


def test_boxes_scale_with_the_image_size(source):
    """The same patient's boxes land on the same input pixels from the 512-px and the 1024-px image."""
    positives = {r.key: r for r in source.records if r.target}
    big = load_rsna(LABELS, RSNA / "images-1024", classes_csv=CLASSES)
    shared = [r for r in big.records if r.key in positives][:2]
    assert shared, "images-1024 holds positives that images-512 also holds"
    spec = InputSpec(size=(64, 64))
    small = build_cache([positives[r.key] for r in shared], spec)
    large = build_cache(shared, spec)
    for a, b, rec in zip(small.boxes, large.boxes, shared, strict=True):
        expected = rec.boxes.copy()
        expected[:, 2:] += expected[:, :2]
        np.testing.assert_allclose(a, expected * 64 / 1024, atol=1e-3)
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_unreadable_image_is_reported_and_skipped(source, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    good = source.records[:3]
    for r in good:
        shutil.copy(r.path, images / r.path.name)
    bad_id = source.records[3].key
    (images / f"{bad_id}.png").write_bytes(b"this is not a PNG")
    src = load_rsna(LABELS, images, classes_csv=CLASSES)
    assert len(src.records) == 4
    cache = build_cache(src.records, InputSpec(size=(32, 32)))
    assert [r.key for r in cache.records] == sorted(r.key for r in good)
    assert len(cache.failed) == 1 and cache.failed[0][0].name == f"{bad_id}.png"


def test_image_folder_uses_competition_ids_not_alphabetical(source, tmp_path):
    root = tmp_path / "train"
    for i, name in enumerate(["normal", "pneumonia", "covid", "lung_opacity"]):
        (root / name).mkdir(parents=True)
        shutil.copy(source.records[i].path, root / name / f"{name}-{i}.jpg")
    src = load_image_folder(root)
    assert src.classes == ACSE4_CLASSES
    ids = dict(zip([r.label for r in src.records], class_ids(src.records, "acse4").tolist(), strict=True))
    assert ids == {"covid": 0, "lung_opacity": 1, "pneumonia": 2, "normal": 3}
    cache = build_cache(src.records, InputSpec(size=(32, 32)))
    assert len(cache) == 4 and not cache.failed


# -- augmentation, loss, schedule, sampler --------------------------------------------------------------------


def test_augmentation_moves_image_mask_and_boxes_together(source):
    cache = build_cache([r for r in source.records if r.target][:3], InputSpec(size=(128, 128)))
    for row in range(len(cache)):
        boxes = cache.boxes[row]
        mask = box_mask(boxes, (128, 128))
        for seed in range(4):
            rng = np.random.default_rng(seed)
            img, m, b = augment(cache.images[row], rng, AugmentConfig(p_affine=1.0, hflip=0.5), mask, boxes)
            assert img.shape == (128, 128) and img.dtype == np.uint8
            # The boxes drawn as a mask cover (almost) the same pixels as the transformed mask.
            redrawn = box_mask(b, (128, 128)).astype(bool)
            inter = (redrawn & m.astype(bool)).sum()
            union = (redrawn | m.astype(bool)).sum()
            assert inter / union > 0.75


def test_horizontal_flip_mirrors_boxes_exactly():
    flip = np.array([[-1.0, 0.0, 100.0], [0.0, 1.0, 0.0]])
    out = transform_boxes(np.array([[10.0, 20.0, 30.0, 60.0]]), flip, (80, 100))
    np.testing.assert_allclose(out, [[70.0, 20.0, 90.0, 60.0]], atol=1e-5)


def test_segmentation_loss_ignores_the_background_channel():
    target = torch.zeros(2, 1, 16, 16)
    target[0, :, 4:8, 4:8] = 1
    perfect = torch.where(target > 0, 20.0, -20.0)
    assert float(segmentation_loss(perfect, target)) < 0.01
    # An all-background prediction misses every opacity pixel: the IoU term is ~1, not diluted by background.
    empty = torch.full_like(target, -20.0)
    assert float(segmentation_loss(empty, target)) > 0.45


def test_schedules():
    cfg = recipe("classifier", "default", epochs=10, warmup_epochs=1)
    plan = Plan(epochs=10, steps_per_epoch=10)
    assert lr_factor(cfg, plan, 0) == pytest.approx(cfg.warmup_factor)
    assert lr_factor(cfg, plan, 10) == pytest.approx(1.0)
    assert lr_factor(cfg, plan, 100) == pytest.approx(0.01)
    seed003 = recipe("detector", "seed003")
    assert (seed003.lr, seed003.momentum, seed003.weight_decay, seed003.epochs) == (0.005, 0.9, 5e-4, 5)
    plan3 = Plan(epochs=5, steps_per_epoch=100)
    assert lr_factor(seed003, plan3, 0) == pytest.approx(1e-3)
    assert lr_factor(seed003, plan3, 250) == pytest.approx(1.0)
    assert lr_factor(seed003, plan3, 300) == pytest.approx(0.1)


def test_sampler_shards_ranks_and_balances():
    a = EpochSampler(10, shuffle=True, seed=1, rank=0, world=2)
    b = EpochSampler(10, shuffle=True, seed=1, rank=1, world=2)
    ia, ib = [i for i, _ in a], [i for i, _ in b]
    assert sorted(ia + ib) == list(range(10))
    a.set_epoch(1)
    assert [i for i, _ in a] != ia
    labels = np.array([0] * 90 + [1] * 10)
    weights = 1.0 / np.bincount(labels)[labels]
    drawn = [i for i, _ in EpochSampler(100, shuffle=True, seed=0, weights=weights)]
    assert 30 < int((labels[drawn] == 1).sum()) < 70


def test_seed_recipes_keep_the_seed_constants():
    s2 = recipe("classifier", "seed002")
    assert (s2.optimizer, s2.lr, s2.momentum, s2.weight_decay, s2.batch_size, s2.epochs) == (
        "sgd", 1e-3, 0.5, 1e-2, 128, 40,
    )  # fmt: skip
    assert s2.input_spec.mean == (0.55006141,) and s2.input_spec.resize == "center_crop" and s2.channels == 3
    s1 = recipe("segmenter", "seed001")
    assert (s1.size, s1.optimizer, s1.lr, s1.batch_size, s1.epochs, s1.seg_bce_weight) == (
        128,
        "adam",
        1e-4,
        16,
        20,
        0.5,
    )
    assert recipe("segmenter", "default", model="deeplabv3plus:resnet18").builder_args == {
        "encoder": "resnet18"
    }


# -- full runs ------------------------------------------------------------------------------------------------


def _loads(out: Path, model_id: str) -> torch.nn.Module:
    manifest = load_manifest([out])
    spec = manifest.model(model_id)
    return build_and_load(spec, verified_weights(spec, [out]))


def test_classifier_run_lowers_loss_and_registers_weights(source, tmp_path):
    cfg = recipe("classifier", "default", epochs=4, batch_size=16, lr=3e-3, dropout=0.0, **TINY)
    res = train_model(cfg, source, tmp_path, command="pneumoview train classifier ...", log=lambda m: None)
    losses = [h["train_loss"] for h in res.fit.history]
    assert losses[-1] < losses[0]
    entry = tomllib.loads((tmp_path / "manifest.toml").read_text())["model"][0]
    assert entry["id"] == "rsna3-classifier" and entry["positive_class"] == "Lung Opacity"
    assert entry["weights"] == f"rsna3-classifier-{entry['sha256'][:8]}.pt"
    assert entry["training"]["val_patients"] > 0 and "auc_opacity" in entry["metrics"]
    assert entry["intended_use"].startswith("Research use only")
    model = _loads(tmp_path, "rsna3-classifier")
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 3)
    run = tmp_path / "runs" / "rsna3-classifier"
    for name in ("checkpoint.pt", "log.csv", "curves.png", "config.json"):
        assert (run / name).is_file()
    assert len((run / "log.csv").read_text().splitlines()) == 1 + 4


def test_segmenter_run_lowers_loss_and_registers_weights(source, tmp_path):
    cfg = recipe("segmenter", "default", epochs=3, batch_size=16, lr=3e-3, **TINY)
    res = train_model(cfg, source, tmp_path, log=lambda m: None)
    losses = [h["train_loss"] for h in res.fit.history]
    assert losses[-1] < losses[0]
    assert {"rsna_map", "dice_pos"} <= set(res.fit.history[0])
    model = _loads(tmp_path, "seg-unet-resnet18")
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_detector_run_lowers_loss_and_registers_weights(source, tmp_path):
    cfg = recipe("detector", "default", epochs=2, batch_size=8, lr=1e-3, **{**TINY, "limit": 6})
    res = train_model(cfg, source, tmp_path, log=lambda m: None)
    losses = [h["train_loss"] for h in res.fit.history]
    assert losses[-1] < losses[0]
    entry = tomllib.loads((tmp_path / "manifest.toml").read_text())["model"][0]
    assert entry["builder_args"]["min_size"] == 64 and entry["input"]["std"] == [1.0]
    model = _loads(tmp_path, "detector")
    with torch.no_grad():
        out = model([torch.zeros(3, 64, 64)])
    assert set(out[0]) == {"boxes", "labels", "scores"}


def test_resume_reproduces_the_uninterrupted_run(source, tmp_path):
    base = dict(TINY, augment="full", epochs=3, batch_size=4, dropout=0.3, seed=5)
    whole = train_model(recipe("classifier", "default", **base), source, tmp_path / "a", log=lambda m: None)
    part = train_model(
        recipe("classifier", "default", stop_after=1, **base), source, tmp_path / "b", log=lambda m: None
    )
    assert not part.fit.completed and part.weights is None
    ck = tmp_path / "b" / "runs" / "rsna3-classifier" / "checkpoint.pt"
    assert load_checkpoint(ck)["epoch"] == 1
    rest = train_model(
        recipe("classifier", "default", **base), source, tmp_path / "b", resume=ck, log=lambda m: None
    )
    a = load_checkpoint(tmp_path / "a" / "runs" / "rsna3-classifier" / "checkpoint.pt")["model"]
    b = load_checkpoint(ck)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in whole.fit.history] == [h["train_loss"] for h in rest.fit.history]
    assert whole.sha256 == rest.sha256


def test_cli_imagenet_falls_back_offline(tmp_path, capsys):
    from pneumoview.training.cli import main

    args = [
        "train", "classifier", "--labels", str(LABELS), "--classes", str(CLASSES), "--index", str(INDEX),
        "--images", str(RSNA / "images-512"), "--limit", "8", "--size", "32", "--epochs", "1", "--workers", "0",
        "--device", "cpu", "--no-progress", "--out", str(tmp_path / "m"), "--imagenet",
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ImageNet weights are not available" in out and "from scratch" in out
    entry = tomllib.loads((tmp_path / "m" / "manifest.toml").read_text())["model"][0]
    assert entry["training"]["imagenet_init"] is False
    assert entry["training"]["command"].startswith("pneumoview train classifier")
    assert main([*args[:-1], "--require-imagenet", "--out", str(tmp_path / "n")]) == 1
    assert "--require-imagenet" in capsys.readouterr().err
    assert not (tmp_path / "n" / "manifest.toml").exists()


def test_ddp_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "hub")}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "pneumoview.training.cli", "train", "segmenter", "--labels", str(LABELS), "--index", str(INDEX),
        "--images", str(RSNA / "images-512"), "--limit", "12", "--size", "64", "--epochs", "2", "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("== seg-unet-resnet18: completed ==") == 1  # only rank 0 reports
    manifest = tomllib.loads((out / "manifest.toml").read_text())
    assert [m["id"] for m in manifest["model"]] == ["seg-unet-resnet18"]
    assert len(list(out.glob("*.pt"))) == 1
    log = (out / "runs" / "seg-unet-resnet18" / "log.csv").read_text().splitlines()
    assert len(log) == 3
    # Each rank trained on its own shard: the 2-process run reports the full validation set on rank 0.
    assert manifest["model"][0]["training"]["val_images"] >= 2


def test_subsample_draws_every_class(source):
    picked = subsample(source.records, 9, seed=0)
    assert len(picked) == 9
    assert {r.label for r in picked} == {"Normal", "No Lung Opacity / Not Normal", "Lung Opacity"}


# -- --init-from: a backbone from a model trained before ------------------------------------------------------------


def test_classifier_backbone_moves_into_the_light_detector_unchanged():
    from pneumoview.inference.builders import build
    from pneumoview.training.recipes import LIGHT_DETECTOR
    from pneumoview.training.transfer import transfer_resnet_weights

    torch.manual_seed(0)
    classifier = build("resnet18_classifier", num_classes=3, in_channels=1).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so that they must be copied too
        for m in classifier.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    detector = build("fasterrcnn_resnet18_fpn", min_size=64, max_size=64, **LIGHT_DETECTOR).eval()
    report = transfer_resnet_weights(detector, classifier.state_dict())
    assert report.copied == report.backbone_tensors == 100 and report.adapted == ("conv1 1 → 3 channels",)
    grey = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        c = classifier
        x = c.maxpool(c.relu(c.bn1(c.conv1(grey))))
        expected = c.layer4(c.layer3(c.layer2(c.layer1(x))))
        got = detector.backbone.body(grey.repeat(1, 3, 1, 1))["2"]  # a grey image on 3 channels
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_unet_encoder_gives_the_stages_it_has_and_other_families_refuse():
    from pneumoview.errors import ModelLoadError
    from pneumoview.inference.builders import build
    from pneumoview.training.transfer import transfer_resnet_weights

    unet = build("unet", encoder="resnet18", in_channels=1, decoder_channels=[32, 16, 8, 4])
    classifier = build("resnet18_classifier", num_classes=3, in_channels=1)
    report = transfer_resnet_weights(classifier, unet.state_dict())
    assert 0 < report.copied < report.backbone_tensors  # the U-Net encoder stops at layer3
    source = unet.state_dict()["encoder.body.layer3.1.conv2.weight"]
    assert torch.equal(classifier.layer3[1].conv2.weight, source)
    vgg = build("scse_unet", encoder="vgg11", in_channels=1)
    with pytest.raises(ModelLoadError, match="shares no ResNet layer"):
        transfer_resnet_weights(classifier, vgg.state_dict())
    resnet50 = build("resnet50_classifier", num_classes=3, in_channels=1)
    before = resnet50.layer1[0].bn1.weight.clone()
    with pytest.raises(ModelLoadError, match="different ResNet"):  # some layers fit by chance: copy none
        transfer_resnet_weights(resnet50, classifier.state_dict())
    assert torch.equal(resnet50.layer1[0].bn1.weight, before)


def test_cli_init_from_a_trained_classifier_records_it_and_warns_on_another_split(tmp_path, capsys):
    from pneumoview.training.cli import main

    out = tmp_path / "m"
    data = [
        "--labels", str(LABELS), "--classes", str(CLASSES), "--index", str(INDEX), "--images",
        str(RSNA / "images-512"), "--limit", "10", "--size", "64", "--epochs", "1", "--workers", "0", "--device",
        "cpu", "--no-progress", "--out", str(out), "--val-fraction", "0.3",
    ]  # fmt: skip
    assert main(["train", "classifier", *data]) == 0
    capsys.readouterr()
    assert main(["train", "detector", "--recipe", "light", "--init-from", "rsna3-classifier", *data]) == 0
    text = capsys.readouterr().out
    assert "backbone initialised from rsna3-classifier 1.0.0" in text and "warning" not in text
    entries = {m["id"]: m for m in tomllib.loads((out / "manifest.toml").read_text())["model"]}
    detector = entries["detector"]
    sha = entries["rsna3-classifier"]["sha256"]
    assert detector["training"]["init_from"] == f"rsna3-classifier 1.0.0 (sha256 {sha[:12]})"
    assert detector["builder_args"]["fpn_levels"] == [2, 3, 4] and detector["builder_args"]["min_size"] == 64
    _loads(out, "detector")  # the recorded architecture rebuilds and loads strictly
    # Another split seed: the classifier may have trained on this run's validation patients.
    args = ["train", "detector", "--recipe", "light", "--init-from", "rsna3-classifier", "--id", "det2"]
    assert main([*args, *data, "--split-seed", "3"]) == 0
    assert "may have trained on this run's validation images" in capsys.readouterr().out
    assert main([*args, *data, "--init-from", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "no-such-model" in err and "known models" in err and "rsna3-classifier" in err
