"""De-identified copies of DICOM files: the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

What :func:`deidentify_dataset` does to a data set (PS3.15 Table E.1-1 actions, for the attributes chest radiographs,
their studies and their requests carry; the effective action is the one the table allows for the attribute's
type: ``X`` for optional attributes, ``Z`` for type 2, ``D``/``U`` where a value is required):

* names, IDs, addresses, phone numbers, institution, station, operators, physicians, free-text descriptions and
  comments, request and procedure-step details, device serial numbers: removed (``X``) or emptied (``Z``);
  Patient ID and Patient's Name become one pseudonym (``ANON-`` + 10 hex digits of a keyed hash of the Patient ID),
  so that the copies of one patient still group together;
* dates and times (study, series, acquisition, content, birth …): emptied or removed, or — with
  ``date_shift_days`` (the Retain Longitudinal Temporal Information with Modified Dates option) — every DA/DT value
  except the birth date shifted by that many days and the times kept;
* UIDs of instances, series, studies, frames of reference, references … (``U``): replaced by ``2.25.<integer>``
  UIDs derived from the original with a keyed hash (HMAC-SHA256), so that one key maps a UID to the same new UID in
  every file: series, studies and references stay consistent. UIDs of SOP classes, transfer syntaxes and coding
  schemes (and every ``1.2.840.10008.*`` UID) are kept;
* private attributes, curves (50xx) and overlays (60xx), the icon image and digital signatures: removed;
* patient characteristics (age, sex, size, weight): removed, or kept with ``keep_patient_characteristics``
  (the Retain Patient Characteristics option);
* added: Patient Identity Removed = ``YES``, De-identification Method, De-identification Method Code Sequence
  (DCM 113100 "Basic Application Confidentiality Profile", plus 113107/113108 for the options used) and
  Longitudinal Temporal Information Modified.

The pixel data is copied byte for byte (same transfer syntax). Images flagged with Burned In Annotation = YES are
refused unless ``allow_burned_in``: their pixels may show a name, which this profile does not clean.

:func:`deidentify_tree` reads DICOM images from folders or files (inputs are only read) and writes each copy to
``OUT/<new Study UID>/<new Series UID>/<new SOP Instance UID>.dcm``, so no output name carries an input name.
The UID key is random per run unless one is given; nothing that maps new values back to old ones is written.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import secrets
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from pneumoview import __version__
from pneumoview.export import atomic_write_bytes
from pneumoview.study_index import ScanError, scan

__all__ = [
    "BASIC_PROFILE_CODE",
    "DeidentifyError",
    "DeidentifyOptions",
    "DeidentifyReport",
    "UidMapper",
    "deidentify_dataset",
    "deidentify_file",
    "deidentify_tree",
]

BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
MODIFIED_DATES_CODE = ("113107", "DCM", "Retain Longitudinal Temporal Information Modified Dates Option")
PATIENT_CHARACTERISTICS_CODE = ("113108", "DCM", "Retain Patient Characteristics Option")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Effective actions of PS3.15 Table E.1-1 by keyword. X remove, Z empty, D dummy value, U new UID.
_REMOVE = _words(
    """
