"""Entry point of the frozen (PyInstaller) PneumoView: the same dispatch as ``python -m pneumoview``.

The DICOM reader decodes GDCM-compressed pixel data in a worker process (so that a damaged file cannot abort the
viewer; see ``pneumoview.imaging.isolated``). A frozen build has no ``python -m``, so the worker is this executable
started with ``--pneumoview-decoder-worker``; that case is handled first, before anything loads Qt or torch.
"""

from __future__ import annotations

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()  # for any multiprocessing use
    # Importing pneumoview.imaging loads pydicom and numpy (~1 s on a busy machine), which `--version`, `--help` and
    # the viewer's first paint do not need: only a run that may be the worker pays for it.
    if sys.argv[1:2] and sys.argv[1].startswith("--pneumoview-"):
        from pneumoview.imaging.isolated import WORKER_FLAG, serve

        if sys.argv[1] == WORKER_FLAG:
            sys.exit(serve())
    from pneumoview.__main__ import main

    sys.exit(main())
