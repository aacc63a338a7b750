"""load_image on the real DICOM/PNG/JPEG files in ../shared/data, plus synthetic files for the LUT rules."""

from __future__ import annotations

import gzip
import io
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from pneumoview.errors import (
    ImageReadError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedTransferSyntaxError,
)
from pneumoview.imaging import SUPPORTED_SUFFIXES, decoder_plugins, load_image, sniff_kind

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DICOM = DATA / "dicom"
CHEST = DICOM / "chest"
ROBUST = DICOM / "robustness"
SIIM = CHEST / "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
NIH = CHEST / "nih-cxr14_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
RG1_J2K = CHEST / "WG04_RG1_J2KI.dcm"
RG1_JLS = CHEST / "WG04_RG1_JLSN.dcm"
FO_MONO1 = CHEST / "fo-dicom_CR-MONO1-10-chest.dcm"

# Every file under dicom/, including the notes and licence files: a scanner meets those too.
ALL_DICOM_TREE = sorted(p for p in DICOM.rglob("*") if p.is_file()) if DICOM.is_dir() else []


def _rel(p: Path) -> str:
    return str(p.relative_to(DICOM))


def _regions(display: np.ndarray) -> dict[str, float]:
    """Mean display value of the mediastinum band, the lateral lung bands and the band below the diaphragm."""
    h, w = display.shape
    rows = slice(int(0.3 * h), int(0.6 * h))
    lungs = np.concatenate(
        [
            display[rows, int(0.2 * w) : int(0.35 * w)].ravel(),
            display[rows, int(0.65 * w) : int(0.8 * w)].ravel(),
        ]
    )
    return {
        "mediastinum": float(display[rows, int(0.45 * w) : int(0.55 * w)].mean()),
        "lungs": float(lungs.mean()),
        "abdomen": float(display[int(0.88 * h) : int(0.97 * h), int(0.2 * w) : int(0.8 * w)].mean()),
    }


# ---------------------------------------------------------------------------------------------------------------
# Every real file loads or fails cleanly
# ---------------------------------------------------------------------------------------------------------------


def test_dicom_tree_is_complete(shared_data: Path) -> None:
    names = {p.name for p in ALL_DICOM_TREE}
    assert len(ALL_DICOM_TREE) > 100
    assert {"DICOMDIR", "IM00001D", "rtdose.dcm", "GH364.dcm", SIIM.name} <= names


@pytest.mark.parametrize("path", ALL_DICOM_TREE or [None], ids=_rel if ALL_DICOM_TREE else None)
def test_every_dicom_tree_file_loads_or_fails_cleanly(shared_data: Path, path: Path) -> None:
    try:
        image = load_image(path)
    except ImageReadError as exc:
        assert exc.stage in ("header", "pixels")
        assert exc.message.strip() and exc.path == path
        return
    assert image.display.dtype == np.uint8 and image.display.ndim == 2
    assert image.display.shape == image.modality.shape and image.modality.dtype == np.float32
    assert min(image.shape) > 0
    assert np.isfinite(image.modality).all()
    assert image.window.width > 0 and image.windows[:1] in ((), (image.window,))
    assert image.frame_count >= 1 and image.source == path
    assert image.image_id.startswith("img-")


def test_garbled_copies_of_a_real_file_fail_cleanly(shared_data: Path, tmp_path: Path) -> None:
    raw = SIIM.read_bytes()
    rng = np.random.default_rng(7)
    variants = [raw[:n] for n in (0, 100, 131, 140, 600, 1000, 1200, 60_000)]
    for _ in range(12):
        buf = bytearray(raw)
        idx = rng.integers(132, 1200, size=8)  # damage the header, where parsing decisions are made
        buf_arr = np.frombuffer(buf, dtype=np.uint8).copy()
        buf_arr[idx] = rng.integers(0, 256, size=8, dtype=np.uint8)
        variants.append(buf_arr.tobytes())
    for i, data in enumerate(variants):
        p = tmp_path / f"v{i}.dcm"
        p.write_bytes(data)
        try:
            load_image(p)
        except ImageReadError as exc:
            assert exc.message


