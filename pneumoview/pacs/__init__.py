"""PACS connectivity (Qt-free): peers, echo, study search, retrieve into a local cache, send.

DIMSE goes through pynetdicom (:mod:`pneumoview.pacs.dimse`), DICOMweb through dicomweb-client
(:mod:`pneumoview.pacs.dicomweb`); :mod:`pneumoview.pacs.client` picks one by the peer's kind. Importing this
package loads neither.
"""

from pneumoview.pacs.client import echo, find_studies, retrieve_study, send_files
from pneumoview.pacs.peers import (
    AssociationRejected,
    DimsePeer,
    PacsError,
    PacsUnreachable,
    Peer,
    WebPeer,
    peer_from_dict,
    peer_to_dict,
)
from pneumoview.pacs.query import StudyQuery, StudyRecord
from pneumoview.pacs.transfer import RetrieveResult, SendResult, cache_root, study_folder

__all__ = [
    "AssociationRejected",
    "DimsePeer",
    "PacsError",
    "PacsUnreachable",
    "Peer",
    "RetrieveResult",
    "SendResult",
    "StudyQuery",
    "StudyRecord",
    "WebPeer",
    "cache_root",
    "echo",
    "find_studies",
    "peer_from_dict",
    "peer_to_dict",
    "retrieve_study",
    "send_files",
    "study_folder",
]
