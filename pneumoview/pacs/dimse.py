"""DICOM (DIMSE) networking with pynetdicom: C-ECHO, C-FIND, C-GET, C-MOVE to our storage SCP, C-STORE.

Every call opens one association, does its work and releases it. Timeouts (connection, association, network) are
the peer's ``timeout_s``, so a PACS that is down or unreachable is reported within that time; a rejected
association (typically a wrong AE title) raises :class:`AssociationRejected` with the PACS's reason. Retrieves
list the study's instances first (C-FIND at IMAGE level) and fetch only those not yet complete in the folder.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom import sop_class as sc
from pynetdicom.presentation import build_context

from pneumoview.pacs.peers import AssociationRejected, DimsePeer, PacsError, PacsUnreachable
from pneumoview.pacs.query import RETURN_KEYS, StudyQuery, StudyRecord
from pneumoview.pacs.transfer import (
    Cancelled,
    Progress,
    RetrieveResult,
    SendResult,
    interrupted,
    is_image_class,
    present_instances,
    read_headers,
    remove_partials,
    write_instance,
)

__all__ = ["echo", "find_studies", "list_instances", "retrieve_study", "send_files"]

log = logging.getLogger(__name__)

#: Seconds to wait for each DIMSE answer once associated (a big instance can take a while to arrive).
DIMSE_TIMEOUT_S = 60.0
# pynetdicom makes these SOP class UIDs at import time, so its type information does not list them.
FIND: str = sc.StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
GET: str = sc.StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]
MOVE: str = sc.StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

#: Storage classes we accept in a retrieve: radiographs and other images, and the results that travel with them.
RETRIEVE_CLASSES = tuple(
    getattr(sc, name)
    for name in (
        "ComputedRadiographyImageStorage",
        "DigitalXRayImageStorageForPresentation",
        "DigitalXRayImageStorageForProcessing",
        "DigitalMammographyXRayImageStorageForPresentation",
        "SecondaryCaptureImageStorage",
        "MultiFrameGrayscaleByteSecondaryCaptureImageStorage",
        "MultiFrameGrayscaleWordSecondaryCaptureImageStorage",
        "MultiFrameTrueColorSecondaryCaptureImageStorage",
        "CTImageStorage",
        "MRImageStorage",
        "UltrasoundImageStorage",
        "XRayAngiographicImageStorage",
        "XRayRadiofluoroscopicImageStorage",
        "NuclearMedicineImageStorage",
        "PositronEmissionTomographyImageStorage",
        "VLPhotographicImageStorage",
        "BasicTextSRStorage",
        "EnhancedSRStorage",
        "ComprehensiveSRStorage",
        "Comprehensive3DSRStorage",
        "XRayRadiationDoseSRStorage",
        "KeyObjectSelectionDocumentStorage",
        "SegmentationStorage",
        "GrayscaleSoftcopyPresentationStateStorage",
        "ColorSoftcopyPresentationStateStorage",
        "EncapsulatedPDFStorage",
        "TwelveLeadECGWaveformStorage",
        "GeneralECGWaveformStorage",
    )
)
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
#: For radiographs, each compressed syntax gets a context of its own, so a compressed file arrives as stored: a
#: PACS accepts one syntax per context, and with several in one it picks one and transcodes to it.
COMPRESSED = (
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)
COMPRESSED_CLASSES = RETRIEVE_CLASSES[:5]  # CR, DX (two), mammography, secondary capture
_MAX_CONTEXTS = 127


def _ae(peer: DimsePeer) -> AE:
    ae = AE(ae_title=peer.our_aet)
    ae.connection_timeout = peer.timeout_s
    ae.acse_timeout = peer.timeout_s
    ae.network_timeout = max(peer.timeout_s, DIMSE_TIMEOUT_S)
    ae.dimse_timeout = max(peer.timeout_s, DIMSE_TIMEOUT_S)
    ae.maximum_pdu_size = 0  # no limit: fewer, larger PDUs
    return ae


@contextlib.contextmanager
def _association(
    peer: DimsePeer, ae: AE, ext_neg: list | None = None, handlers: list | None = None
) -> Iterator[Any]:
    """An established association to ``peer``; translates failures into :class:`PacsError` subclasses."""
    reject: dict[str, str] = {}

    def on_acse(event: Any) -> None:
        primitive = event.primitive
        if getattr(primitive, "result", None) in (0x01, 0x02):
            reject["reason"] = str(getattr(primitive, "reason_str", "") or "")
            reject["source"] = str(getattr(primitive, "source_str", "") or "")

    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.aet,
        ext_neg=ext_neg or None,
        evt_handlers=[(evt.EVT_ACSE_RECV, on_acse), *(handlers or [])],
    )
    if not assoc.is_established:
        if assoc.is_rejected:
            reason = reject.get("reason") or "no reason given"
            raise AssociationRejected(
                f"{peer.address} rejected the association from {peer.our_aet} ({reason}). Check the PACS's AE "
                f"title ({peer.aet}) and that the PACS has our AE title ({peer.our_aet}) in its list of peers."
            )
        raise PacsUnreachable(
            f"no DICOM answer from {peer.host}:{peer.port} within {peer.timeout_s:g} s: check that the PACS is "
            "running and that the host and port are right (and that no firewall is in the way)."
        )
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def _status(ds: Dataset | None) -> int | None:
    return None if ds is None or "Status" not in ds else int(ds.Status)


def echo(peer: DimsePeer) -> None:
    """C-ECHO; returns when the PACS answered with success, raises :class:`PacsError` otherwise."""
    ae = _ae(peer)
    ae.add_requested_context(sc.Verification)  # type: ignore[attr-defined]  # made at import time
    with _association(peer, ae) as assoc:
        status = _status(assoc.send_c_echo())
    if status != 0x0000:
        raise PacsError(f"{peer.address} answered C-ECHO with status {status!r}")


def _find(assoc: Any, identifier: Dataset, peer: DimsePeer) -> Iterator[Dataset]:
    for status, found in assoc.send_c_find(identifier, FIND):
        code = _status(status)
        if code is None:
            raise PacsUnreachable(f"{peer.address} stopped answering during the query (no response in time)")
        if code in (0xFF00, 0xFF01):
            if found is not None:
                yield found
        elif code == 0x0000:
            return
        else:
            raise PacsError(f"{peer.address} refused the query (C-FIND status 0x{code:04X})")


def find_studies(peer: DimsePeer, query: StudyQuery) -> list[StudyRecord]:
    """C-FIND at STUDY level; one record per study, in the PACS's order (at most ``query.limit`` when set)."""
    ae = _ae(peer)
    ae.add_requested_context(FIND)
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for key in RETURN_KEYS:
        setattr(identifier, key, "")
    for key, value in query.matching_keys().items():
        setattr(identifier, key, value)
    records: list[StudyRecord] = []
    with _association(peer, ae) as assoc:
        for found in _find(assoc, identifier, peer):
            records.append(StudyRecord.from_attributes(found))
            if query.limit and len(records) >= query.limit:
                assoc.send_c_cancel(1, query_model=FIND)
                break
    return records