# ---------------------------------------------------------------------------------------------------------------
# Real chest radiographs
# ---------------------------------------------------------------------------------------------------------------


def test_siim_rsna_layout_file(shared_data: Path) -> None:
    image = load_image(SIIM)
    ds = pydicom.dcmread(SIIM)
    assert image.shape == (1024, 1024)
    assert image.photometric == "MONOCHROME2" and not image.inverted
    # 8-bit data without a window is shown exactly as stored, the way the RSNA models saw pixel_array.
    np.testing.assert_array_equal(image.display, ds.pixel_array)
    np.testing.assert_array_equal(image.modality, ds.pixel_array.astype(np.float32))
    assert (image.window.low, image.window.high) == (0.0, 255.0) and image.windows == ()
    assert image.spacing_mm == (0.168, 0.168) and image.pixel_area_mm2 == pytest.approx(0.168**2)
    assert image.view == "PA"
    assert image.metadata["Modality"] == "CR" and image.metadata["BodyPartExamined"] == "CHEST"
    assert image.metadata["TransferSyntax"] == "JPEG Baseline (Process 1)"
    assert image.metadata["Decoder"] == "pillow"
    assert image.metadata["SeriesDescription"] == "view: PA"
    assert image.identifiers["PatientID"] == "16d7f894-55d7-4d95-8957-d18987f0e981"
    assert image.identifiers["SOPInstanceUID"] == ds.SOPInstanceUID
    leaked = {v for v in image.identifiers.values() if len(v) > 8} & set(image.metadata.values())
    assert not leaked and image.image_id.startswith("img-")
    assert image.image_id not in (ds.PatientID, ds.SOPInstanceUID)


def test_fake_monochrome1_is_the_inverse_of_the_original(shared_data: Path) -> None:
    original = load_image(SIIM)
    fake = load_image(CHEST / "Fake_MONOHR1.dcm")
    assert fake.photometric == "MONOCHROME1" and fake.inverted
    np.testing.assert_array_equal(fake.modality, original.modality)  # modality is never inverted
    np.testing.assert_array_equal(fake.display, 255 - original.display)


def test_monochrome1_and_monochrome2_versions_display_alike_8_bit(shared_data: Path, make_dicom) -> None:
    stored = pydicom.dcmread(SIIM).pixel_array
    mono1 = make_dicom(255 - stored, "mono1.dcm", "MONOCHROME1", 8)
    a, b = load_image(SIIM), load_image(mono1)
    assert b.inverted and not a.inverted
    assert np.abs(a.display.astype(int) - b.display.astype(int)).max() <= 1


def test_monochrome1_and_monochrome2_versions_display_alike_15_bit(shared_data: Path, make_dicom) -> None:
    ds = pydicom.dcmread(RG1_J2K)
    stored = ds.pixel_array
    top = 2**15 - 1
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    # Inverting stored values mirrors the window around the middle of the code range.
    mono2 = make_dicom(
        (top - stored).astype(np.uint16),
        "mono2.dcm",
        "MONOCHROME2",
        15,
        WindowCenter=top - center + 1,
        WindowWidth=width,
    )
    a, b = load_image(RG1_J2K), load_image(mono2)
    assert a.inverted and not b.inverted
    assert np.abs(a.display.astype(int) - b.display.astype(int)).max() <= 1


def test_jpeg2000_and_jpegls_copies_display_alike(shared_data: Path) -> None:
    j2k, jls = load_image(RG1_J2K), load_image(RG1_JLS)
    assert j2k.shape == jls.shape == (1955, 1841)
    assert j2k.metadata["Decoder"] == "pylibjpeg" and jls.metadata["Decoder"] == "pyjpegls"
    assert j2k.metadata["BitsStored"] == "15" and j2k.photometric == "MONOCHROME1" and j2k.inverted
    assert j2k.window.center == 15000.0 and j2k.view == "PA"
    diff = np.abs(j2k.display.astype(int) - jls.display.astype(int))
    assert diff.mean() < 1.5 and np.percentile(diff, 99.9) <= 4


