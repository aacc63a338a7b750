from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumoview import RESEARCH_USE_NOTICE
from pneumoview.postprocess import BoxSet, Findings, postprocess
from pneumoview.render import (
    BACKGROUND_FOOTER,
    MASK_OUTLINE_COLOUR,
    SOURCE_COLOURS,
    footer_text_lines,
    heat_colormap,
    line_width_for,
    render_annotated,
    save_png,
)
from pneumoview.thresholds import Thresholds

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RSNA = DATA / "rsna"


def _findings(shape=(200, 300), fused=None, detector=None, segmentation=None) -> Findings:
    return Findings(
        fused=fused if fused is not None else BoxSet.empty(),
        detector=detector,
        segmentation=segmentation,
        thresholds=Thresholds(),
        image_shape=shape,
    )


def _grey(shape=(200, 300), value=100) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def test_heat_colormap_is_inferno_with_an_alpha_ramp() -> None:
    lut = heat_colormap()
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    # matplotlib's inferno: 0 → (0.0015, 0.0005, 0.0139), 1 → (0.988, 0.998, 0.645); the fit is within a few
    # units.
    np.testing.assert_allclose(lut[0, :3], [0, 0, 4], atol=6)
    np.testing.assert_allclose(lut[255, :3], [252, 255, 164], atol=6)
    # Perceptual: luminance rises steadily.
    lum = lut[:, :3].astype(float) @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(lum) > -0.5) and lum[-1] - lum[0] > 200
    assert lut[0, 3] == 0 and lut[128, 3] == 255 and lut[64, 3] == 128
    lut[0, 0] = 99  # a copy: the shared table is not changed
    assert heat_colormap()[0, 0] != 99


def test_line_width_scales_with_the_image() -> None:
    assert [line_width_for(w) for w in (200, 1024, 2048, 4000)] == [2, 3, 5, 10]


def test_output_shape_dtype_and_footer() -> None:
    out = render_annotated(_grey(), None, footer_lines=["model: test"])
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[1:] == (300, 3)
    assert out.shape[0] > 200
    # The image part is the grey image, unchanged.
    assert np.all(out[:200] == 100)
    footer = out[200:]
    assert np.any(np.any(footer != np.asarray(BACKGROUND_FOOTER, np.uint8), axis=2))  # text was drawn


def test_the_notice_is_always_in_the_footer() -> None:
    assert footer_text_lines([])[-1] == RESEARCH_USE_NOTICE
    assert footer_text_lines(["a", RESEARCH_USE_NOTICE]).count(RESEARCH_USE_NOTICE) == 1
    # More footer lines make a taller footer; no lines still leave the notice's row.
    plain = render_annotated(_grey(), None, show_sources=())
    more = render_annotated(_grey(), None, show_sources=(), footer_lines=["one", "two"])
    assert plain.shape[0] > 200 and more.shape[0] > plain.shape[0]
    # The notice row is not blank.
    notice_rows = plain[200:]
    assert np.count_nonzero(np.any(notice_rows != np.asarray(BACKGROUND_FOOTER, np.uint8), axis=2)) > 50


def test_long_footer_lines_wrap() -> None:
    one = render_annotated(_grey(), None, show_sources=(), footer_lines=["short"])
    long = render_annotated(_grey(), None, show_sources=(), footer_lines=["word " * 60])
    assert long.shape[0] > one.shape[0] + 10


def test_boxes_are_drawn_in_their_colours_at_known_pixels() -> None:
    fused = BoxSet(np.array([[40, 60, 100, 80]], np.float32), [0.72], ("fused",))
    det = BoxSet.of([[180, 50, 60, 60]], [0.9], "detector")
    out = render_annotated(_grey(), _findings(fused=fused, detector=det))
    lw = line_width_for(300)  # 2
    fc, dc = np.asarray(SOURCE_COLOURS["fused"]), np.asarray(SOURCE_COLOURS["detector"])
    # Fused box: x 40 … 139, y 60 … 139. Left edge column 40..41 at mid-height, right edge 138..139.
    assert np.all(out[100, 40 : 40 + lw] == fc) and np.all(out[100, 139 - lw + 1 : 140] == fc)
    assert np.all(out[139, 60:120] == fc)  # bottom edge
    assert np.all(out[100, 40 + lw + 2 : 130] == 100)  # inside untouched
    assert np.all(out[100, 38] == 100)  # outside untouched
    # Detector box (per-source, half width: 1 px): x 180 … 239, y 50 … 109.
    assert np.all(out[80, 180] == dc) and np.all(out[80, 239] == dc)
    # A label tab in the fused colour sits above the fused box.
    tab = out[60 - 8 : 60, 40:60]
    assert np.any(np.all(tab == fc, axis=2))
    # show_sources filters the sets.
    only_det = render_annotated(_grey(), _findings(fused=fused, detector=det), show_sources=("detector",))
    assert np.all(only_det[100, 40] == 100) and np.all(only_det[80, 180] == dc)


