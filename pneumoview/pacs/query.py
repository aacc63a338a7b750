"""What to look for on a PACS and what it answers, independent of the protocol (C-FIND or QIDO-RS)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom import Dataset

__all__ = ["StudyQuery", "StudyRecord", "date_range"]


def date_range(start: dt.date | None, end: dt.date | None) -> str:
    """A DICOM date range (``YYYYMMDD-YYYYMMDD``, either side open); ``""`` when both are None."""
    if start is None and end is None:
        return ""
    a = start.strftime("%Y%m%d") if start else ""
    b = end.strftime("%Y%m%d") if end else ""
    return a if a == b else f"{a}-{b}"


@dataclass(frozen=True)
class StudyQuery:
    """Study-level matching keys; empty means "any". ``patient_name`` may use ``*`` and ``?`` wildcards.

    ``date_from``/``date_to`` bound the Study Date (inclusive); ``modality`` matches Modalities in Study.
    ``limit`` caps the number of studies asked for (0: no cap).
    """

    patient_name: str = ""
    patient_id: str = ""
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    modality: str = ""
    accession: str = ""
    study_uid: str = ""
    limit: int = 0

    def matching_keys(self) -> dict[str, str]:
        """DICOM keywords → match values, only those that are set."""
        keys = {
            "PatientName": self.patient_name.strip(),
            "PatientID": self.patient_id.strip(),
            "StudyDate": date_range(self.date_from, self.date_to),
            "ModalitiesInStudy": self.modality.strip(),
            "AccessionNumber": self.accession.strip(),
            "StudyInstanceUID": self.study_uid.strip(),
        }
        return {k: v for k, v in keys.items() if v}


#: Attributes asked for in every study query, in the order of :class:`StudyRecord`'s fields.
RETURN_KEYS = (
    "StudyInstanceUID",
    "PatientName",
    "PatientID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)


@dataclass(frozen=True)
class StudyRecord:
    """One study as the PACS describes it. Dates are DICOM text (``YYYYMMDD``); counts are None when the PACS
    did not say."""

    study_uid: str
    patient_name: str = ""
    patient_id: str = ""
    study_date: str = ""
    study_time: str = ""
    description: str = ""
    accession: str = ""
    modalities: tuple[str, ...] = ()
    n_series: int | None = None
    n_instances: int | None = None

    @classmethod
    def from_attributes(cls, values: Mapping[str, Any] | Dataset) -> StudyRecord:
        """From keyword → value (a pydicom Dataset or a dict)."""

        def text(key: str) -> str:
            v = values.get(key)
            return "" if v is None else str(v).strip()

        def count(key: str) -> int | None:
            try:
                return int(text(key))
            except ValueError:
                return None

        modalities = values.get("ModalitiesInStudy")
        if modalities is None or modalities == "":
            mods: tuple[str, ...] = ()
        elif isinstance(modalities, str):
            mods = tuple(m for m in modalities.split("\\") if m)
        else:
            mods = tuple(str(m) for m in modalities if str(m))
        return cls(
            study_uid=text("StudyInstanceUID"),
            patient_name=text("PatientName"),
            patient_id=text("PatientID"),
            study_date=text("StudyDate"),
            study_time=text("StudyTime"),
            description=text("StudyDescription"),
            accession=text("AccessionNumber"),
            modalities=mods,
            n_series=count("NumberOfStudyRelatedSeries"),
            n_instances=count("NumberOfStudyRelatedInstances"),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with DICOM keywords as names (``StudyInstanceUID``, ``PatientName`` …)."""
        d = asdict(self)
        return {
            "StudyInstanceUID": d["study_uid"],
            "PatientName": d["patient_name"],
            "PatientID": d["patient_id"],
            "StudyDate": d["study_date"],
            "StudyTime": d["study_time"],
            "StudyDescription": d["description"],
            "AccessionNumber": d["accession"],
            "ModalitiesInStudy": list(d["modalities"]),
            "NumberOfStudyRelatedSeries": d["n_series"],
            "NumberOfStudyRelatedInstances": d["n_instances"],
        }