@dataclass(frozen=True)
class InstanceRef:
    """One instance of a study as the PACS lists it."""

    series_uid: str
    sop_uid: str
    sop_class: str


def _list_instances(assoc: Any, peer: DimsePeer, study_uid: str) -> list[InstanceRef]:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = study_uid
    identifier.SeriesInstanceUID = ""
    identifier.SOPInstanceUID = ""
    identifier.SOPClassUID = ""
    return [
        InstanceRef(str(f.SeriesInstanceUID), str(f.SOPInstanceUID), str(f.get("SOPClassUID", "")))
        for f in _find(assoc, identifier, peer)
        if f.get("SOPInstanceUID")
    ]


def list_instances(peer: DimsePeer, study_uid: str) -> list[InstanceRef]:
    """Every instance of a study (C-FIND at IMAGE level)."""
    ae = _ae(peer)
    ae.add_requested_context(FIND)
    with _association(peer, ae) as assoc:
        return _list_instances(assoc, peer, study_uid)


def _storage_contexts() -> list:
    out = []
    for uid in RETRIEVE_CLASSES:
        out.append(build_context(uid, list(UNCOMPRESSED)))
        if uid in COMPRESSED_CLASSES:
            out.extend(build_context(uid, [syntax]) for syntax in COMPRESSED)
    return out


