"""The model registry (manifest), checksums and safe weight loading."""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

import pytest
import torch

from pneumoview.errors import ChecksumError, ManifestError, ModelLoadError, ModelNotInstalledError
from pneumoview.inference.manifest import load_manifest, models_dirs, parse_manifest
from pneumoview.inference.weights import (
    STATUS_CHECKSUM,
    STATUS_NOT_INSTALLED,
    STATUS_OK,
    build_and_load,
    load_state_dict_file,
    model_status,
    verified_weights,
)
from tests.model_fixtures import add_ensemble, add_model

MODEL = textwrap.dedent(
    """
    schema = 1
    [[model]]
    id = "m"
    task = "classify"
    builder = "test_mean_classifier"
    input = { size = [64, 64], channels = 1, mean = [0.5], std = [0.25] }
    weights = "m.pt"
    sha256 = "{sha}"
    version = "1"
    classes = ["a", "b", "c"]
    """
)


def _text(**extra: str) -> str:
    text = MODEL.replace("{sha}", "0" * 64)
    return text + "".join(f"{k} = {v}\n" for k, v in extra.items())


def test_parse_valid_manifest():
    models, ensembles = parse_manifest(_text())
    assert models[0].id == "m" and models[0].input.size == (64, 64) and ensembles == []


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ManifestError, match=r"unknown key\(s\) colour.*valid keys: .*builder"):
        parse_manifest(_text(colour='"red"'))


def test_short_sha_rejected():
    with pytest.raises(ManifestError, match="64-hex"):
        parse_manifest(MODEL.replace("{sha}", "abc"))


def test_unknown_builder_lists_valid_builders(tmp_path: Path):
    (tmp_path / "manifest.toml").write_text(_text().replace("test_mean_classifier", "resnet9000"))
    with pytest.raises(
        ManifestError, match="unknown builder 'resnet9000'; valid builders: .*resnet18_classifier"
    ):
        load_manifest([tmp_path])


def test_missing_ensemble_member_names_valid_models(tmp_path: Path):
    add_model(tmp_path, "seg-a", task="segment", builder="test_pixel_segmenter")
    add_ensemble(tmp_path, "ens", ["seg-a", "seg-zzz"])
    with pytest.raises(ManifestError, match="member 'seg-zzz' is not a known model; valid models: seg-a"):
        load_manifest([tmp_path])


def test_ensemble_member_task_must_match(tmp_path: Path):
    add_model(tmp_path, "cls", task="classify", builder="test_mean_classifier", classes=["a", "b", "c"])
    add_ensemble(tmp_path, "ens", ["cls"])
    with pytest.raises(ManifestError, match="is a classify model"):
        load_manifest([tmp_path])


def test_earlier_folder_wins(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    add_model(a, "m", task="segment", builder="test_pixel_segmenter", size=64)
    add_model(b, "m", task="segment", builder="test_pixel_segmenter", size=32)
    assert load_manifest([a, b]).model("m").input.size == (64, 64)
    assert load_manifest([b, a]).model("m").input.size == (32, 32)


def test_models_dirs_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PNEUMOVIEW_MODELS", f"{tmp_path / 'env1'}{os.pathsep}{tmp_path / 'env2'}")
    dirs = models_dirs(tmp_path / "setting")
    assert dirs[:3] == [tmp_path / "setting", tmp_path / "env1", tmp_path / "env2"]
    assert dirs[-1].name == "models" and (dirs[-1].parent / "pneumoview").is_dir()


def test_checksum_mismatch_refused(tmp_path: Path):
    add_model(tmp_path, "m", task="segment", builder="test_pixel_segmenter")
    spec = load_manifest([tmp_path]).model("m")
    assert verified_weights(spec, [tmp_path]).name == "m.pt"
    with open(tmp_path / "m.pt", "ab") as f:  # tamper
        f.write(b"\0")
    with pytest.raises(ChecksumError, match="damaged or was replaced"):
        verified_weights(spec, [tmp_path])
    assert model_status(spec, [tmp_path]).status == STATUS_CHECKSUM


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_checkpoint_refused(tmp_path: Path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": _Evil()}, f)
    with pytest.raises(ModelLoadError, match="refused to load"):
        load_state_dict_file(path)
    torch.save({"weight": torch.zeros(2), "extra": _Evil()}, tmp_path / "evil2.pt")
    with pytest.raises(ModelLoadError, match="refused to load"):
        load_state_dict_file(tmp_path / "evil2.pt")


def test_wrong_architecture_refused(tmp_path: Path):
    add_model(tmp_path, "m", task="segment", builder="test_pixel_segmenter")
    spec = load_manifest([tmp_path]).model("m")
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(ModelLoadError, match="do not fit model 'm'"):
        build_and_load(spec, tmp_path / "other.pt")


def test_not_installed_is_a_status_not_a_crash(tmp_path: Path):
    add_model(tmp_path, "m", task="segment", builder="test_pixel_segmenter")
    spec = load_manifest([tmp_path]).model("m")
    (tmp_path / "m.pt").unlink()
    st = model_status(spec, [tmp_path])
    assert st.status == STATUS_NOT_INSTALLED and "pneumoview train" in st.message
    with pytest.raises(ModelNotInstalledError, match="copy the file"):
        verified_weights(spec, [tmp_path])


def test_fp16_weights_load_into_fp32_model(tmp_path: Path):
    add_model(tmp_path, "m", task="segment", builder="test_pixel_segmenter")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.save({k: v.half() for k, v in state.items()}, tmp_path / "m.pt")
    spec = load_manifest([tmp_path]).model("m")
    model = build_and_load(spec, tmp_path / "m.pt")
    assert next(model.parameters()).dtype == torch.float32
    assert model_status(spec, [tmp_path]).status == STATUS_CHECKSUM  # the file changed; the manifest did not


def test_status_ok(tmp_path: Path):
    add_model(tmp_path, "m", task="segment", builder="test_pixel_segmenter")
    st = model_status(load_manifest([tmp_path]).model("m"), [tmp_path], try_load=True)
    assert st.status == STATUS_OK and st.size_bytes and len(st.sha256_prefix) == 12
