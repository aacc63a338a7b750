"""The folder scan (pneumoview.study_index) on the real test data and on small synthetic folders."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from pneumoview.identity import image_id_for
from pneumoview.study_index import DICOMDIR_KIND, ScanEntry, ScanError, build_tree, scan
from pneumoview.study_index import files as one_file
from pneumoview.study_index import walk as folder_walk

# The broken test files make pydicom warn; the scan turns those warnings into notes, which are asserted below.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DICOM = DATA / "dicom"
ROBUST = DICOM / "robustness"
DICOMDIR_TREE = ROBUST / "pydicom" / "dicomdirtests"


@pytest.fixture(scope="module")
def dicom_scan() -> list[ScanEntry | ScanError]:
    assert DICOM.is_dir(), f"test data missing: {DICOM} (CI keeps ../shared beside the checkout)"
    return list(scan(DICOM))


def _by_name(items: list[ScanEntry | ScanError]) -> dict[str, ScanEntry | ScanError]:
    return {str(item.path.relative_to(DICOM)): item for item in items}


def _all_files(folder: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, files in os.walk(folder) for f in files)


def _make_writable(folder: Path) -> None:
    for d, dirs, files in os.walk(folder):
        for name in [*dirs, *files]:
            p = Path(d) / name
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    folder.chmod(folder.stat().st_mode | stat.S_IWUSR)


def _write_dicom(path: Path, **tags: object) -> Path:
    """A small 8-bit Secondary Capture image with the given tags (None leaves a tag out)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    values: dict[str, object] = {
        "SOPClassUID": SecondaryCaptureImageStorage,
        "SOPInstanceUID": meta.MediaStorageSOPInstanceUID,
        "Modality": "DX",
        "PatientID": "P1",
        "PatientName": "Doe^Jane",
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "Rows": 4,
        "Columns": 6,
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": 8,
        "BitsStored": 8,
        "HighBit": 7,
        "PixelRepresentation": 0,
        "PixelData": bytes(24),
    }
    values.update(tags)
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------------------------------
# The real DICOM folder


def test_every_file_is_accounted_for_exactly_once(dicom_scan):
    files = _all_files(DICOM)
    paths = [item.path for item in dicom_scan]
    assert len(paths) == len(set(paths)), "a file was reported twice"
    assert sorted(paths) == files
    assert all(isinstance(item, ScanEntry | ScanError) for item in dicom_scan)


def test_scan_order_is_deterministic(dicom_scan):
    assert [item.path for item in scan(DICOM)] == [item.path for item in dicom_scan]


def test_real_chest_radiographs_are_images(dicom_scan):
    items = _by_name(dicom_scan)
    expected = {  # name: (rows, cols, modality, view)
        "siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm": (1024, 1024, "CR", "PA"),
        "Fake_MONOHR1.dcm": (1024, 1024, "CR", "PA"),
        "WG04_RG1_J2KI.dcm": (1955, 1841, "CR", "PA"),
        "WG04_RG1_JLSN.dcm": (1955, 1841, "CR", "PA"),
        "WG04_RG3_J2KI_nonchest.dcm": (1760, 1760, "CR", "AP"),
        "fo-dicom_CR-MONO1-10-chest.dcm": (440, 440, "CR", "PA"),  # no preamble, no file meta
    }
    for name, (rows, cols, modality, view) in expected.items():
        entry = items[f"chest/{name}"]
        assert isinstance(entry, ScanEntry), entry
        assert (entry.kind, entry.object_kind, entry.file_format) == ("image", f"{modality} image", "dicom")
        assert (entry.rows, entry.cols, entry.frames, entry.modality, entry.view) == (
            rows,
            cols,
            1,
            modality,
            view,
        )
    siim = items["chest/siim-acr_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"]
    assert siim.patient_key == "16d7f894-55d7-4d95-8957-d18987f0e981"
    assert siim.series_label == "CR #1 - view: PA"
    assert siim.image_id == image_id_for(siim.path, sop_instance_uid=siim.sop_instance_uid)
    assert siim.transfer_syntax == "JPEG Baseline (Process 1)"
    rtdose = items["robustness/pydicom/rtdose.dcm"]
    assert isinstance(rtdose, ScanEntry) and (rtdose.kind, rtdose.frames, rtdose.rows) == ("image", 15, 10)