IssuerOfAccessionNumberSequence AcquisitionComments AcquisitionDate AcquisitionDateTime AcquisitionDeviceProcessingDescription
AcquisitionProtocolDescription AcquisitionTime ActualHumanPerformersSequence AdditionalPatientHistory AdmissionID
AdmittingDate AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription AdmittingTime Allergies
AuthorObserverSequence BranchOfService CassetteID CommentsOnThePerformedProcedureStep
ConfidentialityConstraintOnPatientDataDescription ConsultingPhysicianIdentificationSequence ConsultingPhysicianName
ContributionDescription CountryOfResidence CurrentPatientLocation CurveDate CurveTime CustodialOrganizationSequence
DataSetTrailingPadding DateOfLastCalibration DerivationDescription DetectorID DeviceSerialNumber
DigitalSignaturesSequence DischargeDiagnosisDescription DistributionAddress DistributionName EthnicGroup
FrameComments GantryID GeneratorID HumanPerformerName HumanPerformerOrganization IconImageSequence
IdentifyingComments ImageComments ImagePresentationComments ImagingServiceRequestComments Impressions
InstanceCreationDate InstanceCreationTime InstitutionAddress InstitutionCodeSequence InstitutionName
InstitutionalDepartmentName InsurancePlanIdentification IntendedRecipientsOfResultsIdentificationSequence
InterpretationApproverSequence InterpretationAuthor InterpretationDiagnosisDescription InterpretationIDIssuer
InterpretationRecorder InterpretationText InterpretationTranscriber IssuerOfAdmissionID IssuerOfPatientID
IssuerOfPatientIDQualifiersSequence IssuerOfServiceEpisodeID LastMenstrualDate MedicalAlerts MedicalRecordLocator
MilitaryRank ModifiedAttributesSequence ModifyingDeviceID ModifyingDeviceManufacturer NameOfPhysiciansReadingStudy
NamesOfIntendedRecipientsOfResults Occupation OperatorIdentificationSequence OperatorsName
OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation OriginalAttributesSequence OtherPatientIDs
OtherPatientIDsSequence OtherPatientNames OverlayDate OverlayTime ParticipantSequence PatientAddress PatientAge
PatientBirthName PatientBirthTime PatientComments PatientInstitutionResidence PatientInsurancePlanCodeSequence
PatientMotherBirthName PatientPrimaryLanguageCodeSequence PatientPrimaryLanguageModifierCodeSequence
PatientReligiousPreference PatientSexNeutered PatientSize PatientState PatientTelephoneNumbers
PatientTransportArrangements PatientWeight PerformedLocation PerformedProcedureStepDescription
PerformedProcedureStepEndDate PerformedProcedureStepEndTime PerformedProcedureStepID
PerformedProcedureStepStartDate PerformedProcedureStepStartTime PerformedStationAETitle
PerformedStationGeographicLocationCodeSequence PerformedStationName PerformedStationNameCodeSequence
PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress PersonName PersonTelephoneNumbers
PhysicianApprovingInterpretation PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
PhysiciansReadingStudyIdentificationSequence PlateID PreMedication PregnancyStatus ProtocolName
ReasonForStudy ReasonForTheImagingServiceRequest ReferencedDigitalSignatureSequence
ReferencedPatientAliasSequence ReferencedPatientSequence ReferencedPerformedProcedureStepSequence
ReferencedSOPInstanceMACSequence ReferencedStudySequence ReferringPhysicianAddress
ReferringPhysicianIdentificationSequence ReferringPhysicianTelephoneNumbers RegionOfResidence
RequestAttributesSequence RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription
RequestedProcedureID RequestedProcedureLocation RequestingPhysician RequestingService ResponsibleOrganization
ResponsiblePerson ResultsComments ResultsDistributionListSequence ResultsIDIssuer ScheduledHumanPerformersSequence
ScheduledPatientInstitutionResidence ScheduledPerformingPhysicianIdentificationSequence
ScheduledPerformingPhysicianName ScheduledProcedureStepDescription ScheduledProcedureStepEndDate
ScheduledProcedureStepEndTime ScheduledProcedureStepID ScheduledProcedureStepLocation
ScheduledProcedureStepStartDate ScheduledProcedureStepStartTime ScheduledStationAETitle
ScheduledStationGeographicLocationCodeSequence ScheduledStationName ScheduledStationNameCodeSequence
ScheduledStudyLocation ScheduledStudyLocationAETitle SeriesDate SeriesDescription SeriesTime
ServiceEpisodeDescription ServiceEpisodeID SmokingStatus SoftwareVersions SpecialNeeds StationName StudyComments
StudyDescription StudyIDIssuer TextComments TextString TimeOfLastCalibration TimezoneOffsetFromUTC TopicAuthor
TopicKeywords TopicSubject TopicTitle VerifyingOrganization VisitComments
"""
)
_EMPTY = _words(
    """