class _Receiver:
    """The C-STORE handler of a retrieve: writes each arriving instance into the folder atomically."""

    def __init__(self, folder: Path, total: int, done: int, progress: Progress | None, cancelled: Cancelled):
        self.folder = folder
        self.total = total
        self.done = done
        self.progress = progress
        self.cancelled = cancelled
        self.fetched: list[Path] = []
        self.non_images: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> int:
        if self.cancelled():
            return 0xA700  # "out of resources": the PACS stops sending; the retrieve reports cancelled
        try:
            sop_uid = str(event.request.AffectedSOPInstanceUID)
            sop_class = str(event.request.AffectedSOPClassUID)
            path = write_instance(self.folder, sop_uid, event.encoded_dataset(include_meta=True))
        except (OSError, ValueError) as exc:
            log.warning("could not store an instance from the PACS: %s", exc)
            return 0xA700
        with self.lock:
            self.fetched.append(path)
            if not is_image_class(sop_class):
                self.non_images.append(path)
            self.done += 1
            done = self.done
        if self.progress is not None:
            self.progress(done, self.total, path)
        return 0x0000


def _retrieve_requests(study_uid: str, wanted: list[InstanceRef], all_missing: bool) -> list[Dataset]:
    if all_missing:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = study_uid
        return [ds]
    out = []
    by_series: dict[str, list[str]] = {}
    for ref in wanted:
        by_series.setdefault(ref.series_uid, []).append(ref.sop_uid)
    for series_uid, uids in by_series.items():
        for i in range(0, len(uids), 100):
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = uids[i : i + 100]
            out.append(ds)
    return out


def retrieve_study(
    peer: DimsePeer,
    study_uid: str,
    folder: Path,
    progress: Progress | None = None,
    cancelled: Cancelled = lambda: False,
) -> RetrieveResult:
    """Fetch the study's instances that ``folder`` lacks, by C-GET or (``peer.retrieve == "move"``) C-MOVE to a
    storage SCP we run on ``peer.our_port`` for the duration. Files already complete are kept and not fetched
    again; cancelling keeps what arrived (``result.cancelled``)."""
    folder = Path(folder)
    remove_partials(folder)
    ae = _ae(peer)
    ae.add_requested_context(FIND)
    with _association(peer, ae) as assoc:
        listed = _list_instances(assoc, peer, study_uid)
    result = RetrieveResult(folder=folder, expected={r.sop_uid for r in listed})
    if not listed:
        raise PacsError(f"{peer.address} has no instances for study {study_uid}")
    present = present_instances(folder)
    result.already_present = result.expected & present
    wanted = [r for r in listed if r.sop_uid not in present]
    if not wanted:
        return result
    receiver = _Receiver(folder, len(listed), len(result.already_present), progress, cancelled)
    requests = _retrieve_requests(study_uid, wanted, all_missing=not result.already_present)
    try:
        if peer.retrieve == "move":
            _move(peer, requests, receiver, cancelled, result)
        else:
            _get(peer, requests, receiver, cancelled, result)
    except PacsError as exc:
        kept = len(receiver.fetched) + len(result.already_present)
        raise interrupted(exc, kept, len(listed), folder) from None
    result.fetched = receiver.fetched
    result.non_images = receiver.non_images + [
        p for p in (folder / f"{u}.dcm" for u in result.already_present) if _is_non_image_file(p)
    ]
    result.cancelled = result.cancelled or cancelled()
    kinds = {r.sop_uid: r.sop_class for r in listed}
    for uid in sorted(result.missing) if not result.cancelled else ():
        kind = UID(kinds.get(uid, "")).name if kinds.get(uid) else "unknown kind"
        accepted = kinds.get(uid) in RETRIEVE_CLASSES
        why = (
            "the PACS did not send it"
            if accepted
            else f"PneumoView does not accept this kind of object ({kind})"
        )
        result.failed.append((uid, why))
    return result


def _is_non_image_file(path: Path) -> bool:
    try:
        return not is_image_class(str(dcmread(path, stop_before_pixels=True).SOPClassUID))
    except (OSError, InvalidDicomError, AttributeError):
        return False


