"""Decode the images a reader is likely to look at next, before they are asked for (Qt-free).

The viewer shows one image at a time and the reader mostly steps to the next or previous one (PgDown / PgUp).
:class:`ImagePrefetcher` decodes those neighbours in one background thread and keeps the decoded
:class:`~pneumoview.types.XrayImage` objects in a small least-recently-used cache, so that stepping shows an
image without waiting for the decoder. Only images are cached, never model results (the session caches those).

A file that fails to decode is not cached: the viewer's normal path loads it again and reports the error. A file
changed on disk since it was decoded (size or modification time) is decoded again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pneumoview.imaging import load_image
from pneumoview.types import XrayImage

__all__ = ["ImagePrefetcher", "neighbours"]

_Stamp = tuple[int, int]


def _stamp(path: Path) -> _Stamp | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def neighbours(paths: list[Path], current: Path, reach: int = 1) -> list[Path]:
    """The images around ``current`` in browsing order, nearest first and the next before the previous:
    ``[next, previous, next + 1, previous - 1, …]`` up to ``reach`` steps each way."""
    try:
        i = paths.index(current)
    except ValueError:
        return []
    out = []
    for step in range(1, reach + 1):
        out += [paths[j] for j in (i + step, i - step) if 0 <= j < len(paths)]
    return out


class ImagePrefetcher:
    """A least-recently-used cache of decoded images, filled in a background thread.

    Args:
        capacity: images kept (the current one and its neighbours); a 2k x 2k radiograph takes about 24 MB.
        loader: decodes one file (default :func:`pneumoview.imaging.load_image`); may raise for bad files.
    """

    def __init__(self, capacity: int = 5, loader: Callable[[Path], XrayImage] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if loader is None:
            loader = load_image
        self.capacity = capacity
        self._loader = loader
        self._lock = threading.Lock()
        self._images: OrderedDict[Path, tuple[_Stamp | None, XrayImage]] = OrderedDict()
        self._pending: dict[Path, Future[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pneumoview-prefetch")
        self._closed = False

    def get(self, path: str | Path) -> XrayImage | None:
        """The decoded image of ``path`` when it is cached and unchanged on disk, else None (never waits)."""
        path = Path(path)
        with self._lock:
            hit = self._images.get(path)
            if hit is None:
                return None
            self._images.move_to_end(path)
        if hit[0] != _stamp(path):
            with self._lock:
                self._images.pop(path, None)
            return None
        return hit[1]

    def put(self, path: str | Path, image: XrayImage) -> None:
        """Keep an image the viewer decoded itself (the current one), so stepping back to it is instant too."""
        self._store(Path(path), _stamp(Path(path)), image)

    def prefetch(self, paths: Iterable[str | Path]) -> None:
        """Decode ``paths`` in the background, in order, unless cached or already queued."""
        with self._lock:
            if self._closed:
                return
            for p in paths:
                path = Path(p)
                if path in self._images or path in self._pending:
                    continue
                self._pending[path] = self._pool.submit(self._load, path)

    def wait(self, timeout_s: float | None = None) -> None:
        """Wait for the queued decodes (for tests and benchmarks)."""
        with self._lock:
            futures = list(self._pending.values())
        for f in futures:
            f.exception(timeout=timeout_s)

    def clear(self) -> None:
        """Forget every cached image (e.g. when another folder is opened)."""
        with self._lock:
            self._images.clear()

    def close(self) -> None:
        """Stop the background thread (queued decodes are dropped)."""
        with self._lock:
            self._closed = True
            for f in self._pending.values():
                f.cancel()
            self._images.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __contains__(self, path: object) -> bool:
        with self._lock:
            return isinstance(path, (str, Path)) and Path(path) in self._images

    def _load(self, path: Path) -> None:
        try:
            stamp = _stamp(path)
            image = self._loader(path)
        except Exception:  # noqa: BLE001 - the viewer's own load reports the problem when the image is selected
            return
        finally:
            with self._lock:
                self._pending.pop(path, None)
        self._store(path, stamp, image)

    def _store(self, path: Path, stamp: _Stamp | None, image: XrayImage) -> None:
        with self._lock:
            if self._closed:
                return
            self._images[path] = (stamp, image)
            self._images.move_to_end(path)
            while len(self._images) > self.capacity:
                self._images.popitem(last=False)
