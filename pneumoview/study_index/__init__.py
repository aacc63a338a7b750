"""The study index: a header-only scan of a folder into Patient ▸ Study ▸ Series ▸ Instance.

``scan(folder)`` walks a folder (recursively, in a sorted and therefore deterministic order) and yields one
:class:`ScanEntry` or :class:`ScanError` per file as it goes, so a browser can show the first rows at once,
even for a folder of 10,000 files. It never decodes pixels and never writes to the folder:

* Files are recognised by their first bytes with ``pneumoview.imaging.sniff_bytes``, as the loader does.
* DICOM files (with or without the ``.dcm`` suffix, with or without the 128-byte preamble) are read with
  ``pydicom.filereader.read_partial`` on a handful of tags, stopping at the Pixel Data element. The stop
  callback also tells whether the file has Pixel Data and how long it is: that is how truncated images and
  image objects without pixels are found without reading any pixel bytes.
* DICOMDIR files are read with ``pydicom.fileset.FileSet``; the instances they list are yielded right after
  them, grouped by the directory records, and are not yielded again when the walk reaches them.
* PNG and JPEG files are one-image studies; only their header is read (Pillow opens images lazily).
* Everything else yields a :class:`ScanError` with a sentence a user understands.

Rules a user may want to know:

* Each regular file under the folder is accounted for exactly once (as an entry or an error). A file reached
  twice (a DICOMDIR listed it, or a symbolic link points at it) is reported the first time only.
* Hidden files (``.DS_Store``, ``._name`` …) are scanned like any other file, so they usually show up as
  errors. Hidden and system *folders* (a name starting with ``.``, ``__MACOSX``, ``$RECYCLE.BIN``, ``System
  Volume Information``) are not entered; each one is reported as a single error naming the folder.
* Within a folder, DICOMDIR files come first, then the other files, then the sub-folders, each group sorted
  by name ignoring case.

Grouping keys are opaque strings, unique within one scan: PatientID, StudyInstanceUID and SeriesInstanceUID
when the file has them, otherwise fallbacks that keep unrelated files apart (see ``ScanEntry``). Labels are
what a browser shows; the patient label holds the patient's name, because this is the user's own viewer.
Nothing here is meant for export: use ``ScanEntry.image_id`` there.

The package's modules, each owning one part: :mod:`.walk` (the folder walk and ``scan``), :mod:`.files` (one file
into an entry or an error), :mod:`.headers` (DICOM header reading), :mod:`.classes` (SOP class → kind of object),
:mod:`.labels` (grouping keys and labels), :mod:`.dicomdir` (DICOMDIR files), :mod:`.notes` (reader warnings and
error wording), :mod:`.entries` (:class:`ScanEntry`, :class:`ScanError`) and :mod:`.tree` (:class:`StudyTree`).
"""

from __future__ import annotations

from pneumoview.study_index.entries import DICOMDIR_KIND, ScanEntry, ScanError
from pneumoview.study_index.tree import PatientNode, SeriesNode, StudyNode, StudyTree, build_tree
from pneumoview.study_index.walk import scan

__all__ = [
    "DICOMDIR_KIND",
    "PatientNode",
    "ScanEntry",
    "ScanError",
    "SeriesNode",
    "StudyNode",
    "StudyTree",
    "build_tree",
    "scan",
]