def test_non_image_objects_are_listed_as_such(dicom_scan):
    items = _by_name(dicom_scan)
    expected = {
        "robustness/pydicom/waveform_ecg.dcm": "waveform",
        "robustness/pydicom/rtplan_truncated.dcm": "RT plan",
        "robustness/pydicom/ExplVR_LitEndNoMeta.dcm": "RT plan",  # no preamble, explicit VR little endian
        "robustness/pydicom/ExplVR_BigEndNoMeta.dcm": "RT plan",  # no preamble, big endian
    }
    for name, kind in expected.items():
        entry = items[name]
        assert isinstance(entry, ScanEntry), entry
        assert (entry.kind, entry.object_kind) == ("non-image", kind)
        assert entry.rows is None and entry.cols is None and entry.frames is None
    ecg = items["robustness/pydicom/waveform_ecg.dcm"]
    assert ecg.patient_key == "642341" and ecg.study_date == "2013-01-25"


# Each broken or foreign file, the stage and a phrase its message must contain.
BROKEN = {
    "robustness/pydicom/zipMR.gz": ("header", "compressed archive (gzip): unpack it first"),
    "robustness/pydicom/MR_truncated.dcm": ("pixels", "truncated"),
    "robustness/fo-dicom/GH1376.dcm": ("pixels", "damaged"),
    "robustness/fo-dicom/GH178.dcm": ("pixels", "holds no pixel data"),
    "robustness/fo-dicom/GH179A.dcm": ("pixels", "holds no pixel data"),
    "robustness/fo-dicom/GH179B.dcm": ("pixels", "holds no pixel data"),
    "robustness/fo-dicom/GH626.dcm": ("pixels", "holds no pixel data"),
    "robustness/fo-dicom/GH223.dcm": ("pixels", "holds no pixel data"),
    "robustness/fo-dicom/GH487.dcm": ("pixels", "holds no pixel data"),
    "robustness/pydicom/UN_sequence.dcm": ("pixels", "holds no pixel data"),
    "robustness/pydicom/no_meta_group_length.dcm": ("pixels", "holds no pixel data"),
    "robustness/pydicom/badVR.dcm": ("header", "Number of Frames is '1A'"),
    "robustness/pydicom/meta_missing_tsyntax.dcm": ("header", "no Rows/Columns"),
    "robustness/pydicom/nested_priv_SQ.dcm": ("header", "no Rows/Columns"),
    "robustness/pydicom/empty_charset_LEI.dcm": ("header", "no SOP Class UID"),
    "robustness/pydicom/no_meta.dcm": ("header", "not a DICOM, PNG or JPEG file"),
    "robustness/pydicom/dicomdirtests/DICOMDIR-nopatient": ("header", "the DICOMDIR is damaged"),
}


def test_every_broken_file_yields_an_error(dicom_scan):
    items = _by_name(dicom_scan)
    for name, (stage, phrase) in BROKEN.items():
        error = items[name]
        assert isinstance(error, ScanError), f"{name} should be an error, got {error}"
        assert error.stage == stage, (name, error)
        assert phrase in error.message, (name, error.message)
    for item in dicom_scan:
        if isinstance(item, ScanError):
            assert item.stage in ("header", "pixels", "document") and len(item.message) > 15


# Notes, licences and labels beside the images are documents: listed apart, not errors.
DOCUMENTS = ("robustness/pydicom/README.txt", "robustness/fo-dicom/License.txt", "chest/SOURCES.md")


def test_documents_are_other_files_not_errors(dicom_scan):
    items = _by_name(dicom_scan)
    for name in DOCUMENTS:
        doc = items[name]
        assert isinstance(doc, ScanError) and doc.is_document and doc.stage == "document", (name, doc)
        assert doc.message.startswith("a document (") and "not an image" in doc.message
    tree = build_tree(dicom_scan)
    assert {str(d.path.relative_to(DICOM)) for d in tree.documents} >= set(DOCUMENTS)
    assert not any(e.is_document for e in tree.errors)
    assert tree.counts()["documents"] == len(tree.documents)