AccessionNumber ContentCreatorName ContrastBolusAgent FillerOrderNumberImagingServiceRequest PatientBirthDate
PatientSex PlacerOrderNumberImagingServiceRequest ReferringPhysicianName StudyDate StudyID StudyTime
VerifyingObserverIdentificationCodeSequence
"""
)
_DUMMY = _words("ContentDate ContentTime VerifyingObserverName VerifyingObserverSequence")
_PSEUDONYM = ("PatientID", "PatientName")
_PATIENT_CHARACTERISTICS = frozenset(
    _words(
        "PatientAge PatientSex PatientSize PatientWeight EthnicGroup SmokingStatus PregnancyStatus PatientSexNeutered"
    )
)
# UI attributes that name classes, syntaxes or schemes, never an instance: kept.
_KEEP_UIDS = frozenset(
    _words("""
SOPClassUID ReferencedSOPClassUID MediaStorageSOPClassUID TransferSyntaxUID ImplementationClassUID CodingSchemeUID
AffectedSOPClassUID RequestedSOPClassUID ReferencedSOPClassUIDInFile RelatedGeneralSOPClassUID
OriginalSpecializedSOPClassUID SOPClassesInStudy MappingResourceUID ContextUID ContextGroupExtensionCreatorUID
PrivateInformationCreatorUID ReferencedTransferSyntaxUIDInFile EncryptedContentTransferSyntaxUID
RetrieveLocationUID
""")
)
ACTIONS: dict[str, str] = {
    **dict.fromkeys(_REMOVE, "X"),
    **dict.fromkeys(_EMPTY, "Z"),
    **dict.fromkeys(_DUMMY, "D"),
}
_STANDARD_UID_ROOT = "1.2.840.10008."
_DUMMY_BY_VR = {"PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000Y"}


class UidMapper:
    """Maps original UIDs to ``2.25.<int>`` UIDs with HMAC-SHA256 under ``key``: the same UID always gives the same
    new UID for one key, and without the key the new UID says nothing about the old one."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key if key is not None else secrets.token_bytes(32)

    def __call__(self, uid: str) -> str:
        uid = str(uid).strip().rstrip("\x00")
        if not uid:
            return uid
        digest = hmac.new(self.key, b"uid:" + uid.encode("ascii", "replace"), hashlib.sha256).digest()
        return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"

    def pseudonym(self, value: str) -> str:
        """A short keyed pseudonym for a patient identifier: ``ANON-`` and 10 hex digits."""
        digest = hmac.new(
            self.key, b"id:" + value.strip().encode("utf-8", "replace"), hashlib.sha256
        ).hexdigest()
        return f"ANON-{digest[:10].upper()}"


@dataclass(frozen=True)
class DeidentifyOptions:
    """Profile options: shift dates by ``date_shift_days`` (else remove them), keep patient characteristics, copy
    images with burned-in annotation."""

    date_shift_days: int | None = None
    keep_patient_characteristics: bool = False
    allow_burned_in: bool = False


def _shift(value: str, vr: str, days: int) -> str:
    """``value`` (DA ``YYYYMMDD`` or DT ``YYYYMMDDhhmmss…``) moved by ``days``; a DT keeps its time of day."""
    text = str(value).strip()
    shifted = (datetime.strptime(text[:8], "%Y%m%d") + timedelta(days=days)).strftime("%Y%m%d")
    return shifted if vr == "DA" else shifted + text[8:]


def _empty(elem: DataElement) -> None:
    elem.value = DicomSequence([]) if elem.VR == "SQ" else None


def _dummy(elem: DataElement) -> None:
    if elem.VR == "SQ":
        elem.value = DicomSequence([])
    elif elem.VR in _DUMMY_BY_VR:
        elem.value = _DUMMY_BY_VR[elem.VR]
    elif elem.VR in ("US", "SS", "UL", "SL", "FL", "FD", "IS", "DS"):
        elem.value = 0
    else:
        elem.value = "ANONYMOUS"


def _map_uids(elem: DataElement, mapper: UidMapper) -> None:
    values = elem.value if elem.VM > 1 else [elem.value]
    new = [v if not v or str(v).startswith(_STANDARD_UID_ROOT) else mapper(str(v)) for v in values]
    elem.value = new if elem.VM > 1 else new[0]


