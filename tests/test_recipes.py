"""The training recipes, pinned: every hyperparameter of every named recipe, the model overrides and the learning-rate
schedule of the seed-003 detector (torchvision's warm-up). Written before the recipes became a table, kept since."""

from __future__ import annotations

import math

import pytest

from pneumoview.training.recipes import recipe

# TrainConfig's values that no recipe changes (the command line may).
COMMON = {
    "builder_args": {}, "mean": [0.5], "std": [0.25], "resize": "stretch", "scheme": None, "optimizer": "adamw",
    "lr": 1e-3, "weight_decay": 1e-4, "momentum": 0.9, "scheduler": "cosine", "warmup_epochs": 1.0,
    "warmup_factor": 0.01, "warmup_steps": None, "step_size": 3, "gamma": 0.1, "epochs": 40, "batch_size": 16, "eval_batch_size": None,
    "accumulate": 1, "patience": 0, "augment": "full", "balanced": False, "label_smoothing": 0.0, "dropout": 0.0,
    "seg_bce_weight": 0.5, "grad_clip": 0.0, "imagenet": False, "require_imagenet": False, "init_from": None,
    "amp": "auto", "channels_last": True, "val_fraction": 0.2, "folds": None, "fold": None, "split_seed": 0,
    "seed": 0, "workers": 2, "device": "auto", "max_minutes": None, "max_steps": None, "stop_after": None,
    "limit": None, "version": "1.0.0", "progress": True,
}  # fmt: skip
LIGHT_DETECTOR_ARGS = {
    "fpn_levels": [2, 3, 4], "fpn_channels": 128, "anchor_sizes": [32, 64, 128, 256],
    "anchor_ratios": [0.7, 1.0, 1.4, 2.0], "box_batch_size_per_image": 128, "rpn_pre_nms_top_n_train": 500,
    "rpn_post_nms_top_n_train": 500,
}  # fmt: skip
PINNED = {
    ("classifier", "default"): {
        "model_id": "rsna3-classifier", "builder": "resnet18_classifier", "size": 256, "channels": 1,
        "scheme": "rsna3", "weight_decay": 0.05, "warmup_epochs": 2, "batch_size": 32, "label_smoothing": 0.05,
        "dropout": 0.2,
    },
    ("classifier", "seed002"): {
        "model_id": "acse4-classifier", "builder": "resnet18_classifier", "size": 224, "channels": 3,
        "mean": [0.55006141], "std": [0.17962446], "resize": "center_crop", "scheme": "acse4", "optimizer": "sgd",
        "weight_decay": 1e-2, "momentum": 0.5, "scheduler": "constant", "warmup_epochs": 0, "batch_size": 128,
        "augment": "flip",
    },
    ("detector", "default"): {
        "model_id": "detector", "builder": "fasterrcnn_resnet18_fpn", "size": 384, "channels": 3, "mean": [0.0],
        "std": [1.0], "lr": 2e-4, "warmup_epochs": 1, "epochs": 24, "grad_clip": 10.0,
    },
    ("detector", "light"): {
        "model_id": "detector", "builder": "fasterrcnn_resnet18_fpn", "builder_args": LIGHT_DETECTOR_ARGS,
        "size": 256, "channels": 3, "mean": [0.0], "std": [1.0], "lr": 3e-4, "warmup_epochs": 1, "epochs": 12,
        "batch_size": 8,
        "grad_clip": 10.0,
    },
    ("detector", "seed003"): {
        "model_id": "detector", "builder": "fasterrcnn_resnet50_fpn", "size": 800, "channels": 3, "mean": [0.0],
        "std": [1.0], "optimizer": "sgd", "lr": 0.005, "weight_decay": 5e-4, "scheduler": "step",
        "warmup_epochs": 1, "warmup_factor": 1e-3, "warmup_steps": 1000, "epochs": 5, "batch_size": 8, "augment": "none",
    },
    ("segmenter", "default"): {
        "model_id": "seg-unet-resnet18", "builder": "unet",
        "builder_args": {"encoder": "resnet18", "decoder_channels": [256, 128, 64, 32]}, "size": 256, "channels": 1,
        "warmup_epochs": 2,
    },
    ("segmenter", "seed001"): {
        "model_id": "seg-unet-resnet152", "builder": "unet", "builder_args": {"encoder": "resnet152"}, "size": 128,
        "channels": 3, "std": [0.5], "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "scheduler": "constant",
        "warmup_epochs": 0, "epochs": 20, "eval_batch_size": 32, "augment": "none",
    },
}  # fmt: skip


