"""Scan results grouped into Patient ▸ Study ▸ Series ▸ entries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pneumoview.study_index.entries import ScanEntry, ScanError


@dataclass
class SeriesNode:
    """One series: its entries in scan order."""

    key: str
    label: str
    entries: list[ScanEntry] = field(default_factory=list)


@dataclass
class StudyNode:
    key: str
    label: str
    series: dict[str, SeriesNode] = field(default_factory=dict)


@dataclass
class PatientNode:
    key: str
    label: str
    studies: dict[str, StudyNode] = field(default_factory=dict)


@dataclass
class StudyTree:
    """Patient ▸ Study ▸ Series ▸ entries, plus DICOMDIR files, documents and errors, all in scan order.

    Mutable so that a browser can ``add`` items as the scan yields them.
    """

    patients: dict[str, PatientNode] = field(default_factory=dict)
    dicomdirs: list[ScanEntry] = field(default_factory=list)
    errors: list[ScanError] = field(default_factory=list)
    documents: list[ScanError] = field(default_factory=list)

    def add(self, item: ScanEntry | ScanError) -> None:
        if isinstance(item, ScanError):
            (self.documents if item.is_document else self.errors).append(item)
            return
        if item.is_dicomdir:
            self.dicomdirs.append(item)
            return
        patient = self.patients.get(item.patient_key)
        if patient is None:
            patient = self.patients[item.patient_key] = PatientNode(item.patient_key, item.patient_label)
        study = patient.studies.get(item.study_key)
        if study is None:
            study = patient.studies[item.study_key] = StudyNode(item.study_key, item.study_label)
        series = study.series.get(item.series_key)
        if series is None:
            series = study.series[item.series_key] = SeriesNode(item.series_key, item.series_label)
        series.entries.append(item)

    def entries(self) -> Iterator[ScanEntry]:
        """Every entry in the tree (not DICOMDIR files), patient by patient."""
        for patient in self.patients.values():
            for study in patient.studies.values():
                for series in study.series.values():
                    yield from series.entries

    def counts(self) -> dict[str, int]:
        """Numbers for a summary line: patients, studies, series, images, non_images (results included), results
        (SR/SEG/GSPS about an image), dicomdirs, documents, errors."""
        entries = list(self.entries())
        images = sum(1 for e in entries if e.kind == "image")
        return {
            "patients": len(self.patients),
            "studies": sum(len(p.studies) for p in self.patients.values()),
            "series": sum(len(s.series) for p in self.patients.values() for s in p.studies.values()),
            "images": images,
            "non_images": len(entries) - images,
            "results": sum(1 for e in entries if e.kind == "result"),
            "dicomdirs": len(self.dicomdirs),
            "documents": len(self.documents),
            "errors": len(self.errors),
        }


def build_tree(items: Iterable[ScanEntry | ScanError]) -> StudyTree:
    """Group scan results into a :class:`StudyTree` (consumes ``items``)."""
    tree = StudyTree()
    for item in items:
        tree.add(item)
    return tree
