"""crc_jax.project: the image scan, the labels log and the project directory's safety rules."""

import json
import threading

import numpy as np
import pytest
from PIL import Image

from crc_jax.project import Project, ProjectError, labels_log, scan as scan_lib
from image_folder import digit_image, write_digits

MODES = [("png", "L"), ("png", "RGBA"), ("png", "P"), ("tif", "I;16"), ("bmp", "RGB"),
         ("webp", "RGB"), ("jpg", "CMYK"), ("jpg", "RGB")]


def test_scan_converts_every_mode_to_the_same_pixels(tmp_path):
    """Each mode and format, written at 8x8 and scanned at 8x8, gives the digit's gray values."""
    from sklearn.datasets import load_digits

    pixels = load_digits().images[5]
    expected = (pixels * (255.0 / 16.0)).astype(np.uint8)
    for ext, mode in MODES:
        img = digit_image(pixels, mode, 8)
        img.save(tmp_path / f"{mode.replace(';', '_')}.{ext}",
                 **({"quality": 100} if ext in ("jpg", "webp") else {}))
    result = scan_lib.scan(tmp_path, 8, progress=False)
    assert not result.skipped and not result.duplicates
    assert len(result.paths) == len(MODES)
    for path, image in zip(result.paths, result.images):
        assert image.shape == (8, 8, 3) and image.dtype == np.uint8
        assert np.array_equal(image[..., 0], image[..., 2]), path  # gray stays gray
        lossy = path.endswith((".jpg", ".webp"))
        err = np.abs(image[..., 0].astype(int) - expected).max()
        assert err <= (40 if lossy else 1), (path, err)


def test_scan_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    result = scan_lib.scan(tmp_path, 4, progress=False)
    assert (result.images[0] == 255).all()


def test_scan_reports_broken_files_and_duplicates_and_keeps_going(tmp_path):
    truth = write_digits(tmp_path, 24)
    result = scan_lib.scan(tmp_path, 16, progress=False)
    assert sorted(result.paths) == sorted(truth)  # every good image, in sorted order
    assert result.paths == sorted(result.paths)
    assert [p for p, _ in result.skipped] == ["broken/empty.png", "broken/not_an_image.jpg",
                                              "broken/truncated.png"]
    reasons = dict(result.skipped)
    assert "0 bytes" in reasons["broken/empty.png"]
    assert "truncated" in reasons["broken/truncated.png"]
    first = next(iter(truth))  # write_digits copies its first image into duplicates/
    assert result.duplicates == [(f"duplicates/{first.split('/')[-1]}", first)]
    assert result.images.shape == (24, 16, 16, 3)


def events(*items):
    return [dict(zip(("op", "id", "label"), item), source="test") for item in items]


def test_labels_log_replays_answers_and_refuses_contradictions(tmp_path):
    log = labels_log.LabelsLog(tmp_path / "labels.jsonl")
    assert len(log.record(events(("label", 1, "cat"), ("label", 2, "dog"), ("skip", 3)))) == 3
    assert log.record(events(("label", 1, "cat"))) == []  # the same answer again: no double
    with pytest.raises(labels_log.LabelConflict, match="image 1"):
        log.record(events(("label", 4, "cat"), ("label", 1, "dog")))
    assert 4 not in log.answers()  # the whole batch was refused
    log.record(events(("undo", 1), ("label", 1, "dog")))
    fresh = labels_log.LabelsLog(tmp_path / "labels.jsonl")  # another process reading
    assert fresh.answers() == {1: "dog", 2: "dog", 3: None}
    assert fresh.labels() == {1: "dog", 2: "dog"}
    assert [e["op"] for e in fresh.events()] == ["label", "label", "skip", "undo", "label"]
    assert [e["seq"] for e in fresh.events()] == [0, 1, 2, 3, 4]


def test_labels_log_torn_last_line_is_dropped_then_cut(tmp_path):
    path = tmp_path / "labels.jsonl"
    log = labels_log.LabelsLog(path)
    log.record(events(("label", 1, "cat")))
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"id": 2, "op": "lab')  # a crash mid-append
    assert labels_log.LabelsLog(path).answers() == {1: "cat"}
    assert path.read_bytes().startswith(whole)  # reading alone repairs nothing
    labels_log.LabelsLog(path).record(events(("label", 2, "dog")))
    lines = path.read_bytes().decode().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["crc32"] for line in lines)
    assert labels_log.LabelsLog(path).answers() == {1: "cat", 2: "dog"}