def test_damaged_but_readable_headers_are_still_images(dicom_scan):
    items = _by_name(dicom_scan)
    for name in (
        "pydicom/SC_rgb_jpeg.dcm",
        "pydicom/image_dfl.dcm",
        "fo-dicom/GH340.dcm",
        "pydicom/JPEG-lossy.dcm",
    ):
        assert isinstance(items[f"robustness/{name}"], ScanEntry), name
    sc = items["robustness/pydicom/SC_rgb_jpeg.dcm"]
    assert any("implicit VR" in note for note in sc.notes)  # the reader's warning is kept as a note
    gh340 = items["robustness/fo-dicom/GH340.dcm"]  # ACR-NEMA style: no preamble, dotted date
    assert (gh340.rows, gh340.cols, gh340.study_date, gh340.patient_label) == (
        256,
        256,
        "1997-06-09",
        "Anonymized",
    )


# ----------------------------------------------------------------------------------------------------
# DICOMDIR


@pytest.mark.parametrize("through_link", [False, True], ids=["direct", "through-a-symbolic-link"])
def test_dicomdir_grouping_matches_the_file_set(dicom_scan, tmp_path, through_link):
    # CI may mount ../shared as a symbolic link: the scan keeps the folder's spelling, while pydicom's FileSet
    # resolves links, so members are compared by their path inside the file-set.
    root = DICOMDIR_TREE
    items = dicom_scan
    if through_link:
        root = tmp_path / "linked-copy"
        root.symlink_to(DICOMDIR_TREE, target_is_directory=True)
        items = list(scan(root))
    dicomdir = root / "DICOMDIR"
    fs = FileSet(dicomdir)
    fs_root = Path(fs.path)

    def inside(path: Path, folder: Path) -> Path:
        return path.relative_to(folder)

    listed = [e for e in items if isinstance(e, ScanEntry) and e.dicomdir == dicomdir]
    assert sorted(inside(e.path, root) for e in listed) == sorted(inside(Path(i.path), fs_root) for i in fs)
    assert all(str(e.path).startswith(str(root)) for e in listed)

    tree = build_tree(listed)
    counts = tree.counts()
    expected = (
        len(fs.find_values("PatientID")),
        len(fs.find_values("StudyInstanceUID")),
        len(fs.find_values("SeriesInstanceUID")),
        len(fs),
    )
    assert expected == (2, 6, 13, 31)  # pydicom's README for this tree
    assert (counts["patients"], counts["studies"], counts["series"], counts["images"]) == expected

    for instance in fs:
        entry = next(e for e in listed if inside(e.path, root) == inside(Path(instance.path), fs_root))
        assert entry.patient_key == instance.PatientID
        assert entry.study_key == instance.StudyInstanceUID
        assert entry.series_key == instance.SeriesInstanceUID
        assert entry.sop_instance_uid == instance.SOPInstanceUID
    labels = {p.label: sorted(s.label for s in p.studies.values()) for p in tree.patients.values()}
    assert labels["Doe, Archibald (77654033)"] == [
        "1995-09-03 - CT, HEAD/BRAIN WO CONTRAST",
        "2001-01-01 - XR C Spine Comp Min 4 Views",
    ]
    assert len(labels["Doe, Peter (98890234)"]) == 4


def test_dicomdir_files_are_entries_and_their_instances_are_not_repeated(dicom_scan):
    items = _by_name(dicom_scan)
    main = items["robustness/pydicom/dicomdirtests/DICOMDIR"]
    assert isinstance(main, ScanEntry) and main.is_dicomdir and main.kind == "non-image"
    assert main.object_kind == DICOMDIR_KIND and main.notes[0].startswith("lists 31 instances")
    # The variants list the same files: they are entries, and the files are not reported again.
    for variant in ("DICOMDIR-bigEnd", "DICOMDIR-implicit", "DICOMDIR-nooffset", "DICOMDIR-reordered"):
        entry = items[f"robustness/pydicom/dicomdirtests/{variant}"]
        assert isinstance(entry, ScanEntry) and entry.is_dicomdir, variant
    empty = items["robustness/pydicom/dicomdirtests/DICOMDIR-empty.dcm"]
    assert isinstance(empty, ScanEntry) and empty.is_dicomdir and "lists 0 instances" in empty.notes[0]
    # The DICOMDIR comes before the files it lists, which are reported right after it.
    order = [item.path for item in dicom_scan]
    first_listed = DICOMDIR_TREE / "77654033" / "CR1" / "6154"
    assert order.index(DICOMDIR_TREE / "DICOMDIR") < order.index(first_listed)
    # TINY_ALPHA's instances are CT records without pixel data: listed by its DICOMDIR, reported as errors.
    tiny = [i for i in dicom_scan if "TINY_ALPHA/PT" in str(i.path)]
    assert len(tiny) == 50 and all(isinstance(i, ScanError) and i.stage == "pixels" for i in tiny)


