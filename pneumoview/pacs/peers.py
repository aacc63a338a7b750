"""PACS peers (where to connect) and the errors talking to them raises.

A peer is either a :class:`DimsePeer` (classic DICOM networking: host, port, the server's AE title, our AE title
and, for C-MOVE, the port of our own storage SCP) or a :class:`WebPeer` (DICOMweb: a base URL under which
``/studies`` answers QIDO-RS, WADO-RS and STOW-RS). Both are frozen, validated on construction and round-trip
through plain JSON dictionaries, which is how the settings file stores them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlparse

from pneumoview.errors import PneumoViewError

__all__ = [
    "RETRIEVE_METHODS",
    "AssociationRejected",
    "DimsePeer",
    "PacsError",
    "PacsUnreachable",
    "Peer",
    "WebPeer",
    "peer_from_dict",
    "peer_to_dict",
]

#: How a DIMSE peer sends us a study: C-GET on our association, or C-MOVE to our storage SCP.
RETRIEVE_METHODS = ("get", "move")
DEFAULT_TIMEOUT_S = 5.0


class PacsError(PneumoViewError):
    """A PACS operation failed; the message names the peer and says what to check."""


class PacsUnreachable(PacsError):
    """Nothing answered at the peer's address (down, wrong host/port, firewall, timeout)."""


class AssociationRejected(PacsError):
    """The PACS answered but refused us (usually a wrong called or calling AE title)."""


def _check_aet(value: str, what: str) -> str:
    text = value.strip()
    if not 1 <= len(text) <= 16 or "\\" in text or not text.isprintable():
        raise ValueError(f"{what} must be 1 to 16 printable characters without a backslash, got {value!r}")
    return text


@dataclass(frozen=True)
class DimsePeer:
    """A DICOM (DIMSE) peer.

    Attributes:
        name: a label for menus and messages.
        host, port: the PACS's address and DICOM port.
        aet: the PACS's (called) AE title.
        our_aet: our (calling) AE title; the PACS must know it for C-MOVE.
        our_port: the port our storage SCP listens on for C-MOVE (0: use C-GET only).
        retrieve: ``"get"`` (C-GET, default, no inbound port needed) or ``"move"`` (C-MOVE to ``our_port``).
        timeout_s: seconds to wait for a connection or an answer before saying the PACS is unreachable.
    """

    name: str
    host: str
    port: int
    aet: str
    our_aet: str = "PNEUMOVIEW"
    our_port: int = 0
    retrieve: str = "get"
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ValueError("the PACS host is empty")
        if not 1 <= int(self.port) <= 65535:
            raise ValueError(f"the PACS port must be 1 to 65535, got {self.port}")
        if not 0 <= int(self.our_port) <= 65535:
            raise ValueError(f"our storage port must be 0 to 65535, got {self.our_port}")
        object.__setattr__(self, "aet", _check_aet(self.aet, "the PACS AE title"))
        object.__setattr__(self, "our_aet", _check_aet(self.our_aet, "our AE title"))
        if self.retrieve not in RETRIEVE_METHODS:
            raise ValueError(f"retrieve must be one of {', '.join(RETRIEVE_METHODS)}, got {self.retrieve!r}")
        if self.retrieve == "move" and not self.our_port:
            raise ValueError("C-MOVE needs our storage port (the PACS sends the images there)")
        if not self.timeout_s > 0:
            raise ValueError("the timeout must be positive")

    @property
    def address(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class WebPeer:
    """A DICOMweb peer: ``url`` is the service root (``…/dicom-web``); ``timeout_s`` as for :class:`DimsePeer`."""

    name: str
    url: str
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        parsed = urlparse(self.url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"the DICOMweb URL must start with http:// or https://, got {self.url!r}")
        object.__setattr__(self, "url", self.url.strip().rstrip("/"))
        if not self.timeout_s > 0:
            raise ValueError("the timeout must be positive")

    @property
    def address(self) -> str:
        return self.url


Peer = DimsePeer | WebPeer


def peer_to_dict(peer: Peer) -> dict[str, Any]:
    """``{"kind": "dimse"|"dicomweb", ...fields}`` for JSON."""
    kind = "dimse" if isinstance(peer, DimsePeer) else "dicomweb"
    return {"kind": kind, **asdict(peer)}


def peer_from_dict(data: Any) -> Peer:
    """The inverse of :func:`peer_to_dict`; raises ValueError/TypeError naming what is wrong."""
    if not isinstance(data, dict):
        raise TypeError("a PACS peer must be a JSON object")
    fields = {k: v for k, v in data.items() if k != "kind"}
    kind = data.get("kind", "dimse")
    if kind == "dimse":
        for key in ("port", "our_port"):
            if key in fields and (isinstance(fields[key], bool) or not isinstance(fields[key], int)):
                raise TypeError(f"{key} must be a whole number")
        return DimsePeer(**fields)
    if kind == "dicomweb":
        return WebPeer(**fields)
    raise ValueError(f"unknown PACS peer kind {kind!r} (dimse or dicomweb)")