def test_heat_map_changes_pixels_only_where_prob_is_positive() -> None:
    prob = np.zeros((200, 300), np.float32)
    prob[50:100, 60:160] = 0.9
    prob[150:160, 10:20] = 0.3
    base = render_annotated(_grey(), None, show_sources=())
    heat = render_annotated(_grey(), None, prob_map=prob, mask_outline=False, show_sources=())
    changed = np.any(heat[:200] != base[:200], axis=2)
    assert not changed[prob == 0].any()
    assert changed[prob > 0].all()
    # Stronger probability → more colour: P 0.9 moves the pixel further from grey than P 0.3.
    d_hi = np.abs(heat[75, 100].astype(int) - 100).sum()
    d_lo = np.abs(heat[155, 15].astype(int) - 100).sum()
    assert d_hi > d_lo > 0
    # Opacity 0 leaves the image alone.
    none = render_annotated(
        _grey(), None, prob_map=prob, mask_outline=False, heat_opacity=0.0, show_sources=()
    )
    assert np.array_equal(none[:200], base[:200])
    with pytest.raises(ValueError, match="resize"):
        render_annotated(_grey(), None, prob_map=np.zeros((10, 10)))


def test_mask_outline_follows_the_threshold() -> None:
    prob = np.zeros((200, 300), np.float32)
    prob[50:100, 60:160] = 0.9
    out = render_annotated(_grey(), _findings(), prob_map=prob, heat_opacity=0.0, show_sources=())
    oc = np.asarray(MASK_OUTLINE_COLOUR)
    assert np.all(out[50, 100] == oc) and np.all(out[75, 60] == oc) and np.all(out[99, 100] == oc)
    assert not np.all(out[75, 110] == oc)  # the interior is not outlined
    assert not np.any(np.all(out[:200][prob == 0] == oc, axis=1))  # nothing outside the mask
    higher = render_annotated(
        _grey(), None, prob_map=prob, heat_opacity=0.0, seg_threshold=0.95, show_sources=()
    )
    assert not np.any(np.all(higher[:200] == oc, axis=2))


def test_render_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="uint8"):
        render_annotated(np.zeros((10, 10), np.float32), None)
    with pytest.raises(ValueError, match="unknown source"):
        render_annotated(_grey(), None, show_sources=("classifier",))


def test_render_a_real_radiograph_with_real_boxes(tmp_path: Path) -> None:
    with open(RSNA / "index.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["file_1024"] and r["target"] == "1")
    img = np.asarray(Image.open(RSNA / row["file_1024"]).convert("L"))
    assert img.shape == (1024, 1024)
    boxes = []
    with open(RSNA / "stage_2_train_labels.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["patientId"] == row["patientId"]:
                boxes.append([float(r[k]) for k in ("x", "y", "width", "height")])
    prob = np.zeros(img.shape, np.float32)
    for x, y, w, h in np.asarray(boxes, int):
        prob[y : y + h, x : x + w] = 0.8
    f = postprocess(
        prob_map=prob, det_boxes=np.asarray(boxes), det_scores=np.full(len(boxes), 0.9), p_opacity=0.7
    )
    out = render_annotated(
        img, f, prob_map=prob, footer_lines=[f"{row['patientId']}: {len(f.fused)} box(es)"]
    )
    assert out.shape[0] > 1024 and out.shape[1:] == (1024, 3)
    fc = np.asarray(SOURCE_COLOURS["fused"])
    assert np.count_nonzero(np.all(out[:1024] == fc, axis=2)) > 500 * len(boxes)
    path = save_png(
        out, tmp_path / "annotated.png", text={"pneumoview:thresholds": json.dumps(f.thresholds.to_dict())}
    )
    with Image.open(path) as back:
        assert np.array_equal(np.asarray(back), out)
        assert json.loads(back.text["pneumoview:thresholds"]) == Thresholds().to_dict()


def test_save_png_is_atomic_and_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "out.png"
    dest.write_bytes(b"old")
    arr = np.arange(60, dtype=np.uint8).reshape(4, 5, 3)
    save_png(arr, dest)
    with Image.open(dest) as back:
        assert np.array_equal(np.asarray(back), arr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temp file left
    with pytest.raises(ValueError, match="uint8"):
        save_png(arr.astype(np.float32), tmp_path / "bad.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    # Missing output folders are created.
    nested = save_png(arr, tmp_path / "annotated" / "x.png")
    assert nested.is_file() and sorted(p.name for p in nested.parent.iterdir()) == ["x.png"]
