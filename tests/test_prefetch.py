"""Decoding ahead (pneumoview.prefetch) on real radiographs, and PgDown in the viewer showing a prefetched image."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumoview.errors import ImageReadError
from pneumoview.imaging import load_image
from pneumoview.prefetch import ImagePrefetcher, neighbours
from tests.gui_helpers import copy_study, open_and_wait, rsna_images

pytest_plugins = ("tests.gui_fixtures",)


@pytest.fixture()
def prefetcher():
    p = ImagePrefetcher(capacity=2)
    yield p
    p.close()


def test_prefetched_image_is_the_decoded_image(prefetcher, tmp_path):
    paths = rsna_images(3)
    assert prefetcher.get(paths[0]) is None
    prefetcher.prefetch(paths)
    prefetcher.wait(60)
    # Capacity 2: the least recently used (the first) is gone.
    assert prefetcher.get(paths[0]) is None
    image = prefetcher.get(paths[2])
    assert image is not None and image.source == paths[2]
    np.testing.assert_array_equal(image.display, load_image(paths[2]).display)


def test_changed_and_broken_files_are_not_served_from_the_cache(prefetcher, tmp_path):
    good = tmp_path / "a.jpg"
    shutil.copy(rsna_images(1)[0], good)
    broken = tmp_path / "b.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    prefetcher.prefetch([good, broken])
    prefetcher.wait(60)
    assert prefetcher.get(good) is not None
    assert prefetcher.get(broken) is None  # the viewer's own load reports the error
    with pytest.raises(ImageReadError):
        load_image(broken)
    shutil.copy(rsna_images(1, offset=1)[0], good)  # replaced on disk
    st = good.stat()
    os.utime(good, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert prefetcher.get(good) is None


def test_neighbours_next_first():
    paths = [Path(f"{i}.png") for i in range(5)]
    assert neighbours(paths, paths[2]) == [paths[3], paths[1]]
    assert neighbours(paths, paths[0], reach=2) == [paths[1], paths[2]]
    assert neighbours(paths, Path("x.png")) == []


@pytest.mark.gui
def test_pgdown_shows_the_prefetched_image_at_once(qtbot, make_window, tmp_path):
    src = copy_study(tmp_path / "in", rsna_images(3, offset=10))
    w = make_window()
    open_and_wait(qtbot, w, src)
    first = w.session.path
    paths = w.browser.visible_image_paths()
    following = paths[paths.index(first) + 1]
    qtbot.waitUntil(lambda: following in w.prefetcher, timeout=30_000)
    shown = []
    w.imageShown.connect(shown.append)
    assert w.browser.select_next(1)
    # Shown in the same call, before the event loop runs any worker: the image came from the cache.
    assert shown == [following] and w.session.image is not None and w.session.image.source == following
    with qtbot.waitSignal(w.analysisFinished, timeout=30_000):
        pass
    assert w.session.result is not None