@pytest.mark.parametrize(("family", "name"), sorted(PINNED))
def test_every_recipe_keeps_its_hyperparameters(family, name):
    expected = {"family": family, "recipe": name, **COMMON, **PINNED[(family, name)]}
    got = recipe(family, name).to_dict()
    assert got == expected
    # == would let 2 pass for 2.0: the types are pinned too (they reach config.json and the manifest).
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in expected.items()}


def test_model_overrides_and_command_line_values():
    assert recipe("segmenter", "default", model="unet:resnet34").builder_args == {
        "encoder": "resnet34",
        "decoder_channels": [256, 128, 64, 32],
    }
    assert recipe("segmenter", "seed001", model="deeplabv3plus:resnet18").builder_args == {
        "encoder": "resnet18"
    }
    # A builder without an encoder keeps the recipe's encoder; only U-Nets get the light decoder.
    light = recipe("segmenter", "default", model="deeplabv3plus")
    assert (light.builder, light.builder_args, light.model_id) == (
        "deeplabv3plus",
        {"encoder": "resnet18"},
        "seg-deeplabv3plus-resnet18",
    )
    assert recipe("detector", "seed003", model="fasterrcnn_resnet18_fpn").builder == "fasterrcnn_resnet18_fpn"
    with pytest.raises(ValueError, match="only segmenters take an encoder"):
        recipe("detector", "default", model="fasterrcnn:resnet18")
    cfg = recipe("detector", "light", lr=None, epochs=3, builder_args={"fpn_channels": 64}, model_id="d2")
    assert (
        cfg.lr,
        cfg.epochs,
        cfg.builder_args["fpn_channels"],
        cfg.builder_args["fpn_levels"],
        cfg.model_id,
    ) == (
        3e-4,
        3,
        64,
        [2, 3, 4],
        "d2",
    )


def test_a_run_never_changes_the_recipe_table():
    cfg = recipe("detector", "light")
    cfg.builder_args["fpn_levels"].append(5)
    cfg.builder_args["anchor_sizes"].clear()
    assert recipe("detector", "light").builder_args == LIGHT_DETECTOR_ARGS


@pytest.mark.parametrize(
    ("family", "name", "message"),
    [
        ("classifier", "seed003", "unknown classifier recipe 'seed003'; valid: default, seed002"),
        ("detector", "fast", "unknown detector recipe 'fast'; valid: default, light, seed003"),
        ("segmenter", "light", "unknown segmenter recipe 'light'; valid: default, seed001"),
        ("gan", "default", "unknown family 'gan'; valid: classifier, detector, segmenter"),
    ],
)
def test_unknown_recipes_name_the_valid_ones(family, name, message):
    with pytest.raises(ValueError) as caught:
        recipe(family, name)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("family", "name", "factors"),
    [
        # torchvision's detection warm-up: 1/1000 → 1 over min(1000, steps - 1) steps of epoch 0, then StepLR(3, 0.1).
        ("detector", "seed003", [0.001, 0.021387755102, 0.20487755102, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1]),
        ("detector", "default", [0.01, 0.0298, 0.208, 0.9802, 1.0, 0.995389543288, 0.982007111112, 0.981644057237,
                                 0.928638634007]),
        ("classifier", "seed002", [1.0] * 9),
        ("segmenter", "default", [0.01, 0.0199, 0.109, 0.4951, 0.505, 1.0, 0.998376238178, 0.998309324038,
                                  0.985053397506]),
    ],
)  # fmt: skip
def test_learning_rate_schedules(family, name, factors):
    from pneumoview.training.schedule import Plan, lr_factor

    cfg = recipe(family, name)
    plan = Plan(cfg.epochs, 50)
    got = [lr_factor(cfg, plan, s) for s in (0, 1, 10, 49, 50, 100, 149, 150, 249)]
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(got, factors, strict=True)), got


def test_seed003_warms_up_for_1000_steps_at_most():
    from pneumoview.training.schedule import Plan, lr_factor

    cfg = recipe("detector", "seed003")
    long = Plan(cfg.epochs, 5000)
    assert lr_factor(cfg, long, 999) < 1.0 == lr_factor(cfg, long, 1000)
    # The other recipes warm up for warmup_epochs, however long the epoch.
    other = recipe("detector", "default")
    assert lr_factor(other, long, 1000) < 1.0