@pytest.mark.parametrize("path", [SIIM, NIH, RG1_J2K, RG1_JLS, FO_MONO1], ids=lambda p: p.name[:24])
def test_chest_orientation_and_intensity(shared_data: Path, path: Path) -> None:
    r = _regions(load_image(path).display)
    # Air-filled lungs are dark, mediastinum and the abdomen below the diaphragm bright, whatever the encoding.
    assert r["mediastinum"] > r["lungs"] + 30, r
    assert r["abdomen"] > r["lungs"] + 30, r


def test_ten_bit_monochrome1_without_file_meta(shared_data: Path) -> None:
    image = load_image(FO_MONO1)
    assert image.shape == (440, 440)
    assert image.photometric == "MONOCHROME1" and image.inverted
    assert (image.modality.min(), image.modality.max()) == (0.0, 979.0)
    assert image.metadata["TransferSyntax"] == "Implicit VR Little Endian"
    assert any("no DICOM preamble" in n for n in image.notes)
    assert sniff_kind(FO_MONO1) == "dicom"


def test_uncompressed_nih_image_has_no_spacing(shared_data: Path) -> None:
    image = load_image(NIH)
    assert image.shape == (1024, 1024) and image.spacing_mm is None
    np.testing.assert_array_equal(image.display, pydicom.dcmread(NIH).pixel_array)


# ---------------------------------------------------------------------------------------------------------------
# Encodings and odd files from the DICOM library test suites
# ---------------------------------------------------------------------------------------------------------------


def _mr_small_modality() -> np.ndarray:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    return apply_modality_lut(ds.pixel_array, ds).astype(np.float32)


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "MR_small_RLE.dcm"])
def test_big_endian_and_rle_equal_the_reference(shared_data: Path, name: str) -> None:
    image = load_image(ROBUST / "pydicom" / name)
    np.testing.assert_array_equal(image.modality, _mr_small_modality())
    assert image.window.center == 600.0 and image.spacing_mm == (0.3125, 0.3125)


def test_deflated_file_loads(shared_data: Path) -> None:
    image = load_image(ROBUST / "pydicom" / "image_dfl.dcm")
    assert image.shape == (512, 512) and image.metadata["TransferSyntax"].startswith("Deflated")


def test_jpeg_ls_uses_pyjpegls(shared_data: Path) -> None:
    image = load_image(ROBUST / "fo-dicom" / "GH364.dcm")
    assert image.shape == (768, 1024) and image.metadata["Decoder"] == "pyjpegls"


def test_jpeg_lossless_uses_gdcm(shared_data: Path) -> None:
    image = load_image(ROBUST / "pydicom-data" / "bad_sequence.dcm")
    assert image.shape == (512, 512) and image.metadata["Decoder"] == "gdcm"
    assert image.window.center == 40.0 and [w.center for w in image.windows] == [40.0, 450.0]


def test_multi_frame_shows_frame_one(shared_data: Path) -> None:
    path = ROBUST / "pydicom" / "rtdose.dcm"
    image = load_image(path)
    assert image.frame_count == 15 and image.shape == (10, 10)
    assert "multi-frame image: showing frame 1 of 15" in image.notes
    np.testing.assert_array_equal(image.modality, pydicom.dcmread(path).pixel_array[0].astype(np.float32))


def test_rgb_dicom_becomes_grey(shared_data: Path) -> None:
    image = load_image(ROBUST / "pydicom" / "SC_rgb_jpeg.dcm")
    rgb = pydicom.dcmread(ROBUST / "pydicom" / "SC_rgb_jpeg.dcm").pixel_array.astype(np.float32)
    assert image.photometric.startswith(("RGB", "YBR")) and image.shape == (256, 256)
    expected = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    np.testing.assert_allclose(image.modality, expected, atol=0.01)
    assert np.abs(image.display.astype(float) - expected).max() <= 0.5 + 1e-3