def test_dicomdir_with_missing_and_broken_files(tmp_path):
    folder = tmp_path / "disc"
    shutil.copytree(DICOMDIR_TREE, folder, ignore=shutil.ignore_patterns("TINY_ALPHA", "DICOMDIR-*"))
    _make_writable(folder)
    missing = folder / "77654033" / "CR2" / "6247"
    missing.unlink()
    broken = folder / "98892001" / "CT5N" / "2062"
    broken.write_bytes(broken.read_bytes()[:200])

    items = list(scan(folder))
    by_path = {i.path: i for i in items}
    assert isinstance(by_path[missing], ScanError) and "listed in DICOMDIR but the file is missing" in (
        by_path[missing].message
    )
    assert isinstance(by_path[broken], ScanError)
    assert isinstance(by_path[folder / "DICOMDIR"], ScanEntry)  # the DICOMDIR itself is not an error
    listed = [i for i in items if isinstance(i, ScanEntry) and i.dicomdir == folder / "DICOMDIR"]
    assert len(listed) == 29
    # every file once, plus the one the DICOMDIR lists but is gone
    assert len(items) == len(_all_files(folder)) + 1


# ----------------------------------------------------------------------------------------------------
# Laziness, read-only


def test_scan_is_lazy(tmp_path, monkeypatch):
    source = (ROBUST / "pydicom" / "SC_rgb_small_odd.dcm").read_bytes()
    for i in range(2000):
        (tmp_path / f"img{i:04d}.dcm").write_bytes(source)
    reads = []
    real = open

    def counting(*args, **kwargs):
        reads.append(1)
        return real(*args, **kwargs)

    # Every file is opened once (sniffed and read on the same handle), and only when the scan reaches it.
    monkeypatch.setattr(one_file, "open", counting, raising=False)
    items = scan(tmp_path)
    first = next(items)
    assert isinstance(first, ScanEntry) and first.path.name == "img0000.dcm"
    assert len(reads) == 1
    rest = list(items)
    assert len(rest) == 1999 and len(reads) == 2000


def _snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    snap = {}
    for d, dirs, files in os.walk(folder):
        for name in dirs:
            p = Path(d) / name
            snap[str(p)] = ("dir", p.stat().st_mtime_ns, 0)
        for name in files:
            p = Path(d) / name
            st = p.stat()
            snap[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, st.st_size)
    return snap


def test_scan_never_writes_to_the_folder(tmp_path):
    folder = tmp_path / "dicom"
    shutil.copytree(DICOM, folder)
    _make_writable(folder)  # so that a write would succeed and be seen
    before = _snapshot(folder)
    items = list(scan(folder))
    build_tree(items)
    assert _snapshot(folder) == before
    assert len(items) == len(_all_files(folder))


# ----------------------------------------------------------------------------------------------------
# PNG and JPEG


def test_rsna_jpeg_and_png_files(tmp_path):
    jpgs = sorted((DATA / "rsna" / "images-512").glob("*.jpg"))[:4]
    pngs = sorted((DATA / "rsna" / "images-1024").glob("*.png"))[:2]
    for p in [*jpgs, *pngs]:
        shutil.copy(p, tmp_path / p.name)
    items = list(scan(tmp_path))
    assert len(items) == 6 and all(isinstance(i, ScanEntry) for i in items)
    for entry in items:
        assert isinstance(entry, ScanEntry)
        stem = entry.path.stem
        assert entry.kind == "image" and entry.file_format == (
            "jpeg" if entry.path.suffix == ".jpg" else "png"
        )
        assert entry.object_kind == ("JPEG image" if entry.file_format == "jpeg" else "PNG image")
        size = 512 if entry.file_format == "jpeg" else 1024
        assert (entry.rows, entry.cols, entry.frames) == (size, size, 1)
        assert entry.image_id == stem and entry.patient_key == stem  # RSNA patientId
        assert entry.study_key == entry.series_key == f"file:{entry.path}"
        assert entry.modality is None and entry.sop_instance_uid is None
    assert len(build_tree(items).patients) == 6


