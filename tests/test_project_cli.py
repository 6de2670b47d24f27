"""`crc-jax` commands: bad values are one line and exit 2 with nothing written; import and
export round-trip through CSV and Label Studio JSON."""

import csv
import json
import socket

import pytest

from crc_jax.project import cli
from crc_jax.project import Project
from image_folder import write_digits

CLASSES = ",".join(str(d) for d in range(10))
FAST = ["--model", "mlp", "--width", "32", "--epochs", "1", "--steps-per-epoch", "3", "--no-flip"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, write_digits(root, 40)


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args, match):
    code, out, err = run(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    assert lines[0].startswith("error: ") and match in lines[0], lines[0]
    return lines[0]


def test_init_reports_bad_files_and_bad_values(capsys, tmp_path, images):
    root, truth = images
    code, out, err = run(capsys, "init", tmp_path / "p", "--images", root, "--classes", CLASSES,
                         "--image-size", 8)
    assert code == 0 and "40 images" in out and "1 exact duplicates" in out and "3 unreadable" in out
    assert "duplicate duplicates/digit_0000.png: same bytes as batch_0/digit_0000.png" in out
    for name in ("broken/empty.png", "broken/truncated.png", "broken/not_an_image.jpg"):
        assert f"skipped {name}" in out
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, match="already a crc-jax project")
    one_line_error(capsys, "init", tmp_path / "q", "--images", tmp_path / "nope", match="not a folder")
    one_line_error(capsys, "init", tmp_path / "q", "--images", root, "--image-size", 0,
                   match="--image-size")
    one_line_error(capsys, "init", tmp_path / "q", "--images", root, "--classes", "a,a",
                   match="repeat")
    assert not (tmp_path / "q").exists()


def labels_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return path


def test_init_with_a_labels_file_checks_it_first(capsys, tmp_path, images):
    root, truth = images
    paths = sorted(truth)
    bad_file = labels_csv(tmp_path / "bad_file.csv", [(paths[0], "3"), ("no/such.png", "4")])
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--labels", bad_file,
                   match="'no/such.png'")
    bad_class = labels_csv(tmp_path / "bad_class.csv", [(paths[0], "cat")])
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--classes", CLASSES,
                   "--labels", bad_class, match="unknown class 'cat'")
    assert not (tmp_path / "p").exists()
    good = labels_csv(tmp_path / "good.csv", [(p, f"d{truth[p]}") for p in paths[:12]])
    code, out, _ = run(capsys, "init", tmp_path / "p", "--images", root, "--labels", good,
                       "--image-size", 8)
    assert code == 0, out
    project = Project.open(tmp_path / "p")
    assert project.classes == sorted({f"d{truth[p]}" for p in paths[:12]})  # from the file
    assert {project.paths[i]: c for i, c in project.labels().items()} == \
        {p: f"d{truth[p]}" for p in paths[:12]}


def test_import_export_round_trip(capsys, tmp_path, images):
    root, truth = images
    paths = sorted(truth)
    assert run(capsys, "init", tmp_path / "p", "--images", root, "--classes", CLASSES,
               "--image-size", 8)[0] == 0
    first = labels_csv(tmp_path / "first.csv", [(p, str(truth[p])) for p in paths[:15]])
    code, out, _ = run(capsys, "import", tmp_path / "p", first)
    assert code == 0 and "15 new answers" in out
    code, out, _ = run(capsys, "import", tmp_path / "p", first)  # again: nothing doubled
    assert code == 0 and "0 new answers" in out
    clash = labels_csv(tmp_path / "clash.csv", [(paths[0], str((truth[paths[0]] + 1) % 10))])
    line = one_line_error(capsys, "import", tmp_path / "p", clash, match="contradict answers already saved")
    assert "tab" not in line  # worded for an import, not for the page
    one_line_error(capsys, "import", tmp_path / "p", tmp_path / "missing.csv", match="no such file")
    (tmp_path / "header.csv").write_text("file,class\na.png,1\n")
    one_line_error(capsys, "import", tmp_path / "p", tmp_path / "header.csv", match="path,label")
    log_lines = (tmp_path / "p" / "labels.jsonl").read_text().splitlines()
    assert len(log_lines) == 15

    assert run(capsys, "export", tmp_path / "p", "--format", "csv", "--out", tmp_path / "out.csv")[0] == 0
    with open(tmp_path / "out.csv", newline="") as f:
        exported = {r["path"]: r["label"] for r in csv.DictReader(f)}
    assert exported == {p: str(truth[p]) for p in paths[:15]}
    one_line_error(capsys, "export", tmp_path / "p", "--out", tmp_path / "out.csv", match="already exists")
    assert run(capsys, "export", tmp_path / "p", "--format", "label-studio",
               "--out", tmp_path / "ls.json")[0] == 0
    tasks = json.loads((tmp_path / "ls.json").read_text())  # every image; the labeled annotated
    annotated = [t for t in tasks if t.get("annotations")]
    assert len(tasks) == 40 and len(annotated) == 15
    assert all(t["annotations"][0]["ground_truth"] is False for t in annotated)
    assert (tmp_path / "ls.label_config.xml").read_text().count("<Choice ") == 10

    # A Label Studio export (uploaded files carry an 8-hex prefix) into a fresh project.
    assert run(capsys, "init", tmp_path / "q", "--images", root, "--classes", CLASSES,
               "--image-size", 8)[0] == 0
    uploaded = [{"id": k, "data": {"image": f"/data/upload/3/{k:08x}-{p.split('/')[-1]}"},
                 "annotations": [{"result": [{"type": "choices", "value": {"choices": [str(truth[p])]}}]}]}
                for k, p in enumerate(paths[15:20])]
    uploaded.append({"id": 99, "data": {"image": "/data/upload/3/x.png"}, "annotations": []})
    (tmp_path / "upload.json").write_text(json.dumps(uploaded))
    assert run(capsys, "import", tmp_path / "q", tmp_path / "upload.json")[0] == 0
    assert run(capsys, "import", tmp_path / "q", tmp_path / "ls.json")[0] == 0
    project = Project.open(tmp_path / "q")
    assert {project.paths[i]: c for i, c in project.labels().items()} == \
        {p: str(truth[p]) for p in paths[:20]}