def _drain(responses: Iterable, peer: DimsePeer, cancelled: Cancelled, assoc: Any, result: RetrieveResult):
    for status, _identifier in responses:
        code = _status(status)
        if code is None:
            raise PacsUnreachable(
                f"{peer.address} stopped answering during the retrieve (no response in time)"
            )
        if cancelled():
            result.cancelled = True
            assoc.abort()
            return
        if code in (0xFF00, 0xFF01):
            continue
        if code not in (0x0000, 0xB000, 0xFE00):
            log.warning("%s answered the retrieve with status 0x%04X", peer.address, code)
        return


def _get(peer: DimsePeer, requests: list[Dataset], receiver: _Receiver, cancelled: Cancelled, result) -> None:
    ae = _ae(peer)
    ae.add_requested_context(GET)
    contexts = _storage_contexts()[: _MAX_CONTEXTS - 1]
    for cx in contexts:
        ae.add_requested_context(cx.abstract_syntax, cx.transfer_syntax)
    roles = [build_role(uid, scp_role=True) for uid in RETRIEVE_CLASSES]
    with _association(peer, ae, ext_neg=roles, handlers=[(evt.EVT_C_STORE, receiver)]) as assoc:
        for request in requests:
            _drain(assoc.send_c_get(request, GET), peer, cancelled, assoc, result)
            if result.cancelled:
                return


def _move(
    peer: DimsePeer, requests: list[Dataset], receiver: _Receiver, cancelled: Cancelled, result
) -> None:
    scp = AE(ae_title=peer.our_aet)
    scp.network_timeout = DIMSE_TIMEOUT_S
    for cx in _storage_contexts():
        scp.add_supported_context(cx.abstract_syntax, cx.transfer_syntax)
    try:
        server = scp.start_server(
            ("", peer.our_port), block=False, evt_handlers=[(evt.EVT_C_STORE, receiver)]
        )
    except OSError as exc:
        raise PacsError(
            f"cannot listen on our storage port {peer.our_port} for C-MOVE ({exc}); choose a free port or C-GET"
        ) from None
    try:
        ae = _ae(peer)
        ae.add_requested_context(MOVE)
        with _association(peer, ae) as assoc:
            for request in requests:
                _drain(assoc.send_c_move(request, peer.our_aet, MOVE), peer, cancelled, assoc, result)
                if result.cancelled:
                    return
    finally:
        if server is not None:  # start_server(block=False) always returns it; the type says Optional
            server.shutdown()


def send_files(
    peer: DimsePeer,
    paths: Iterable[str | Path],
    progress: Progress | None = None,
    cancelled: Cancelled = lambda: False,
) -> SendResult:
    """C-STORE every DICOM file in ``paths`` (files or folders). Files keep their SOP Instance UIDs, so sending
    twice stores nothing twice. Files that are not DICOM are listed in ``failed`` with the reason."""
    headers, result = read_headers(paths)
    total = len(headers)
    n_before = len(result.failed)
    pairs = list(dict.fromkeys((c, s) for _, c, s in headers))
    # One association per block of at most 127 (class, syntax) contexts; usually a single one.
    for start in range(0, len(pairs), _MAX_CONTEXTS):
        block = set(pairs[start : start + _MAX_CONTEXTS])
        ae = _ae(peer)
        for sop_class, syntax in block:
            ae.add_requested_context(sop_class, syntax)
        with _association(peer, ae) as assoc:
            accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
            for path, sop_class, syntax in headers:
                if (sop_class, syntax) not in block:
                    continue
                if cancelled():
                    result.cancelled = True
                    return result
                if (sop_class, syntax) not in accepted:
                    result.failed.append(
                        (path, f"{peer.address} does not accept this kind of object ({sop_class})")
                    )
                    continue
                status = _status(assoc.send_c_store(path))
                if status is None:
                    raise PacsUnreachable(f"{peer.address} stopped answering while we sent {path.name}")
                if status == 0x0000 or 0xB000 <= status <= 0xBFFF:
                    result.sent.append(path)
                else:
                    result.failed.append((path, f"{peer.address} refused it (C-STORE status 0x{status:04X})"))
                if progress is not None:
                    progress(len(result.sent) + len(result.failed) - n_before, total, path)
    return result