def test_other_source_jpeg_png_folder():
    folder = DATA / "other-cxr" / "figure1-covid"
    items = list(scan(folder))
    assert len(items) == len(_all_files(folder))
    entries = [i for i in items if isinstance(i, ScanEntry)]
    others = [i for i in items if isinstance(i, ScanError)]
    assert len(entries) == len(list((folder / "images").iterdir())) == 55
    assert {e.file_format for e in entries} == {"jpeg", "png"}
    assert {e.path.name for e in others} == {"README.md", "SOURCES.md", "metadata.csv"}
    assert all(e.is_document for e in others)
    sample = entries[0]
    with Image.open(sample.path) as im:
        assert (sample.cols, sample.rows) == im.size
    head = sample.path.read_bytes()[: 64 * 1024]
    assert sample.image_id == image_id_for(sample.path, content=head)  # as pneumoview.imaging computes it
    assert sample.patient_label == sample.path.name and len({e.study_key for e in entries}) == 55


# ----------------------------------------------------------------------------------------------------
# Synthetic edge cases


def test_odd_files_are_errors_with_reasons(tmp_path):
    good = _write_dicom(tmp_path / "IM0001")  # no suffix
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    (tmp_path / "._IM0001").write_bytes(b"\x00\x05\x16\x07" + bytes(80))
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("patient list\n", encoding="utf-8")
    (tmp_path / "scan.tif").write_bytes(b"II*\x00" + bytes(64))
    with zipfile.ZipFile(tmp_path / "study.zip", "w") as zf:
        zf.write(good, "IM0001")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 4)
    # starts like a data set without preamble (group 0008) but is noise
    (tmp_path / "noise.dcm").write_bytes(b"\x08\x00\x05\x00" + os.urandom(400))
    hidden = tmp_path / ".cache"
    hidden.mkdir()
    _write_dicom(hidden / "x.dcm")
    (tmp_path / "link.dcm").symlink_to(good)
    (tmp_path / "dangling.dcm").symlink_to(tmp_path / "gone.dcm")

    items = {i.path.name: i for i in scan(tmp_path)}
    assert isinstance(items["IM0001"], ScanEntry) and items["IM0001"].kind == "image"
    messages = {name: (i.stage, i.message) for name, i in items.items() if isinstance(i, ScanError)}
    assert messages[".DS_Store"] == ("header", "not a DICOM, PNG or JPEG file (a hidden system file).")
    assert "resource-fork" in messages["._IM0001"][1]
    assert "empty file" in messages["empty.dcm"][1]
    assert messages["notes.txt"] == (
        "document",
        "a document (.txt), not an image; it is listed and left as it is.",
    )
    assert "TIFF" in messages["scan.tif"][1]
    assert "compressed archive (zip): unpack it first" in messages["study.zip"][1]
    assert "PNG header is damaged" in messages["broken.png"][1]
    assert messages["noise.dcm"] == ("header", "not a DICOM, PNG or JPEG file.")
    assert "hidden or system folder" in messages[".cache"][1]
    assert "broken link" in messages["dangling.dcm"][1]
    # the link and its target are one file: reported once, under the name reached first
    assert "link.dcm" not in items
    assert sum(1 for i in items.values() if isinstance(i, ScanEntry)) == 1


def test_missing_identifiers_get_fallback_keys_and_labels(tmp_path):
    a = _write_dicom(tmp_path / "a.dcm", PatientID=None, PatientName=None, StudyInstanceUID=None)
    b = _write_dicom(tmp_path / "sub" / "b.dcm", PatientID=None, PatientName=None, StudyInstanceUID=None)
    c = _write_dicom(
        tmp_path / "c.dcm", PatientName="Müller^Anna^Maria", StudyDate="20240131", StudyDescription="Chest PA"
    )
    items = {i.path: i for i in scan(tmp_path)}
    ea, eb, ec = items[a], items[b], items[c]
    assert isinstance(ea, ScanEntry) and isinstance(eb, ScanEntry) and isinstance(ec, ScanEntry)
    assert ea.patient_label == "Unknown patient" and ea.patient_key == eb.patient_key
    assert ea.study_label == "Unknown study" and ea.study_key != eb.study_key  # different folders stay apart
    assert ec.patient_label == "Müller, Anna Maria (P1)" and ec.study_label == "2024-01-31 - Chest PA"
    assert ec.series_label == "DX" and ec.instance_label == "c.dcm"
    assert (ec.rows, ec.cols) == (4, 6)