@pytest.mark.parametrize(
    ("rel", "kind"),
    [
        ("pydicom/waveform_ecg.dcm", "waveform"),
        ("pydicom/rtplan_truncated.dcm", "RT plan"),
        ("pydicom/ExplVR_BigEndNoMeta.dcm", "RT plan"),
        ("pydicom/dicomdirtests/DICOMDIR", "DICOMDIR (media directory)"),
    ],
)
def test_non_image_objects(shared_data: Path, rel: str, kind: str) -> None:
    with pytest.raises(NotAnImageError) as info:
        load_image(ROBUST / rel)
    assert info.value.kind == kind and info.value.stage == "pixels" and kind in info.value.message


def test_truncated_pixel_data(shared_data: Path) -> None:
    with pytest.raises(ImageReadError) as info:
        load_image(ROBUST / "pydicom" / "MR_truncated.dcm")
    assert info.value.stage == "pixels" and "truncated" in info.value.message


def test_invalid_integer_string(shared_data: Path) -> None:
    # pydicom warns about the value; the warning is expected here, and the loader turns it into a clear error.
    with (
        pytest.warns(UserWarning, match="Invalid value for VR IS: '1A'"),
        pytest.raises(ImageReadError) as info,
    ):
        load_image(ROBUST / "pydicom" / "badVR.dcm")
    assert info.value.stage == "pixels" and "'1A'" in info.value.message


def test_twelve_bit_jpeg_extended_is_unsupported_with_a_hint(shared_data: Path) -> None:
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        load_image(ROBUST / "pydicom" / "JPEG-lossy.dcm")
    err = info.value
    assert (
        err.syntax_uid == "1.2.840.10008.1.2.4.51"
        and err.plugin
        and f"pip install {err.plugin}" in err.message
    )


def test_unknown_transfer_syntax_is_unsupported(shared_data: Path, tmp_path: Path) -> None:
    raw = SIIM.read_bytes()
    # Same length as the JPEG baseline UID, so the file meta group length stays right; no decoder knows it.
    patched = raw.replace(b"1.2.840.10008.1.2.4.50", b"1.2.840.10008.1.2.4.99", 1)
    assert patched != raw
    out = tmp_path / "unknown-syntax.dcm"
    out.write_bytes(patched)
    with pytest.raises(UnsupportedTransferSyntaxError) as info:
        load_image(out)
    assert info.value.syntax_uid == "1.2.840.10008.1.2.4.99"


def test_gzip_and_dicomdir_member_messages(shared_data: Path) -> None:
    with pytest.raises(ImageReadError) as info:
        load_image(ROBUST / "pydicom" / "zipMR.gz")
    assert info.value.stage == "header" and "gzip" in info.value.message
    with pytest.raises(ImageReadError) as info:
        load_image(
            ROBUST / "pydicom" / "dicomdirtests" / "TINY_ALPHA" / "PT000000/ST000000/SE000000/IM000000"
        )
    assert info.value.stage == "pixels" and "no pixel data" in info.value.message


# ---------------------------------------------------------------------------------------------------------------
# Broken and oversized inputs
# ---------------------------------------------------------------------------------------------------------------


