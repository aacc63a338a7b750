"""DICOMweb with dicomweb-client: QIDO-RS (echo, find), WADO-RS (retrieve), STOW-RS (send).

Same contract as :mod:`pneumoview.pacs.dimse`: connection problems raise :class:`PacsUnreachable` within the
peer's ``timeout_s`` (no automatic retries), 401/403 raise :class:`AssociationRejected`, and a retrieve fetches
only the instances its folder lacks.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread

from pneumoview.pacs.peers import AssociationRejected, PacsError, PacsUnreachable, WebPeer
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
    write_instance,
)

__all__ = ["echo", "find_studies", "retrieve_study", "send_files"]

log = logging.getLogger(__name__)

#: Seconds to wait for a response's data once connected (an instance can be large).
READ_TIMEOUT_S = 60.0
#: Studies per QIDO-RS request.
QIDO_PAGE = 500
#: Instances per STOW-RS request.
STOW_BATCH = 10


class _Session(requests.Session):
    """Sends QIDO wildcards as ``*``: dicomweb-client percent-encodes them (``%2A``), which RFC 3986 allows but
    some servers (Orthanc 1.10 among them) then match literally, so ``name*`` would find nothing."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if request.url and "%2A" in request.url:
            request.url = request.url.replace("%2A", "*")
        return super().send(request, **kwargs)


def _client(peer: WebPeer, quick: bool = False) -> DICOMwebClient:
    """``quick``: the answer must also come within ``timeout_s`` (the connection test); otherwise a slow
    answer (a big instance, a long study list) may take up to :data:`READ_TIMEOUT_S` between bytes."""
    read = peer.timeout_s if quick else max(peer.timeout_s, READ_TIMEOUT_S)
    client = DICOMwebClient(peer.url, session=_Session(), timeout=(peer.timeout_s, read))
    client.set_http_retry_params(retry=False)  # retries would turn "PACS down" into a long wait
    return client


@contextlib.contextmanager
def _errors(peer: WebPeer, doing: str) -> Iterator[None]:
    try:
        yield
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise PacsUnreachable(
            f"no DICOMweb answer from {peer.url} within {peer.timeout_s:g} s while {doing}: check that the server "
            f"is running and that the URL is right ({type(exc).__name__})"
        ) from None
    except requests.HTTPError as exc:
        code = exc.response.status_code if exc.response is not None else None
        if code in (401, 403):
            raise AssociationRejected(
                f"{peer.url} refused us (HTTP {code}) while {doing}: check the URL and the server's access rules"
            ) from None
        raise PacsError(f"{peer.url} failed while {doing} (HTTP {code}): {exc}") from None


def echo(peer: WebPeer) -> None:
    """A one-study QIDO-RS query; returns when the server answered."""
    with _errors(peer, "testing the connection"):
        _client(peer, quick=True).search_for_studies(limit=1)


def find_studies(peer: WebPeer, query: StudyQuery) -> list[StudyRecord]:
    """QIDO-RS ``/studies`` with the query's matching keys; one record per study."""
    client = _client(peer)
    records: dict[str, StudyRecord] = {}
    with _errors(peer, "searching for studies"):
        # Our own paging: dicomweb-client's get_remaining loops for ever on servers that ignore ``offset`` for
        # some filters (Orthanc 1.10 with ModalitiesInStudy); a page that adds no new study ends it here.
        while True:
            want = min(QIDO_PAGE, query.limit - len(records)) if query.limit else QIDO_PAGE
            page = client.search_for_studies(
                search_filters=query.matching_keys(),
                fields=list(RETURN_KEYS),
                limit=want,
                offset=len(records),
            )
            before = len(records)
            for item in page:
                record = StudyRecord.from_attributes(Dataset.from_json(item))
                records.setdefault(record.study_uid, record)
            if len(page) < want or len(records) == before or (query.limit and len(records) >= query.limit):
                break
    return list(records.values())[: query.limit or None]


def _list_instances(client: DICOMwebClient, study_uid: str) -> list[tuple[str, str, str]]:
    found = client.search_for_instances(
        study_instance_uid=study_uid, fields=["SOPClassUID", "SeriesInstanceUID"]
    )
    out = []
    for item in found:
        ds = Dataset.from_json(item)
        out.append((str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), str(ds.get("SOPClassUID", ""))))
    return out


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def retrieve_study(
    peer: WebPeer,
    study_uid: str,
    folder: Path,
    progress: Progress | None = None,
    cancelled: Cancelled = lambda: False,
) -> RetrieveResult:
    """WADO-RS, one instance per request, of the instances ``folder`` lacks (transfer syntax as stored)."""
    folder = Path(folder)
    client = _client(peer)
    with _errors(peer, f"listing study {study_uid}"):
        listed = _list_instances(client, study_uid)
    if not listed:
        raise PacsError(f"{peer.url} has no instances for study {study_uid}")
    result = RetrieveResult(folder=folder, expected={sop for _, sop, _ in listed})
    present = present_instances(folder)
    result.already_present = result.expected & present
    done = len(result.already_present)
    for series_uid, sop_uid, sop_class in listed:
        if sop_uid in present:
            if not is_image_class(sop_class):
                result.non_images.append(folder / f"{sop_uid}.dcm")
            continue
        if cancelled():
            result.cancelled = True
            break
        try:
            with _errors(peer, f"retrieving instance {sop_uid}"):
                ds = client.retrieve_instance(
                    study_uid, series_uid, sop_uid, media_types=(("application/dicom", "*"),)
                )
        except PacsError as exc:
            raise interrupted(exc, done, len(listed), folder) from None
        path = write_instance(folder, sop_uid, _encode(ds))
        result.fetched.append(path)
        if not is_image_class(sop_class or str(ds.get("SOPClassUID", ""))):
            result.non_images.append(path)
        done += 1
        if progress is not None:
            progress(done, len(listed), path)
    if not result.cancelled:
        result.failed.extend((uid, "the server did not send it") for uid in sorted(result.missing))
    return result


def send_files(
    peer: WebPeer,
    paths: Iterable[str | Path],
    progress: Progress | None = None,
    cancelled: Cancelled = lambda: False,
) -> SendResult:
    """STOW-RS every DICOM file in ``paths`` in batches; same SOP Instance UIDs, so no duplicates on resend."""
    headers, result = read_headers(paths)
    client = _client(peer)
    total = len(headers)
    done = 0
    for start in range(0, total, STOW_BATCH):
        if cancelled():
            result.cancelled = True
            break
        batch = [path for path, _, _ in headers[start : start + STOW_BATCH]]
        datasets = [dcmread(path) for path in batch]
        with _errors(peer, "sending"):
            response = client.store_instances(datasets)
        refused = _refused(response)
        for path, ds in zip(batch, datasets, strict=True):
            reason = refused.get(str(ds.SOPInstanceUID))
            if reason is None:
                result.sent.append(path)
            else:
                result.failed.append((path, f"{peer.url} refused it ({reason})"))
        done += len(batch)
        if progress is not None:
            progress(done, total, batch[-1])
    return result


def _refused(response: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in getattr(response, "FailedSOPSequence", None) or ():
        reason = item.get("FailureReason")
        out[str(item.get("ReferencedSOPInstanceUID", ""))] = (
            f"failure reason {reason}" if reason else "failed"
        )
    return out
