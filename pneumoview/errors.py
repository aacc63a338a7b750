"""Exceptions with messages a user can act on.

Every error raised for a user's file names the file and says what to do next.
"""

from __future__ import annotations

from pathlib import Path


class PneumoViewError(Exception):
    """Base class of every error PneumoView raises on purpose."""


class ImageReadError(PneumoViewError):
    """A file could not be read as a radiograph.

    ``stage`` is ``"header"`` when the file is not readable as DICOM/PNG/JPEG at all and ``"pixels"`` when the
    header was fine but the pixel data could not be decoded or is not an image.
    """

    def __init__(self, path: str | Path, stage: str, message: str) -> None:
        self.path = Path(path)
        self.stage = stage
        self.message = message
        super().__init__(f"{self.path}: {message}")


class NotAnImageError(ImageReadError):
    """The file is valid DICOM but holds no image (SR, presentation state, KOS, RT plan, waveform …)."""

    def __init__(self, path: str | Path, kind: str) -> None:
        self.kind = kind
        super().__init__(
            path, "pixels", f"this DICOM file is a {kind} object, not an image; there is nothing to display."
        )


class UnsupportedTransferSyntaxError(ImageReadError):
    """The pixel data uses a compression that no installed decoder plugin handles."""

    def __init__(self, path: str | Path, syntax_name: str, syntax_uid: str, plugin: str) -> None:
        self.syntax_name = syntax_name
        self.syntax_uid = syntax_uid
        self.plugin = plugin
        super().__init__(
            path,
            "pixels",
            f"the pixel data is compressed as {syntax_name} ({syntax_uid}) and no installed decoder reads it; "
            f"install {plugin} (pip install {plugin}) and open the file again.",
        )


class ImageTooLargeError(ImageReadError):
    """The image is so large that decoding it could exhaust memory."""


class ModelError(PneumoViewError):
    """Base class of model registry and loading errors."""


class ManifestError(ModelError):
    """The model manifest is malformed (unknown keys, builders or members)."""


class ModelNotInstalledError(ModelError):
    """A model's weights file is not in any models folder."""


class ChecksumError(ModelError):
    """A weights file's sha256 differs from the manifest: the file is damaged or was replaced."""

    def __init__(self, path: str | Path, expected: str, actual: str) -> None:
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{self.path}: sha256 is {actual[:12]}… but the manifest expects {expected[:12]}…; the file is damaged "
            "or was replaced. Delete it and copy the original file in again (or retrain the model)."
        )


class ModelLoadError(ModelError):
    """The weights file exists and matches its checksum but could not be loaded into the model."""
