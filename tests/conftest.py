"""Shared pytest fixtures.

The real test data lives beside the checkout in ``../shared/data`` (read-only). Tests that need it must fail, not
skip, when it is missing: a silently skipped data test is a test that cannot fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.journal_plugin import (  # noqa: F401 - hooks: --journal / --resume-from (see .ci/run)
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
)

# GUI tests run without a display; set before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# The suite's engine tests pin eager PyTorch (what they were written for); tests/test_onnx_runtime.py runs ONNX
# Runtime explicitly against it.
os.environ.setdefault("PNEUMOVIEW_RUNTIME", "torch")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real data folder ``<checkout>/../shared/data``; the test fails if it is missing."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(
            f"the shared test data folder {SHARED_DATA} is missing: check out or mount the 'shared' folder "
            "beside this repository (CI puts it at ../shared)",
            pytrace=False,
        )
    return SHARED_DATA


@pytest.fixture
def make_dicom(tmp_path: Path):
    """A factory writing small uncompressed DICOM files into ``tmp_path``.

    ``make_dicom(arr, name="x.dcm", photometric="MONOCHROME2", bits_stored=None, **tags) -> Path`` writes ``arr``
    (uint8/uint16/int16, ``(H, W)`` or ``(frames, H, W)``) as a CR image with Explicit VR Little Endian and sets
    every other keyword argument as a DICOM attribute (``WindowCenter=[40, 400]``, ``PixelSpacing=[0.2, 0.2]`` …).
    """
    import numpy as np
    from pydicom import Dataset

    def factory(
        arr: np.ndarray,
        name: str = "image.dcm",
        photometric: str = "MONOCHROME2",
        bits_stored: int | None = None,
        **tags: object,
    ) -> Path:
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
        ds.Modality = "CR"
        ds.PatientID = "TEST-PATIENT"
        ds.set_pixel_data(np.ascontiguousarray(arr), photometric, bits_stored or arr.dtype.itemsize * 8)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        return path

    return factory