def _action(keyword: str, elem: DataElement, options: DeidentifyOptions) -> str | None:
    """What to do with one element: X Z D (PS3.15), P pseudonym, S shift the date, K keep, None: see the VR."""
    if keyword in _PSEUDONYM:
        return "P"
    if options.keep_patient_characteristics and keyword in _PATIENT_CHARACTERISTICS:
        return "K"
    if options.date_shift_days is not None and keyword not in ("PatientBirthDate", "PatientBirthTime"):
        if elem.VR in ("DA", "DT"):
            return "S"
        if elem.VR == "TM":
            return "K"  # dates move by whole days, so times of day stay true
    action = ACTIONS.get(keyword)
    if action is None and elem.VR in ("DA", "DT", "TM", "PN"):
        # Any other date, time or person name: the table removes such attributes; here all of them go.
        return "X"
    return action


def _deidentify(ds: Dataset, mapper: UidMapper, options: DeidentifyOptions) -> None:
    for elem in list(ds):
        tag = elem.tag
        if tag.is_private or (tag.group & 0xFF00) in (0x5000, 0x6000):
            del ds[tag]  # private attributes, curves and overlays
            continue
        keyword = keyword_for_tag(tag)
        action = _action(keyword, elem, options)
        if action == "S" and elem.value not in (None, ""):
            try:
                elem.value = _shift(str(elem.value), elem.VR, int(options.date_shift_days or 0))
            except ValueError:
                del ds[tag]  # a date that cannot be read cannot be shifted
        elif action == "P":
            original = str(ds.get("PatientID", "") or ds.get("PatientName", "") or "")
            elem.value = mapper.pseudonym(original) if original.strip() else ""
        elif action == "X":
            del ds[tag]
        elif action == "Z":
            _empty(elem)
        elif action == "D":
            _dummy(elem)
        elif elem.VR == "UI" and keyword not in _KEEP_UIDS and elem.value:
            _map_uids(elem, mapper)
        elif elem.VR == "SQ" and elem.value:
            for item in elem.value:
                _deidentify(item, mapper, options)


def _code_item(code: tuple[str, str, str]) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def deidentify_dataset(ds: Dataset, mapper: UidMapper, options: DeidentifyOptions | None = None) -> Dataset:
    """De-identify ``ds`` in place (see the module docstring) and return it; its file meta is updated too."""
    options = options or DeidentifyOptions()
    _deidentify(ds, mapper, options)
    codes = [BASIC_PROFILE_CODE]
    if options.date_shift_days is not None:
        codes.append(MODIFIED_DATES_CODE)
    if options.keep_patient_characteristics:
        codes.append(PATIENT_CHARACTERISTICS_CODE)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"PneumoView {__version__} DICOM PS3.15 E.1 Basic Profile"[:64]
    ds.DeidentificationMethodCodeSequence = DicomSequence([_code_item(c) for c in codes])
    ds.LongitudinalTemporalInformationModified = (
        "MODIFIED" if options.date_shift_days is not None else "REMOVED"
    )
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle",
                    "PrivateInformationCreatorUID", "PrivateInformation"):  # fmt: skip
        if keyword in meta:
            delattr(meta, keyword)
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.ImplementationVersionName = f"PNEUMOVIEW_{__version__.replace('.', '')}"[:16]
    return ds


class DeidentifyError(Exception):
    """A file that was not copied, with a sentence saying why."""


