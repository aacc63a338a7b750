"""Grouping keys and the labels a browser shows for a DICOM file (patient, study, series, instance)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pneumoview.study_index.headers import dicom_date, int_value, text_value

UNKNOWN_PATIENT = "Unknown patient"
UNKNOWN_STUDY = "Unknown study"

_VIEW_IN_DESCRIPTION = re.compile(r"\bview:\s*([A-Za-z]+)", re.IGNORECASE)


def grouping_labels(path: Path, fields: dict[str, Any]) -> dict[str, str]:
    patient_id = text_value(fields.get("PatientID"))
    patient_key = patient_id or "unknown-patient"
    name = person_name(fields.get("PatientName"))
    if name and patient_id and name != patient_id:
        patient_label = f"{name} ({patient_id})"
    else:
        patient_label = name or patient_id or UNKNOWN_PATIENT

    study_uid = text_value(fields.get("StudyInstanceUID"))
    study_key = study_uid or f"unknown-study:{patient_key}:{path.parent}"
    date = dicom_date(fields.get("StudyDate"))
    description = text_value(fields.get("StudyDescription"))
    study_id = text_value(fields.get("StudyID"))
    parts = [date or "", description or (f"Study {study_id}" if study_id else "")]
    study_label = " - ".join(p for p in parts if p) or UNKNOWN_STUDY

    series_uid = text_value(fields.get("SeriesInstanceUID"))
    modality = text_value(fields.get("Modality"))
    number = int_value(fields.get("SeriesNumber"))
    series_key = (
        series_uid or f"unknown-series:{study_key}:{modality or ''}:{'' if number is None else number}"
    )
    head = f"{modality or 'Series'}{f' #{number}' if number is not None else ''}"
    series_description = text_value(fields.get("SeriesDescription"))
    series_label = f"{head} - {series_description}" if series_description else head

    instance_number = int_value(fields.get("InstanceNumber"))
    instance_label = f"#{instance_number} {path.name}" if instance_number is not None else path.name
    return {
        "patient_key": patient_key,
        "patient_label": patient_label,
        "study_key": study_key,
        "study_label": study_label,
        "series_key": series_key,
        "series_label": series_label,
        "instance_label": instance_label,
    }


def person_name(value: Any) -> str | None:
    if value is None:
        return None
    family = text_value(getattr(value, "family_name", None))
    given = " ".join(
        p
        for p in (
            text_value(getattr(value, "given_name", None)),
            text_value(getattr(value, "middle_name", None)),
        )
        if p
    )
    if family or given:
        return ", ".join(p for p in (family, given) if p)
    text = text_value(value)
    return text.replace("^", " ").strip() if text else None


def view_of(fields: dict[str, Any]) -> str | None:
    view = text_value(fields.get("ViewPosition"))
    if view:
        return view.upper()
    match = _VIEW_IN_DESCRIPTION.search(text_value(fields.get("SeriesDescription")) or "")
    return match.group(1).upper() if match else None
