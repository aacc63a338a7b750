"""What a first-time user of the command line meets (issue 13): unique ids, output permissions, a clear word on
read-only output folders, reproducible thresholds, honest summaries, evaluate's frame, documents, one describer."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pneumoview.cli import main
from tests.model_fixtures import equivariant_models_dir

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RSNA = DATA / "rsna"
CHEST = DATA / "dicom" / "chest"
SAMPLE = ROOT / "pneumoview" / "data" / "sample_study"
LABELS = RSNA / "stage_2_train_labels.csv"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return equivariant_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(autouse=True)
def private_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings the viewer would have saved, with thresholds far from the defaults: the CLI must ignore them."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "settings.json").write_text(json.dumps({"thresholds": {"shrink": 0.5, "gate": 0.9}}))
    monkeypatch.setenv("PNEUMOVIEW_CONFIG_DIR", str(folder))
    monkeypatch.delenv("PNEUMOVIEW_MODELS", raising=False)
    return folder


def _predict(models: Path, *args: str) -> int:
    return main(["predict", *args, "--models-dir", str(models), "--device", "cpu", "--quiet"])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------------
# Two files, one SOP Instance UID


def test_files_sharing_a_sop_instance_uid_get_their_own_ids_rows_and_pngs(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from pneumoview.batch import collect_inputs, shard
    from pneumoview.identity import image_id_for
    from pneumoview.imaging import load_image

    fake, siim = CHEST / "Fake_MONOHR1.dcm", next(CHEST.glob("siim-acr_*.dcm"))
    uid = load_image(fake).identifiers.get("SOPInstanceUID") or "unknown"
    assert (
        load_image(fake).image_id == load_image(siim).image_id == image_id_for(fake, uid)
    )  # the clash is real

    out = tmp_path / "out"
    assert _predict(models, str(CHEST), "--out", str(out)) == 0
    images = [p for p in CHEST.iterdir() if p.suffix == ".dcm"]
    sub = _rows(out / "submission.csv")
    assert len(sub) == len(images) == 7
    ids = [r["patientId"] for r in sub]
    assert len(set(ids)) == 7  # every file its own row
    shared = load_image(fake).image_id
    assert {shared, f"{shared}-2"} <= set(ids)
    assert len(list((out / "annotated").glob("*.png"))) == 7  # no PNG overwrote another
    assert {r["image_id"] for r in _rows(out / "findings.csv")} == set(ids)
    run = json.loads((out / "run.json").read_text())
    [clash] = run["id_clashes"]
    assert clash["shared_id"] == shared and clash["image_ids"] == [shared, f"{shared}-2"]
    assert sorted(Path(f).name for f in clash["files"]) == sorted([fake.name, siim.name])

    # The same ids on a resumed run and in every shard.
    capsys.readouterr()
    assert _predict(models, str(CHEST), "--out", str(out)) == 0
    assert [r["patientId"] for r in _rows(out / "submission.csv")] == ids
    first, again = collect_inputs([CHEST]), collect_inputs([CHEST])
    assert first == again
    by_path = {i.path: i.image_id for i in first}
    for k in range(3):
        assert all(by_path[i.path] == i.image_id for i in shard(first, k, 3))

    # evaluate scores every row, and refuses a file whose ids repeat instead of silently dropping rows.
    dup = tmp_path / "dup.csv"
    dup.write_text("patientId,PredictionString\nx,\nx,\n")
    assert main(["evaluate", "--labels", str(LABELS), "--image-size", "1024", str(dup)]) == 2
    assert "appear more than once" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------
# Permissions, thresholds, summaries


def test_outputs_follow_one_permission_rule_thresholds_and_summary(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((RSNA / "images-512").glob("*.jpg"))[:3]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    old = os.umask(0o027)
    try:
        assert _predict(models, str(src), "--out", str(out)) == 0
    finally:
        os.umask(old)
    text = capsys.readouterr().out
    # One rule for every output: what a plain new file gets under the umask (0o666 & ~0o027 = 0o640).
    files = [p for p in out.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".csv", ".json", ".png"} <= kinds
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o640}, modes

    # The saved viewer thresholds (shrink 0.5, gate 0.9) are not used: the documented defaults are, and said so.
    from pneumoview.thresholds import Thresholds

    run = json.loads((out / "run.json").read_text())
    assert run["thresholds"] == Thresholds().to_dict()
    assert run["thresholds_source"] == "built-in defaults"
    assert "thresholds (built-in defaults): seg_threshold 0.5" in text
    assert "3 of 3 images analysed, 0 failed" in text and "annotated/" in text

    # A second run says the images were already done, not "analysed at 3,000 img/s".
    assert _predict(models, str(src), "--out", str(out)) == 0
    again = capsys.readouterr().out
    assert "3 already done, skipped, 0 failed" in again and "analysed" not in again.split("thresholds")[-1]

    # An explicitly named profile uses the saved thresholds, and run.json says where they came from.
    out2 = tmp_path / "viewer"
    assert _predict(models, str(src), "--out", str(out2), "--no-png", "--thresholds-profile", "viewer") == 0
    run = json.loads((out2 / "run.json").read_text())
    assert run["thresholds"]["shrink"] == 0.5 and run["thresholds"]["gate"] == 0.9
    assert run["thresholds_source"].startswith("profile 'viewer'")
    summary = capsys.readouterr().out.splitlines()[-1]
    assert "annotated/" not in summary and "(submission.csv, findings.csv, run.json)" in summary
    out3 = tmp_path / "changed"
    assert _predict(models, str(src), "--out", str(out3), "--no-png", "--shrink", "0.8") == 0
    assert json.loads((out3 / "run.json").read_text())["thresholds_source"] == (
        "built-in defaults, changed by --shrink 0.8"
    )


def test_the_deidentification_key_stays_private(tmp_path: Path):
    from pneumoview.atomic import atomic_write_bytes, output_file_mode

    old = os.umask(0o022)
    try:
        plain = atomic_write_bytes(tmp_path / "a.csv", b"x\n")
        secret = atomic_write_bytes(tmp_path / "key", b"k" * 32, private=True)
        reference = tmp_path / "plain.txt"
        reference.write_bytes(b"x")  # what open() gives under the same umask
    finally:
        os.umask(old)
    assert stat.S_IMODE(plain.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode) == 0o644
    assert stat.S_IMODE(secret.stat().st_mode) == output_file_mode(private=True) == 0o600


# ----------------------------------------------------------------------------------------------------
# A read-only output folder


def _read_only_predict(folder: Path, models: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """Run predict with ``--out out`` where ``folder`` (holding or being ``out``) cannot be written: a read-only
    mount in a user namespace when running as root (root ignores permission bits), else a folder without write
    permission. The classifier id does not exist, so a run that loaded the models first would fail on it."""
    code = (
        "import sys, tests.model_fixtures; from pneumoview.__main__ import main; "
        f"sys.exit(main(['predict', {str(SAMPLE)!r}, '--out', {str(out)!r}, '--classifier', 'no-such-model', "
        f"'--models-dir', {str(models)!r}, '--device', 'cpu', '--quiet']))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            return subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
            )
        finally:
            folder.chmod(0o755)
    unshare = shutil.which("unshare")
    assert unshare, "running as root: the read-only test needs unshare (util-linux) for a read-only mount"
    script = 'mount -t tmpfs -o ro tmpfs "$1" && shift && exec "$@"'
    return subprocess.run(
        [unshare, "-rm", "sh", "-c", script, "sh", str(folder), sys.executable, "-c", code],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("inside", [False, True], ids=["existing-folder", "new-folder-inside"])
def test_predict_into_a_read_only_folder_says_so_before_loading_models(models: Path, tmp_path: Path, inside):
    ro = tmp_path / "ro"
    ro.mkdir()
    out = ro / "results" if inside else ro
    r = _read_only_predict(ro, models, out)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr  # one sentence, no traceback
    assert lines[0].startswith(f"pneumoview predict: Cannot write to {out}: ") and "Errno" not in lines[0]
    assert "Choose an output folder you can write to." in lines[0] and "no-such-model" not in r.stderr


def test_output_folder_problems_are_sentences(tmp_path: Path):
    from pneumoview.output_folder import output_folder_problem, write_error_text

    assert output_folder_problem(tmp_path / "new" / "out") is None
    assert not (tmp_path / "new").exists()  # the check writes nothing: a refused run leaves no trace
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is a file, not a folder" in output_folder_problem(a_file)
    assert output_folder_problem(a_file / "out").startswith(
        f"Cannot write to {a_file / 'out'}: {a_file} is a file, not a folder."
    )
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / ".pneumoview-journal").write_text("not a folder")
    assert "is a file, not a folder" in output_folder_problem(blocked)
    err = OSError(30, "Read-only file system", "/x/.pneumoview-journal")
    assert write_error_text(err) == (
        "Cannot write to /x/.pneumoview-journal: read-only file system. Choose an output folder you can write to."
    )


# ----------------------------------------------------------------------------------------------------
# evaluate must know the frame of the boxes


def test_evaluate_finds_findings_csv_beside_the_submission_or_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from pneumoview.export import write_findings_csv, write_submission_csv
    from pneumoview.postprocess import boxes_to_prediction_string
    from pneumoview.rsna_labels import read_labels, scale_boxes

    labels = read_labels(LABELS)
    ids = [p.stem for p in sorted((RSNA / "images-512").glob("*.jpg"))[:40]]
    assert any(len(labels[i]) for i in ids)
    run = tmp_path / "run"
    rows = []
    for pid in ids:  # perfect predictions, in the 512-px images' own frame, as predict writes them
        boxes = scale_boxes(labels[pid], (512, 512))
        rows.append((pid, boxes_to_prediction_string(boxes, [1.0] * len(boxes))))
    write_submission_csv(rows, run / "submission.csv")
    write_findings_csv([{"image_id": pid, "rows": "512", "cols": "512"} for pid in ids], run / "findings.csv")

    assert main(["evaluate", "--labels", str(LABELS), str(run / "submission.csv")]) == 0
    out = capsys.readouterr().out
    assert f"image sizes from {run / 'findings.csv'}" in out and "RSNA mAP@[.40:.75]: 1.0000" in out

    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(run / "submission.csv", alone / "submission.csv")
    assert main(["evaluate", "--labels", str(LABELS), str(alone / "submission.csv")]) == 2
    err = capsys.readouterr().err
    assert "frame of their boxes is unknown" in err and "--findings" in err and "--image-size" in err
    assert (
        main(["evaluate", "--labels", str(LABELS), "--image-size", "512", str(alone / "submission.csv")]) == 0
    )
    assert "RSNA mAP@[.40:.75]: 1.0000" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------------
# Documents, describers and headings


def test_sample_study_documents_are_other_files_for_scan_and_predict(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from pneumoview.study_index import build_tree, scan

    tree = build_tree(scan(SAMPLE))
    assert {d.path.name for d in tree.documents} == {"ATTRIBUTION.md", "labels.csv"}
    assert tree.errors == [] and tree.counts()["images"] == 6
    assert main(["scan", str(SAMPLE)]) == 0
    text = capsys.readouterr().out
    assert "Other files (2, not images):" in text and "Errors (" not in text
    assert "0 error(s)" in text.splitlines()[0]


def test_scan_of_an_empty_folder_prints_no_empty_errors_heading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["scan", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Errors" not in text and "0 image(s)" in text


def test_a_text_file_named_dcm_gets_one_message_fit_for_cli_and_viewer(tmp_path: Path):
    from pneumoview.errors import ImageReadError
    from pneumoview.imaging import load_image
    from pneumoview.study_index import ScanError, scan

    folder = tmp_path / "in"
    folder.mkdir()
    letter = folder / "letter.dcm"
    letter.write_text("Dear colleague, the images follow by post.\n", encoding="utf-8")
    [scanned] = list(scan(folder))
    with pytest.raises(ImageReadError) as info:
        load_image(letter)
    assert isinstance(scanned, ScanError) and scanned.stage == info.value.stage == "header"
    assert scanned.message == info.value.message == "not a DICOM, PNG or JPEG file (it looks like text)."
    gz = tmp_path / "study.dcm.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    with pytest.raises(ImageReadError) as info:
        load_image(gz)
    assert info.value.message == next(iter(scan(gz))).message
    assert "choose" not in info.value.message.lower()


def test_models_table_keeps_the_ensemble_description_out_of_the_sha256_column(
    models: Path, capsys: pytest.CaptureFixture[str]
):
    assert main(["models", "--models-dir", str(models)]) == 0
    lines = capsys.readouterr().out.splitlines()
    model = next(line for line in lines if line.startswith("detector "))
    ensemble = next(line for line in lines if line.startswith("seg-ensemble "))
    file_at = model.index(str(models))  # the file column of a model row (same id and version widths)
    sha_at = file_at - len("  ") - 9 - 1 - 12  # "sha256 size  file": 12, space, 9, two spaces
    assert len(model[sha_at : sha_at + 12].strip()) == 12  # a hash prefix there on a model row
    assert ensemble[sha_at : sha_at + 12].strip() == "-"  # no hash of its own, and no description
    assert ensemble.index("ensemble of") == file_at


# ----------------------------------------------------------------------------------------------------
# A normal test run shows no warnings; the README says how to avoid 6 GB of CUDA wheels


def test_deliberately_broken_files_leave_no_warnings_in_a_normal_run(tmp_path: Path):
    # These tests read broken files on purpose; pydicom warns about each bad value (101 warnings in a full run before
    # pyproject's filter). The readers turn them into notes and errors, which the tests check.
    tests = [
        "tests/test_imaging.py::test_every_dicom_tree_file_loads_or_fails_cleanly[robustness/pydicom-data/bad_sequence.dcm]",
        "tests/test_imaging.py::test_every_dicom_tree_file_loads_or_fails_cleanly[robustness/fo-dicom/GH1339.dcm]",
        "tests/test_imaging.py::test_invalid_integer_string",
    ]
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode == 0 and "3 passed" in last, r.stdout[-2000:]
    assert "warning" not in last, last


def test_readme_shows_the_cpu_only_torch_install():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quick_start = readme[readme.index("## Quick start") : readme.index("## Using the viewer")]
    assert "6 GB" in quick_start and "CUDA" in quick_start
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in quick_start
    # in the same block as, and before, PneumoView's own install, so that pip keeps the CPU build
    at = quick_start.index("whl/cpu")
    block = quick_start[quick_start.rindex("```bash", 0, at) : quick_start.index("```", at)]
    assert block.index("whl/cpu") < block.index("pip install -e .")