def _read(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(path)
        except InvalidDicomError:
            ds = dcmread(path, force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is None or not str(meta.get("TransferSyntaxUID", "") or "").strip():
        if meta is None:
            ds.file_meta = FileMetaDataset()
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit in (True, None) else ExplicitVRLittleEndian
        )
    return ds


def deidentify_file(
    src: str | Path, mapper: UidMapper, options: DeidentifyOptions | None = None
) -> tuple[Dataset, bytes]:
    """Read ``src`` (only read), de-identify it and return ``(dataset, encoded file bytes)``.

    Raises:
        DeidentifyError: the file is not a DICOM image, has no SOP Instance UID, or shows burned-in annotation.
    """
    options = options or DeidentifyOptions()
    src = Path(src)
    try:
        ds = _read(src)
    except Exception as exc:
        raise DeidentifyError(
            f"not a readable DICOM file ({type(exc).__name__}); it was not copied."
        ) from exc
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DeidentifyError("not a DICOM image (no pixel data); it was not copied.")
    if (
        not str(ds.get("SOPInstanceUID", "") or "").strip()
        or not str(ds.get("SOPClassUID", "") or "").strip()
    ):
        raise DeidentifyError("the file has no SOP Class or SOP Instance UID; it was not copied.")
    if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES" and not options.allow_burned_in:
        raise DeidentifyError(
            "Burned In Annotation is YES: the pixels may show a name or an ID, which this profile does not clean; "
            "it was not copied (use --allow-burned-in after checking the image)."
        )
    pixel_before = ds.get("PixelData")
    pixels = None if pixel_before is None else bytes(ds.PixelData)
    deidentify_dataset(ds, mapper, options)
    if pixels is not None and bytes(ds.PixelData) != pixels:
        raise AssertionError("pixel data changed during de-identification")  # never expected: a bug
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(buf, enforce_file_format=True)
    return ds, buf.getvalue()


@dataclass
class DeidentifyReport:
    """What :func:`deidentify_tree` did: ``written`` (source, copy) pairs and ``skipped`` (source, reason) pairs."""

    out_dir: Path
    written: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
    except ValueError:
        return False
    return True


def deidentify_tree(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    key: bytes | None = None,
    options: DeidentifyOptions | None = None,
    force: bool = False,
    on_file: Callable[[Path, Path | None, str | None], None] | None = None,
) -> DeidentifyReport:
    """De-identify every DICOM image under ``inputs`` (folders, searched recursively, or files) into ``out_dir``.

    Copies are named ``<new Study UID>/<new Series UID>/<new SOP Instance UID>.dcm`` and written atomically; an
    existing copy is replaced only with ``force``. PNG/JPEG files, DICOMDIRs and non-image objects are skipped with
    a reason. ``on_file(source, copy_or_None, reason_or_None)`` is called after each file.

    Raises:
        ValueError: ``out_dir`` is one of the inputs or inside one (inputs are never written to).
        FileNotFoundError: an input does not exist.
    """
    out = Path(out_dir)
    for p in map(Path, inputs):
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
        if p.is_dir() and _inside(out, p):
            raise ValueError(f"the output folder {out} is inside the input {p}; inputs are never written to")
    mapper = UidMapper(key)
    options = options or DeidentifyOptions()
    report = DeidentifyReport(out)
    seen: set[Path] = set()
    written_now: dict[Path, Path] = {}

    def skip(path: Path, reason: str) -> None:
        report.skipped.append((path, reason))
        if on_file is not None:
            on_file(path, None, reason)

    for item in (entry for p in map(Path, inputs) for entry in scan(p)):
        path = item.path
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        if isinstance(item, ScanError):
            skip(path, item.message)
            continue
        if item.file_format != "dicom":
            skip(
                path,
                f"a {item.file_format.upper()} file, not DICOM: it has no header to de-identify; not copied.",
            )
            continue
        if item.kind != "image":
            skip(path, f"a {item.object_kind}, not an image; not copied.")
            continue
        try:
            ds, data = deidentify_file(path, mapper, options)
        except DeidentifyError as exc:
            skip(path, str(exc))
            continue
        study = str(ds.get("StudyInstanceUID", "") or "no-study-uid")
        dest = out / study / str(ds.get("SeriesInstanceUID", "") or "no-series-uid")
        dest = dest / f"{ds.SOPInstanceUID}.dcm"
        if dest in written_now:
            skip(
                path,
                f"it has the same SOP Instance UID as {written_now[dest].name}, copied already; not copied.",
            )
            continue
        if dest.exists() and not force:
            skip(path, f"{dest.relative_to(out)} already exists (use --force to replace it).")
            continue
        atomic_write_bytes(dest, data)
        os.chmod(dest, 0o644)
        written_now[dest] = path
        report.written.append((path, dest))
        if on_file is not None:
            on_file(path, dest, None)
    return report