def test_garbage_empty_missing_and_folder_fail_at_header(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    for path in (garbage, empty, text, tmp_path / "missing.dcm", tmp_path):
        with pytest.raises(ImageReadError) as info:
            load_image(path)
        assert info.value.stage == "header" and info.value.message, path
    with pytest.raises(ImageReadError, match="empty"):
        load_image(empty)


def test_huge_header_is_refused_before_decoding(make_dicom) -> None:
    path = make_dicom(np.zeros((4, 4), np.uint16), "huge.dcm")
    ds = pydicom.dcmread(path)
    ds.Rows = ds.Columns = 65535
    ds.NumberOfFrames = 3
    ds.save_as(path)
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError) as info:
            load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # 65535² × 3 frames would be 25 GB
    assert "80 megapixels" in info.value.message and "× 3 frames" in info.value.message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_max_pixels_applies_to_every_format(shared_data: Path) -> None:
    png = next((DATA / "rsna" / "images-1024").glob("*.png"))
    limit_before = Image.MAX_IMAGE_PIXELS
    for path in (SIIM, png):
        with pytest.raises(ImageTooLargeError):
            load_image(path, max_pixels=1_000_000)
    # Pillow's own decompression-bomb error (over twice its limit) becomes ImageTooLargeError too.
    with pytest.raises(ImageTooLargeError):
        load_image(png, max_pixels=100_000)
    assert load_image(png).shape == (1024, 1024)
    assert limit_before == Image.MAX_IMAGE_PIXELS  # Pillow's global limit is not left changed


def test_missing_bits_allocated(make_dicom) -> None:
    path = make_dicom(np.arange(64, dtype=np.uint16).reshape(8, 8), "nobits.dcm")
    ds = pydicom.dcmread(path)
    del ds.BitsAllocated
    ds.save_as(path)
    with pytest.raises(ImageReadError) as info:
        load_image(path)
    assert info.value.stage == "pixels" and "Bits Allocated" in info.value.message