def test_truncated_native_pixel_data_is_found_from_the_header(tmp_path):
    path = _write_dicom(tmp_path / "short.dcm", Rows=64, Columns=64, PixelData=bytes(64 * 64))
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    error = next(iter(scan(tmp_path)))
    assert isinstance(error, ScanError) and error.stage == "pixels" and "truncated" in error.message
    assert pydicom.dcmread(path, stop_before_pixels=True).Rows == 64  # the header itself is fine


def test_non_image_sop_classes_without_pixels(tmp_path):
    for name, sop in (
        ("sr.dcm", "1.2.840.10008.5.1.4.1.1.88.33"),  # Comprehensive SR
        ("pr.dcm", "1.2.840.10008.5.1.4.1.1.11.1"),  # Grayscale Softcopy Presentation State
        ("kos.dcm", "1.2.840.10008.5.1.4.1.1.88.59"),  # Key Object Selection
        ("pdf.dcm", "1.2.840.10008.5.1.4.1.1.104.1"),  # Encapsulated PDF
    ):
        _write_dicom(tmp_path / name, SOPClassUID=sop, Rows=None, Columns=None, PixelData=None, Modality="SR")
    kinds = {i.path.name: (i.kind, i.object_kind) for i in scan(tmp_path) if isinstance(i, ScanEntry)}
    assert kinds == {
        "sr.dcm": ("non-image", "structured report"),
        "pr.dcm": ("non-image", "presentation state"),
        "kos.dcm": ("non-image", "key object selection"),
        "pdf.dcm": ("non-image", "encapsulated PDF document"),
    }


def test_a_failing_file_never_stops_the_scan(tmp_path, monkeypatch):
    for i in range(3):
        _write_dicom(tmp_path / f"{i}.dcm")
    real = folder_walk.scan_file

    def flaky(path, **kwargs):
        if path.name == "1.dcm":
            raise RuntimeError("disk on fire")
        return real(path, **kwargs)

    monkeypatch.setattr(folder_walk, "scan_file", flaky)
    items = list(scan(tmp_path))
    assert [type(i).__name__ for i in items] == ["ScanEntry", "ScanError", "ScanEntry"]
    assert "RuntimeError: disk on fire" in items[1].message


def test_scans_in_parallel_threads_keep_their_own_notes():
    from concurrent.futures import ThreadPoolExecutor

    folder = ROBUST / "pydicom"
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: list(scan(folder)), range(4)))
    assert all(r == results[0] for r in results[1:])
    notes = {i.path.name: i.notes for i in results[0] if isinstance(i, ScanEntry)}
    assert notes["SC_rgb_jpeg.dcm"] == (
        "reader warning: Expected explicit VR, but found implicit VR - using implicit VR for reading",
    )
    assert notes["CT_small.dcm"] == ()


def test_missing_folder_is_reported_at_once(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found: .*nope"):
        scan(tmp_path / "nope")


def test_a_single_file_can_be_scanned():
    items = list(scan(DICOM / "chest" / "Fake_MONOHR1.dcm"))
    assert len(items) == 1 and isinstance(items[0], ScanEntry) and items[0].rows == 1024


def test_tree_and_json_ready_dicts(dicom_scan):
    tree = build_tree(dicom_scan)
    counts = tree.counts()
    n_entries = sum(1 for i in dicom_scan if isinstance(i, ScanEntry))
    assert counts["images"] + counts["non_images"] + counts["dicomdirs"] == n_entries
    assert counts["errors"] + counts["documents"] == len(dicom_scan) - n_entries
    assert all(e.is_dicomdir for e in tree.dicomdirs) and len(tree.dicomdirs) == 7
    d = next(e for e in dicom_scan if isinstance(e, ScanEntry)).to_dict()
    assert isinstance(d["path"], str) and isinstance(d["notes"], list)
    assert set(ScanError(Path("x"), "header", "m").to_dict()) == {"path", "stage", "message"}


def test_dicomdir_members_keep_the_folder_spelling_through_a_link(tmp_path):
    """A folder opened through a symbolic link: DICOMDIR members are reported under that link, like every file."""
    from pneumoview.study_index import scan

    data = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dicom" / "robustness" / "pydicom"
    link = tmp_path / "linked"
    link.symlink_to(data / "dicomdirtests", target_is_directory=True)
    items = list(scan(link))
    assert items and all(str(i.path).startswith(str(link)) for i in items)
