"""The viewer shows a large JPEG 2000 image from a reduced-resolution decode first, then the full image in its place
(pneumoview.gui.progressive), on a 2048² lossless derivative of a real CR chest radiograph; offscreen Qt."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumoview.types import Window
from tests.j2k_fixtures import make_2k_j2k

pytest_plugins = ("tests.gui_fixtures",)
pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def j2k_study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("j2k-study")
    make_2k_j2k(folder, copies=2)
    return folder


def _record(w) -> list[tuple]:
    """Events in order: ("preview", factor, shape) / ("image", shape) / ("result", image_shape)."""
    events: list[tuple] = []
    w.progressive.previewShown.connect(
        lambda _p: events.append(("preview", w.canvas.factor, w.canvas.image.shape, w.session.image))
    )
    w.imageShown.connect(lambda _p: events.append(("image", w.canvas.factor, w.canvas.image.shape)))
    w.analysisFinished.connect(lambda _p: events.append(("result", w.session.result.image_shape)))
    return events


def test_reduced_first_then_full_then_one_analysis_of_the_full_image(
    shared_data, qtbot, make_window, j2k_study
):
    w = make_window()
    events = _record(w)
    with qtbot.waitSignals([w.scanFinished, w.analysisFinished], timeout=60_000):
        assert w.open_path(j2k_study)
    assert events == [
        ("preview", 4, (512, 512), None),  # on the canvas only: the session has no image yet
        ("image", 1, (2048, 2048)),
        ("result", (2048, 2048)),  # the models saw the full image, once
    ]
    assert w.canvas.image is w.session.image and w.session.image.shape == (2048, 2048)
    # The neighbour is decoded ahead: stepping to it shows the full image at once, without a preview.
    following = w.browser.visible_image_paths()[1]
    qtbot.waitUntil(lambda: following in w.prefetcher, timeout=60_000)
    events.clear()
    with qtbot.waitSignal(w.analysisFinished, timeout=60_000):
        assert w.browser.select_next(1)
    assert events == [("image", 1, (2048, 2048)), ("result", (2048, 2048))]


def test_the_full_image_keeps_the_zoom_pan_and_window_set_on_the_preview(
    shared_data, qtbot, make_window, j2k_study
):
    w = make_window(wait_engine=False)  # viewing only: no analysis
    seen: dict[str, object] = {}
    user_window = Window(center=12000.0, width=9000.0)

    def on_preview(_path) -> None:
        # The reader zooms into the right upper zone and sets a window while the full image decodes.
        w.canvas.view.setRange(xRange=(1200.0, 1700.0), yRange=(300.0, 800.0), padding=0.0)
        w.canvas.set_window(user_window)
        seen["range"] = w.canvas.view.viewRange()
        seen["pixel"] = w.canvas.image_item.mapRectToView(w.canvas.image_item.boundingRect())
        seen["length"] = w.canvas.measure((1300.0, 400.0), (1600.0, 800.0))  # 500 full-resolution pixels

    w.progressive.previewShown.connect(on_preview)
    with qtbot.waitSignals([w.scanFinished, w.imageShown], timeout=60_000):
        assert w.open_path(j2k_study)
    assert "range" in seen and w.canvas.factor == 1 and w.canvas.image.shape == (2048, 2048)
    # Same zoom and centre (the aspect lock may grow the y extent if the layout gives the view other proportions).
    (x0, x1), (y0, y1) = w.canvas.view.viewRange()
    (sx0, sx1), (sy0, sy1) = seen["range"]
    assert (x0, x1) == pytest.approx((sx0, sx1)) and (y0 + y1) / 2 == pytest.approx((sy0 + sy1) / 2)
    window = w.canvas.window()
    assert window is not None
    assert window.center == pytest.approx(user_window.center) and window.width == pytest.approx(
        user_window.width
    )
    # The preview covered the full image's frame: 512 px × 4 = 2048 view units, each preview pixel centred on
    # full pixel 4i (so its corner is at -1.5).
    preview_rect = seen["pixel"]
    assert (preview_rect.left(), preview_rect.top()) == pytest.approx((-1.5, -1.5))
    assert (preview_rect.width(), preview_rect.height()) == pytest.approx((2048.0, 2048.0))
    full = w.canvas.image_item.mapRectToView(w.canvas.image_item.boundingRect())
    assert (full.left(), full.top(), full.width(), full.height()) == (0.0, 0.0, 2048.0, 2048.0)
    # Lengths measured on the preview are in the full frame's pixels and the file's spacing (0.175 mm).
    assert seen["length"] == "87.5 mm" == w.canvas.measure((1300.0, 400.0), (1600.0, 800.0))


def test_without_a_user_window_the_full_image_gets_its_own(shared_data, qtbot, make_window, j2k_study):
    w = make_window(wait_engine=False)
    previews = []
    w.progressive.previewShown.connect(previews.append)
    with qtbot.waitSignals([w.scanFinished, w.imageShown], timeout=60_000):
        assert w.open_path(j2k_study)
    assert len(previews) == 1
    window, default = w.canvas.window(), w.session.image.window
    assert window is not None
    assert (window.center, window.width) == pytest.approx((default.center, default.width))


def test_the_preview_can_be_switched_off(shared_data, qtbot, make_window, j2k_study):
    w = make_window(wait_engine=False)
    w.progressive.enabled = False
    previews = []
    w.progressive.previewShown.connect(previews.append)
    with qtbot.waitSignals([w.scanFinished, w.imageShown], timeout=60_000):
        assert w.open_path(j2k_study)
    assert previews == [] and w.canvas.image.shape == (2048, 2048)


def test_the_loading_job_waits_for_the_paint_and_stops_when_the_reader_moves_on(shared_data, j2k_study):
    from pneumoview.gui.progressive import load_steps
    from pneumoview.imaging.progressive import ReducedImage

    path = sorted(j2k_study.glob("*.dcm"))[0]
    moved_on = {"yes": False}
    steps = load_steps(path, lambda: moved_on["yes"])
    kind, reduced, painted = next(steps)
    assert kind == "preview" and isinstance(reduced, ReducedImage)
    painted.set()
    kind, full = next(steps)
    assert kind == "image" and full.shape == (2048, 2048)
    with pytest.raises(StopIteration) as end:
        next(steps)
    assert end.value.value is full
    # The reader moves on while the preview is up: no full decode of an image nobody looks at any more.
    steps = load_steps(path, lambda: moved_on["yes"])
    next(steps)
    moved_on["yes"] = True
    with pytest.raises(StopIteration) as end:
        next(steps)
    assert end.value.value is None