def test_labels_log_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "labels.jsonl"
    labels_log.LabelsLog(path).record(events(("label", 1, "cat"), ("label", 2, "dog")))
    lines = path.read_text().splitlines()
    path.write_text(lines[0].replace("cat", "cow") + "\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match="corrupt"):
        labels_log.LabelsLog(path).answers()


def test_labels_log_racing_writers_save_one_answer(tmp_path):
    """Eight threads (each its own log object, as two tabs or processes) answer image 7."""
    path = tmp_path / "labels.jsonl"
    outcomes = []

    def answer(k):
        try:
            outcomes.append(len(labels_log.LabelsLog(path).record(
                events(("label", 7, "cat" if k % 2 else "dog")))))
        except labels_log.LabelConflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=answer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(1) == 1  # exactly one answer written
    assert len(path.read_text().splitlines()) == 1
    winner = labels_log.LabelsLog(path).answers()[7]
    assert outcomes.count("conflict") == sum(1 for k in range(8) if ("cat" if k % 2 else "dog") != winner)


@pytest.fixture
def project(tmp_path):
    write_digits(tmp_path / "images", 30)
    proj, _ = Project.create(tmp_path / "proj", tmp_path / "images", image_size=8,
                             classes=[str(d) for d in range(10)], progress=False)
    return proj


def test_project_stores_the_pool_once(project, tmp_path):
    pool = np.asarray(project.pool())
    assert pool.shape == (30, 8, 8, 3) and pool.dtype == np.uint8
    rows = (tmp_path / "proj" / "index.csv").read_text().splitlines()
    assert rows[0] == "id,path,sha256" and len(rows) == 31
    reopened = Project.open(tmp_path / "proj")
    assert reopened.paths == project.paths and reopened.classes == project.classes


def test_project_refuses_bad_labels_before_writing(project):
    with pytest.raises(ProjectError, match="not in the queue"):
        project.add_labels({0: "3"})
    with pytest.raises(ProjectError, match="unknown class 'cat'"):
        project.add_labels({0: "cat"}, queued_only=False)
    with pytest.raises(ProjectError, match="unknown image ids: 999"):
        project.add_labels({999: "3"}, queued_only=False)
    assert project.answers() == {}
    assert not (project.dir / "labels.jsonl").exists()


def test_project_format_versions_are_checked(project):
    meta = json.loads((project.dir / "project.json").read_text())
    for version, word in ((meta["format"] + 1, "newer"), (0, "older")):
        (project.dir / "project.json").write_text(json.dumps(dict(meta, format=version)))
        with pytest.raises(ProjectError, match=word):
            Project.open(project.dir)


def test_init_never_overwrites_what_it_did_not_write(tmp_path):
    write_digits(tmp_path / "images", 5, broken=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "queue.csv").write_text("mine\n")
    with pytest.raises(ProjectError, match="did not write"):
        Project.create(tmp_path / "other", tmp_path / "images", progress=False)
    assert (tmp_path / "other" / "queue.csv").read_text() == "mine\n"
    Project.create(tmp_path / "p", tmp_path / "images", progress=False)
    with pytest.raises(ProjectError, match="already a crc-jax project"):
        Project.create(tmp_path / "p", tmp_path / "images", progress=False)


def test_first_labels_name_the_classes(tmp_path):
    write_digits(tmp_path / "images", 6, broken=False)
    project, _ = Project.create(tmp_path / "p", tmp_path / "images", image_size=8, progress=False)
    assert project.classes == []
    with pytest.raises(ProjectError, match="not in the queue"):
        project.add_labels({0: "cat"})
    assert Project.open(tmp_path / "p").classes == []  # a refused call names nothing
    project.add_labels({0: "dog", 1: "cat"}, queued_only=False)
    assert Project.open(tmp_path / "p").classes == ["cat", "dog"]
    with pytest.raises(ProjectError, match="unknown class 'fox'"):
        project.add_labels({2: "fox"}, queued_only=False)


def test_wilson_interval_matches_hand_computed_values():
    from crc_jax.project.report import wilson_interval

    # Wilson score interval, z = 1.96, worked by hand: p=0.25, n=20 -> centre 0.2904,
    # half-width 0.1784; 0 of 10 -> [0, z²/(n+z²)] = [0, 0.2775].
    low, high = wilson_interval(5, 20)
    assert low == pytest.approx(0.1119, abs=1e-4) and high == pytest.approx(0.4687, abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 3.8416 / 13.8416), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((10 / 13.8416, 1.0), abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_one_round_at_a_time(project):
    from crc_jax.project import store

    with store.round_lock(project.dir):
        with pytest.raises(ProjectError, match="another round is running"):
            project.next_batch(5)
    assert project.rounds() == []
