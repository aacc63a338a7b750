"""Reduced-resolution JPEG 2000 decodes (pneumoview.imaging.j2k_reduce, pneumoview.imaging.progressive) on the
real WG04 CR chest radiographs and a 2048² lossless derivative of one of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid as dcm_uid

from pneumoview.errors import ImageReadError
from pneumoview.imaging import load_image
from pneumoview.imaging.decoders import decode_first_frame
from pneumoview.imaging.j2k_reduce import decode_reduced, preview_reduction
from pneumoview.imaging.progressive import ReducedImage, load_progressive
from tests.gui_helpers import CHEST_DICOM, rsna_images
from tests.j2k_fixtures import RG1_J2K, SHARED, make_2k_j2k

RG3_J2K = SHARED / "dicom" / "chest" / "WG04_RG3_J2KI_nonchest.dcm"


@pytest.fixture(scope="module")
def j2k_2k(tmp_path_factory) -> Path:
    return make_2k_j2k(tmp_path_factory.mktemp("j2k"))[0]


def _steps(path: Path) -> list[ReducedImage | object]:
    return list(load_progressive(path))


def _block_mean(full: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Mean of each ``factor`` × ``factor`` block of ``full`` (edge-padded to ``shape * factor``)."""
    h, w = shape
    pad = np.pad(
        full.astype(np.float64), ((0, h * factor - full.shape[0]), (0, w * factor - full.shape[1])), "edge"
    )
    return pad.reshape(h, factor, w, factor).mean(axis=(1, 3))


def test_2k_lossless_gets_a_quarter_size_first_decode_close_to_the_full_one(shared_data, j2k_2k):
    steps = _steps(j2k_2k)
    assert [type(s).__name__ for s in steps] == ["ReducedImage", "XrayImage"]
    reduced, full = steps
    assert isinstance(reduced, ReducedImage)
    assert full.shape == (2048, 2048) and reduced.full_shape == (2048, 2048)
    assert reduced.factor == 4 and reduced.image.shape == (512, 512)
    small = reduced.image
    # Same conventions as the full decode: file units, the file's window, MONOCHROME1 inversion.
    assert small.modality.dtype == np.float32 and small.display.dtype == np.uint8
    assert small.window == full.window and small.windows == full.windows
    assert small.inverted and full.inverted and small.photometric == full.photometric == "MONOCHROME1"
    assert small.metadata["Rows"] == "2048" and small.image_id == full.image_id
    np.testing.assert_array_equal(full.display, load_image(j2k_2k).display)
    # Reduced pixel (r, c) is the low-pass sample centred on full pixel (4r, 4c).
    value_range = float(full.modality.max() - full.modality.min())
    diff = np.abs(full.modality[::4, ::4] - small.modality)
    assert diff.mean() < 0.005 * value_range and np.percentile(diff, 99) < 0.05 * value_range
    assert np.abs(full.display[::4, ::4].astype(np.float32) - small.display).mean() < 2.0
    # …and the alignment matters: one full pixel off, or the middle of each 4 × 4 block, is clearly worse.
    one_off = np.abs(full.modality[1::4, 1::4] - small.modality).mean()
    block_middle = np.abs(_block_mean(full.modality, 4, small.shape) - small.modality).mean()
    assert one_off > 1.5 * diff.mean() and block_middle > 1.5 * diff.mean()


def test_real_1955x1841_j2k_gets_a_reduced_decode_of_the_right_size(shared_data):
    reduced, full = _steps(RG1_J2K)
    assert isinstance(reduced, ReducedImage) and full.shape == (1955, 1841)
    f = reduced.factor
    # 1841 = 4 × 460 + 1: Pillow's own sizing (rounding, where OpenJPEG rounds up) would refuse 1/4 here.
    assert f == 4 and reduced.image.shape == (489, 461)
    diff = np.abs(full.display[::4, ::4].astype(np.float32) - reduced.image.display)
    assert diff.mean() < 2.0


