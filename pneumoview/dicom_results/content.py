"""Codes, deterministic UIDs and the algorithm identification shared by PneumoView's SR, SEG and GSPS.

Coded concepts: SNOMED CT (``SCT``) and DICOM (``DCM``) where a standard concept exists; the private scheme
``99PNEUMOVIEW`` (DICOM's ``99`` prefix marks a local scheme) for what has none — the classifier's per-class
probabilities, a box's source and a reader's decision.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

from highdicom.sr import CodedConcept

from pneumoview import __version__
from pneumoview.thresholds import Thresholds
from pneumoview.types import AnalysisResult

__all__ = [
    "ALGORITHM_NAME",
    "MANUFACTURER",
    "algorithm_parameters",
    "derived_uid",
    "provenance_key",
]

MANUFACTURER = "PneumoView"
ALGORITHM_NAME = "PneumoView"
ALGORITHM_VERSION = __version__
SCHEME = "99PNEUMOVIEW"

# SNOMED CT: the finding (also the SEG's segmented property type), its category and site; the procedure.
FINDING = CodedConcept("233604007", "SCT", "Pneumonia")
FINDING_CATEGORY = CodedConcept("49755003", "SCT", "Morphologically Abnormal Structure")
FINDING_SITE = CodedConcept("39607008", "SCT", "Lung")
PROCEDURE = CodedConcept("399208008", "SCT", "Plain chest X-ray")
CLINICAL_FINDING = CodedConcept("404684003", "SCT", "Clinical finding")
# DICOM: the box confidence, the probability of opacity, the image-level group's finding.
CERTAINTY = CodedConcept("111012", "DCM", "Certainty of Finding")
PROBABILITY = CodedConcept("122157", "DCM", "Probability")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
# Private: the box source and the reader's decision.
BOX_SOURCE = CodedConcept("BOXSOURCE", SCHEME, "Box source")
SOURCE_VALUES = {
    name: CodedConcept(name.upper(), SCHEME, name.capitalize())
    for name in ("detector", "segmentation", "fused", "reader")
}
DECISION = CodedConcept("DECISION", SCHEME, "Reader decision")
DECISION_VALUES = {
    name: CodedConcept(name.upper(), SCHEME, name.capitalize())
    for name in ("accepted", "rejected", "edited", "added")
}
P_OPACITY_MEANING = "Probability of lung opacity"


def class_probability_concept(index: int, class_name: str) -> CodedConcept:
    """The concept of the classifier's probability of class ``index`` (meaning ``"Probability of NAME"``)."""
    meaning = f"Probability of {class_name}"[:64]
    return CodedConcept(f"PCLASS{index}", SCHEME, meaning)


P_OPACITY = CodedConcept("POPACITY", SCHEME, P_OPACITY_MEANING)


def provenance_key(result: AnalysisResult, thresholds: Thresholds) -> str:
    """What makes two analyses of one image the same result: model ids, versions, sha256 prefixes, thresholds."""
    models = ";".join(sorted(f"{m.id}@{m.version}#{m.sha256_prefix}" for m in result.models))
    return models + "|" + json.dumps(thresholds.to_dict(), sort_keys=True, separators=(",", ":"))


def instance_identity(
    series_instance_uid: str, series_number: int, sop_instance_uid: str, instance_number: int
) -> dict[str, Any]:
    """The keyword arguments naming a SEG or GSPS instance and the device that made it (highdicom constructors)."""
    return {
        "series_instance_uid": series_instance_uid,
        "series_number": series_number,
        "sop_instance_uid": sop_instance_uid,
        "instance_number": instance_number,
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": ALGORITHM_NAME,
        "software_versions": ALGORITHM_VERSION,
        "device_serial_number": "0",
        "content_label": "PNEUMOVIEW",
    }


_NAMESPACE = uuid.UUID("6f1c2a52-8f0e-5b7e-9d43-2f7a1c0e9b11")


def derived_uid(*parts: str) -> str:
    """A ``2.25.`` UID (PS3.5 B.2: a UUID as an integer) made by UUID version 5 from ``parts``: the same parts
    always give the same UID, so writing or sending a result again does not make a second instance."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(31).join(parts)).int}"


def algorithm_parameters(result: AnalysisResult, thresholds: Thresholds) -> list[str]:
    """``model=id@version#sha12`` for every model that ran, then ``thresholds={json}``."""
    params = [f"model={m.id}@{m.version}#{m.sha256_prefix}" for m in result.models]
    params.append("thresholds=" + json.dumps(thresholds.to_dict(), sort_keys=True, separators=(",", ":")))
    return params


_MODEL = re.compile(r"^model=(?P<id>[^@]+)@(?P<version>[^#]+)#(?P<sha>[0-9a-f]+)$")


def parse_models(parameters: Iterable[str]) -> list[tuple[str, str, str]]:
    """``(id, version, sha256 prefix)`` of every ``model=`` parameter (see :func:`algorithm_parameters`)."""
    out = []
    for p in parameters:
        if m := _MODEL.match(p):
            out.append((m["id"], m["version"], m["sha"]))
    return out