def test_truncated_png(shared_data: Path, tmp_path: Path) -> None:
    png = next((DATA / "rsna" / "images-1024").glob("*.png")).read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(png[: len(png) // 3])
    with pytest.raises(ImageReadError) as info:
        load_image(cut)
    assert info.value.stage == "pixels"


# ---------------------------------------------------------------------------------------------------------------
# The LUT rules on small synthetic files
# ---------------------------------------------------------------------------------------------------------------


def test_rescale_and_windows(make_dicom) -> None:
    stored = np.array([[0, 100, 200, 300]], dtype=np.int16)
    path = make_dicom(
        stored, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=[100, 0], WindowWidth=[401, 2000]
    )
    image = load_image(path)
    np.testing.assert_array_equal(image.modality, [[-100, 100, 300, 500]])
    assert [(w.center, w.width) for w in image.windows] == [(100.0, 401.0), (0.0, 2000.0)]
    assert image.window == image.windows[0]
    # LINEAR (PS3.3 C.11.2.1.2.1): -100 is the bottom of the window, 100 its centre, 300 its top.
    np.testing.assert_array_equal(image.display, [[0, 128, 255, 255]])


def test_sigmoid_voi_function(make_dicom) -> None:
    values = np.array([[-100, 0, 50, 200]], np.int16)
    path = make_dicom(values, WindowCenter=50, WindowWidth=100, VOILUTFunction="SIGMOID")
    d = load_image(path).display[0]
    # PS3.3 C.11.2.1.3.1: y = 255 / (1 + exp(-4 (x - c) / w))
    np.testing.assert_array_equal(
        d, np.rint(255 / (1 + np.exp(-4 * (values[0] - 50) / 100))).astype(np.uint8)
    )
    assert d[2] == 128 and d[0] < 5 and d[3] > 250


def test_full_range_window_for_ten_bit_data(make_dicom) -> None:
    stored = np.array([[100, 300, 612]], np.uint16)
    image = load_image(make_dicom(stored, bits_stored=10))
    assert (image.window.low, image.window.high) == (100.0, 612.0)
    np.testing.assert_array_equal(image.display, [[0, 100, 255]])


def test_unused_high_bits_are_ignored(make_dicom) -> None:
    # 12 bits stored in 16: the top four bits may hold overlay or garbage and must not change the values.
    values = np.array([[0, 1000, 4095]], np.uint16)
    image = load_image(make_dicom(values | 0xF000, bits_stored=16, BitsStored=12, HighBit=11))
    np.testing.assert_array_equal(image.modality, values)


def test_signed_pixels(make_dicom) -> None:
    values = np.array([[-512, 0, 511]], np.int16)
    image = load_image(make_dicom(values, bits_stored=10))
    np.testing.assert_array_equal(image.modality, values)
    np.testing.assert_array_equal(image.display, [[0, 128, 255]])


@pytest.mark.parametrize(
    ("photometric", "shape", "inverted"),
    [
        ("MONOCHROME2", "IDENTITY", False),
        ("MONOCHROME2", "INVERSE", True),
        ("MONOCHROME1", "INVERSE", False),
        ("MONOCHROME1", "IDENTITY", True),
    ],
)
def test_presentation_lut_shape_combines_with_monochrome1(make_dicom, photometric, shape, inverted) -> None:
    path = make_dicom(np.array([[0, 255]], np.uint8), photometric=photometric, PresentationLUTShape=shape)
    image = load_image(path)
    assert image.inverted is inverted
    np.testing.assert_array_equal(image.display, [[255, 0]] if inverted else [[0, 255]])


@pytest.mark.parametrize("lut_vr", ["US", "OW"])
def test_voi_lut_sequence(make_dicom, lut_vr: str) -> None:
    from pydicom import Dataset

    item = Dataset()
    item.LUTDescriptor = [4, 10, 8]
    entries = [0, 51, 204, 255]
    item.add_new(0x00283006, lut_vr, entries if lut_vr == "US" else np.array(entries, "<u2").tobytes())
    path = make_dicom(
        np.array([[5, 10, 11, 12, 13, 50]], np.uint16), VOILUTSequence=[item], WindowCenter=20, WindowWidth=40
    )
    image = load_image(path)
    # Below the first mapped value → first entry, past the end → last entry; the LUT wins over the window.
    np.testing.assert_array_equal(image.display, [[0, 0, 51, 204, 255, 255]])
    assert len(image.windows) == 2 and image.windows[1].center == 20.0


def test_spacing_falls_back_to_imager_pixel_spacing(make_dicom) -> None:
    arr = np.zeros((2, 2), np.uint8)
    assert load_image(make_dicom(arr, "a.dcm", ImagerPixelSpacing=[0.2, 0.25])).spacing_mm == (0.2, 0.25)
    image = load_image(make_dicom(arr, "b.dcm", PixelSpacing=[0.1, 0.1], ImagerPixelSpacing=[0.2, 0.2]))
    assert image.spacing_mm == (0.1, 0.1)
    assert load_image(make_dicom(arr, "c.dcm")).spacing_mm is None


def test_view_from_series_description(make_dicom) -> None:
    arr = np.zeros((2, 2), np.uint8)
    assert load_image(make_dicom(arr, "a.dcm", SeriesDescription="view: AP")).view == "AP"
    image = load_image(make_dicom(arr, "b.dcm", SeriesDescription="Chest of John Smith"))
    assert image.view is None and "SeriesDescription" not in image.metadata


# ---------------------------------------------------------------------------------------------------------------
# PNG and JPEG
# ---------------------------------------------------------------------------------------------------------------


def test_rsna_pngs_and_jpegs(shared_data: Path) -> None:
    for folder, pattern, size in (("images-1024", "*.png", 1024), ("images-512", "*.jpg", 512)):
        for path in sorted((DATA / "rsna" / folder).glob(pattern))[:3]:
            image = load_image(path)
            assert image.shape == (size, size) and image.image_id == path.stem
            with Image.open(path) as im:
                np.testing.assert_array_equal(image.display, np.asarray(im.convert("L")))
            assert image.spacing_mm is None and image.windows == () and not image.inverted
            assert (image.window.low, image.window.high) == (0.0, 255.0)
            assert image.photometric == "MONOCHROME2" and image.metadata["Format"] in ("PNG", "JPEG")


def test_other_source_images(shared_data: Path) -> None:
    files = sorted(
        p for p in (DATA / "other-cxr" / "figure1-covid").rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES
    )
    assert files
    for path in files[:4]:
        image = load_image(path)
        assert image.display.ndim == 2 and image.image_id.startswith("img-")


def test_sixteen_bit_png_uses_its_value_range(tmp_path: Path) -> None:
    arr = np.array([[1000, 2000], [3000, 5000]], np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(arr).save(path)
    image = load_image(path)
    assert image.metadata["BitsStored"] == "16"
    np.testing.assert_array_equal(image.modality, arr)
    assert (image.window.low, image.window.high) == (1000.0, 5000.0)
    np.testing.assert_array_equal(image.display, [[0, 64], [128, 255]])


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA"])
def test_colour_and_palette_png_become_grey(tmp_path: Path, mode: str) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    im = Image.fromarray(rgb).convert(mode)
    path = tmp_path / f"c_{mode}.png"
    im.save(path)
    image = load_image(path)
    expected = np.asarray(im.convert("RGB").convert("L")) if mode != "LA" else np.asarray(im.convert("L"))
    np.testing.assert_array_equal(image.display, expected)
    assert image.photometric == ("MONOCHROME2" if mode == "LA" else "RGB")


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((20, 40), np.uint8)
    arr[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert image.shape == (40, 20) and any("EXIF" in n for n in image.notes)
    assert image.display[:20].mean() > 200 and image.display[20:].mean() < 50


def test_jpeg_image_id_hashes_content(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(buf, "JPEG")
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpeg"
    a.write_bytes(buf.getvalue())
    b.write_bytes(buf.getvalue())
    assert load_image(a).image_id == load_image(b).image_id


# ---------------------------------------------------------------------------------------------------------------
# Sniffing and the decoder report
# ---------------------------------------------------------------------------------------------------------------


def test_sniff_kind(shared_data: Path, tmp_path: Path) -> None:
    assert sniff_kind(SIIM) == "dicom"
    assert sniff_kind(ROBUST / "pydicom" / "ExplVR_BigEndNoMeta.dcm") == "dicom"
    assert sniff_kind(ROBUST / "pydicom" / "ExplVR_LitEndNoMeta.dcm") == "dicom"
    assert sniff_kind(ROBUST / "pydicom" / "dicomdirtests" / "DICOMDIR") == "dicom"
    assert sniff_kind(next((DATA / "rsna" / "images-1024").glob("*.png"))) == "png"
    assert sniff_kind(next((DATA / "rsna" / "images-512").glob("*.jpg"))) == "jpeg"
    gz = tmp_path / "x.dcm.gz"
    gz.write_bytes(gzip.compress(SIIM.read_bytes()[:2000]))
    text = tmp_path / "readme.dcm"
    text.write_text("hello world, this is not an image" * 10)
    assert sniff_kind(gz) is None and sniff_kind(text) is None
    assert sniff_kind(tmp_path) is None and sniff_kind(tmp_path / "missing") is None
    assert {".dcm", ".png", ".jpg", ".jpeg"} <= set(SUPPORTED_SUFFIXES)


def test_decoder_plugins_report() -> None:
    rows = {r["name"]: r for r in decoder_plugins()}
    assert {"pydicom", "pillow", "pylibjpeg-openjpeg", "pyjpegls", "python-gdcm"} <= set(rows)
    assert "pylibjpeg-libjpeg" not in rows  # GPL: not used
    for row in rows.values():
        assert row["version"] and row["licence"] and row["transfer_syntaxes"]
    assert "JPEG-LS Lossless Image Compression" in rows["pyjpegls"]["transfer_syntaxes"]
    assert "1.2.840.10008.1.2.4.90" in rows["pylibjpeg-openjpeg"]["transfer_syntax_uids"]
    assert rows["pylibjpeg-openjpeg"]["requires"]["pylibjpeg"]
