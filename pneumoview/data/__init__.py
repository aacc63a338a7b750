"""Data files shipped inside the package: the sample study (six RSNA-style chest radiograph DICOMs).

The sample study is built by ``tools/make_sample_study.py`` from public NIH ChestX-ray14 pixels and RSNA challenge
labels; see ``sample_study/ATTRIBUTION.md``. It is research material, not for diagnosis.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_study_dir() -> Path:
    """The folder holding the sample study: ``<patientId>.dcm`` files, ``labels.csv`` and ``ATTRIBUTION.md``.

    Treat it as read-only (it may be inside an installed package).
    """
    return Path(str(resources.files(__name__) / "sample_study"))