def test_next_status_predict(capsys, tmp_path, images):
    root, truth = images
    assert run(capsys, "init", tmp_path / "p", "--images", root, "--classes", CLASSES,
               "--image-size", 8)[0] == 0
    one_line_error(capsys, "next", tmp_path / "p", "--budget", 41, match="budget 41 exceeds")
    one_line_error(capsys, "next", tmp_path / "p", "--budget", 5, "--strategy", "kcenter",
                   match="--strategy: unknown strategy 'kcenter'")
    one_line_error(capsys, "predict", tmp_path / "p", match="no trained model yet")
    code, out, _ = run(capsys, "next", tmp_path / "p", "--budget", 10, "--cold-start", "random")
    assert code == 0 and "cold start" in out and "queue.csv" in out
    queued = Project.open(tmp_path / "p").queue()
    (tmp_path / "q.csv").write_text("path,label\n" + "".join(f"{r['path']},{truth[r['path']]}\n"
                                                             for r in queued))
    assert run(capsys, "import", tmp_path / "p", tmp_path / "q.csv")[0] == 0
    code, out, _ = run(capsys, "next", tmp_path / "p", "--budget", 10, *FAST)
    assert code == 0 and "cold start" not in out
    code, out, _ = run(capsys, "status", tmp_path / "p")
    assert code == 0 and "10 labeled" in out and "2 rounds" in out
    # the CRC round's diagnostics: in the rounds log, and one line of `status`
    rounds = Project.open(tmp_path / "p").rounds()
    assert rounds[0]["crc_diagnostics"] is None                 # random cold start
    diag = rounds[1]["crc_diagnostics"]
    assert set(diag["records"]) == {"crc"} and diag["records"]["crc"]["n_groups"] == 6
    assert diag["tie"] is diag["records"]["crc"]["tie"]
    assert "CRC decisions" in out and "round 1 (10 labeled): chosen group ahead of the runner-up by" in out
    code, out, _ = run(capsys, "predict", tmp_path / "p")
    assert code == 0
    with open(tmp_path / "p" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40 and {r["predicted"] for r in rows} <= set(CLASSES.split(","))
    assert sum(bool(r["label"]) for r in rows) == 10


def test_label_on_a_port_in_use_is_one_line(capsys, tmp_path, images):
    root, _ = images
    assert run(capsys, "init", tmp_path / "p", "--images", root, "--classes", CLASSES,
               "--image-size", 8)[0] == 0
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        one_line_error(capsys, "label", tmp_path / "p", "--port", port, match=f"--port {port}")
    finally:
        taken.close()


def test_label_without_classes_is_one_line(capsys, tmp_path, images):
    root, _ = images
    assert run(capsys, "init", tmp_path / "p", "--images", root, "--image-size", 8)[0] == 0
    one_line_error(capsys, "label", tmp_path / "p", "--port", 0, match="no classes yet")


def test_not_a_project_and_other_versions(capsys, tmp_path, images):
    one_line_error(capsys, "status", tmp_path, match="not a crc-jax project")
    root, _ = images
    assert run(capsys, "init", tmp_path / "p", "--images", root, "--image-size", 8)[0] == 0
    meta = json.loads((tmp_path / "p" / "project.json").read_text())
    (tmp_path / "p" / "project.json").write_text(json.dumps(dict(meta, format=99)))
    one_line_error(capsys, "status", tmp_path / "p", match="newer crc-jax")