def test_the_pillow_path_gives_the_stored_values_exactly(shared_data):
    ds = pydicom.dcmread(RG3_J2K)
    reference, _, plugin = decode_first_frame(ds, RG3_J2K)
    assert plugin == "pylibjpeg"
    same, props, _ = decode_reduced(ds, 0)
    assert same.dtype == reference.dtype
    np.testing.assert_array_equal(same, reference)
    assert props["photometric_interpretation"] == "MONOCHROME1"


def test_signed_samples_keep_their_sign(make_dicom, tmp_path):
    rng = np.random.default_rng(3)
    values = (rng.integers(-2048, 2047, size=(96, 80))).astype(np.int16)
    path = make_dicom(values, "signed.dcm", bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.compress(dcm_uid.JPEG2000Lossless, values, encoding_plugin="pylibjpeg")
    arr, _, _ = decode_reduced(ds, 0)
    assert arr.dtype == np.int16
    np.testing.assert_array_equal(arr, values)
    half, _, _ = decode_reduced(ds, 1)
    assert half.shape == (48, 40) and half.min() < 0
    assert preview_reduction(ds) == 0  # small enough to decode in full at once


def test_coordinate_mapping_between_the_frames():
    image = load_image(rsna_images(1)[0])
    reduced = ReducedImage(image, 4, (2048, 2048))
    # The centre of reduced pixel (row 2, col 10) is the centre of full pixel (row 8, col 40).
    assert reduced.to_full(10.5, 2.5) == (40.5, 8.5)
    assert reduced.to_full(0.0, 0.0) == (-1.5, -1.5) == (reduced.offset, reduced.offset)
    assert reduced.from_full(*reduced.to_full(123.25, 7.0)) == (123.25, 7.0)


def test_only_large_jpeg_2000_gets_a_reduced_decode(shared_data, tmp_path):
    assert preview_reduction(pydicom.dcmread(CHEST_DICOM)) == 0  # JPEG baseline 1024²
    jpeg = rsna_images(1)[0]
    (only,) = _steps(jpeg)
    np.testing.assert_array_equal(only.display, load_image(jpeg).display)
    (dicom,) = _steps(CHEST_DICOM)
    np.testing.assert_array_equal(dicom.display, load_image(CHEST_DICOM).display)


def test_a_damaged_file_raises_the_readers_error(shared_data, j2k_2k, tmp_path):
    data = j2k_2k.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageReadError) as expected:
        load_image(cut)
    with pytest.raises(ImageReadError) as got:
        _steps(cut)
    assert got.value.message == expected.value.message and got.value.path == cut
    with pytest.raises(ImageReadError, match="does not exist"):
        _steps(tmp_path / "missing.dcm")


def test_the_viewer_decodes_jpeg_2000_in_the_worker_process_with_identical_pixels(shared_data, monkeypatch):
    """The viewer's setting (``pneumoview.gui.app.main`` turns it on): a JPEG 2000 decode goes to the decoder worker (so it never holds the GUI process's
    interpreter lock) and gives exactly the in-process pixels; other syntaxes stay in process."""
    from pneumoview.imaging import decoders, isolated

    in_process = load_image(RG1_J2K)
    sent: list[str] = []
    real = decoders.decode_isolated
    monkeypatch.setattr(
        decoders, "decode_isolated", lambda ds, plugin: sent.append(plugin) or real(ds, plugin)
    )
    decoders.decode_jpeg2000_in_worker(True)
    try:
        in_worker = load_image(RG1_J2K)
        load_image(CHEST_DICOM)  # JPEG baseline: Pillow, in process
    finally:
        decoders.decode_jpeg2000_in_worker(False)
    assert sent and all(p != "pillow" for p in sent), sent
    assert len(sent) == 1
    assert isolated._worker is not None
    np.testing.assert_array_equal(in_worker.modality, in_process.modality)
    np.testing.assert_array_equal(in_worker.display, in_process.display)
    load_image(RG1_J2K)
    assert len(sent) == 1  # off again: back in process
