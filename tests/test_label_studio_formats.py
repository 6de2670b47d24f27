"""`crc-jax import` of real Label Studio exports, recorded from Label Studio 1.23.2 by
tests/test_label_studio_server.py (CRC_JAX_RECORD_LABEL_STUDIO=1) into
tests/fixtures/label_studio/:

  crc_config/   a project made with crc-jax's labeling config (names image/choice): JSON,
                JSON-MIN, CSV and TSV exports
  user_config/  a project whose config names the answer 'label' (JSON-MIN, CSV)

Both hold two rows that are not images of the project (unmapped.txt): a task from another
folder with the same relative path as a project image, and an image uploaded to Label
Studio. The images are recreated here exactly as the recording made them (same paths)."""

import csv
import json
from pathlib import Path

import pytest

from crc_jax.project import cli
from crc_jax.project import Project
from image_folder import write_digits

FIXTURES = Path(__file__).parent / "fixtures" / "label_studio"
FORMATS = ["export.json", "export_min.json", "export.csv", "export.tsv"]
LOOKALIKE = "batch_0/digit_0000.png"  # the project image the other folder's file mimics


@pytest.fixture(autouse=True)
def no_document_root_in_env(monkeypatch):
    for name in ("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "LOCAL_FILES_DOCUMENT_ROOT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def document_root(tmp_path_factory):
    """The recording's layout: DOCUMENT_ROOT/images (the project's), DOCUMENT_ROOT/other."""
    root = tmp_path_factory.mktemp("document_root")
    write_digits(root / "images", 24, seed=0, broken=True)
    return root


@pytest.fixture()
def project(tmp_path, document_root):
    assert cli.main(["init", str(tmp_path / "p"), "--images", str(document_root / "images"),
                     "--image-size", "8"]) == 0
    return Project.open(tmp_path / "p")


def expected(kind: str) -> dict:
    with open(FIXTURES / kind / "expected_labels.csv", newline="") as f:
        return {r["path"]: r["label"] for r in csv.DictReader(f)}


def unmapped(kind: str) -> dict:
    lines = (FIXTURES / kind / "unmapped.txt").read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines)


def labels_by_path(project) -> dict:
    return {project.paths[i]: c for i, c in Project.open(project.dir).labels().items()}


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("with_config", [True, False])
def test_every_export_format_imports_the_recorded_labels(capsys, project, document_root, name,
                                                         with_config):
    config = ["--label-config", FIXTURES / "crc_config" / "labeling_config.xml"] if with_config else []
    code, out, err = run(capsys, "import", project.dir, FIXTURES / "crc_config" / name,
                         "--document-root", document_root, "--skip-unmapped", *config)
    assert code == 0, err
    assert labels_by_path(project) == expected("crc_config")
    for url in unmapped("crc_config").values():
        assert f"not imported: {url}" in out
    assert f"{len(expected('crc_config'))} new answers imported" in out and "2 unmapped" in out


def test_unmappable_rows_are_listed_and_the_rest_imports_on_request(capsys, project,
                                                                    document_root):
    """An image uploaded to Label Studio that the project lacks, and another folder's file:
    listed; the file is refused as a whole unless --skip-unmapped."""
    export = FIXTURES / "crc_config" / "export.json"
    code, out, err = run(capsys, "import", project.dir, export, "--document-root", document_root)
    assert code == 2 and len(err.strip().splitlines()) == 1
    for url in unmapped("crc_config").values():
        assert repr(url) in err
    assert "--skip-unmapped" in err and not (project.dir / "labels.jsonl").exists()
    code, out, err = run(capsys, "import", project.dir, export, "--document-root", document_root,
                         "--skip-unmapped")
    assert code == 0 and labels_by_path(project) == expected("crc_config")
    upload = unmapped("crc_config")["upload"]
    assert f"not imported: {upload} (a file uploaded to Label Studio; 0 images" in out


def test_a_task_from_another_folder_never_labels_the_same_named_image(capsys, tmp_path, project,
                                                                      document_root):
    """The task's ?d= path names other/batch_0/digit_0000.png; the project's
    batch_0/digit_0000.png is a different image and must not take its label."""
    tasks = json.loads((FIXTURES / "crc_config" / "export.json").read_text())
    wrong_url = unmapped("crc_config")["wrong"]
    (wrong,) = [t for t in tasks if t["data"]["image"] == wrong_url]
    wrong_label = wrong["annotations"][0]["result"][0]["value"]["choices"][0]
    assert wrong_label != expected("crc_config").get(LOOKALIKE)
    (tmp_path / "wrong.json").write_text(json.dumps([wrong]))
    for root in ([], ["--document-root", document_root]):  # Label Studio's default root, and ours
        code, out, err = run(capsys, "import", project.dir, tmp_path / "wrong.json", *root)
        assert code == 2 and "outside the images folder" in err, (code, out, err)
        assert labels_by_path(project) == {}


def test_json_min_keyed_by_the_control_name(capsys, project, document_root):
    """Label Studio keys JSON-MIN (and CSV) answers by the Choices control's name ('label'
    here). With the project's labeling config every label imports; without it, the answer
    column is the only one that is neither Label Studio's metadata, the image column nor
    a crc_* field, so it imports too."""
    config = FIXTURES / "user_config" / "labeling_config.xml"
    for name in ("export_min.json", "export.csv"):
        for with_config in ([], ["--label-config", config]):
            (project.dir / "labels.jsonl").unlink(missing_ok=True)
            code, out, err = run(capsys, "import", project.dir, FIXTURES / "user_config" / name,
                                 "--document-root", document_root, "--skip-unmapped",
                                 *with_config)
            assert code == 0, (name, with_config, err)
            assert labels_by_path(project) == expected("user_config"), (name, with_config)


def test_an_ambiguous_answer_column_asks_for_the_config(capsys, tmp_path, project,
                                                        document_root):
    """Two columns that could hold the answer (the Choices control's and another data
    field): refused, naming both, asking for the labeling config; nothing imported."""
    rows = list(csv.DictReader(open(FIXTURES / "user_config" / "export.csv", newline="")))
    for row in rows:
        row["caption"] = "a digit"
    with open(tmp_path / "two.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    code, out, err = run(capsys, "import", project.dir, tmp_path / "two.csv",
                         "--document-root", document_root, "--skip-unmapped")
    assert code == 2 and "'caption', 'label'" in err and "--label-config" in err, err
    assert not (project.dir / "labels.jsonl").exists()
    code, out, err = run(capsys, "import", project.dir, tmp_path / "two.csv", "--document-root",
                         document_root, "--skip-unmapped", "--label-config",
                         FIXTURES / "user_config" / "labeling_config.xml")
    assert code == 0, err
    assert labels_by_path(project) == expected("user_config")


# -- shapes the recordings do not cover ---------------------------------------------------

def task(url: str, *answers, key="image", control="choice"):
    return {"data": {key: url},
            "annotations": [{"result": [{"from_name": control, "to_name": "image",
                                         "type": "choices", "value": {"choices": list(a)}}]}
                            for a in answers]}


def test_a_data_key_and_control_named_by_the_config(capsys, tmp_path, project, document_root):
    (tmp_path / "config.xml").write_text(
        '<View><Image name="pic" value="$photo"/><Choices name="kind" toName="pic">'
        '<Choice value="even"/><Choice value="odd"/></Choices></View>')
    url = f"/data/local-files/?d=images/{LOOKALIKE}"
    (tmp_path / "tasks.json").write_text(json.dumps([task(url, ["odd"], key="photo", control="kind")]))
    code, _, err = run(capsys, "import", project.dir, tmp_path / "tasks.json",
                       "--document-root", document_root)
    assert code == 2 and "'image'" in err and "--label-config" in err
    code, _, err = run(capsys, "import", project.dir, tmp_path / "tasks.json", "--document-root",
                       document_root, "--label-config", tmp_path / "config.xml")
    assert code == 0, err
    assert labels_by_path(project) == {LOOKALIKE: "odd"}


@pytest.mark.parametrize("answers,message", [
    ((["even"], ["odd"]), "disagree"),        # two annotations of one task
    ((["even", "odd"],), "2 choices"),        # several choices in one answer
])
def test_ambiguous_answers_are_refused(capsys, tmp_path, project, document_root, answers, message):
    url = f"/data/local-files/?d=images/{LOOKALIKE}"
    (tmp_path / "tasks.json").write_text(json.dumps([task(url, *answers)]))
    code, _, err = run(capsys, "import", project.dir, tmp_path / "tasks.json",
                       "--document-root", document_root)
    assert code == 2 and message in err and not (project.dir / "labels.jsonl").exists()


def test_an_export_without_any_answer_is_an_error(capsys, tmp_path, project, document_root):
    url = f"/data/local-files/?d=images/{LOOKALIKE}"
    (tmp_path / "tasks.json").write_text(json.dumps([{"data": {"image": url}}]))
    code, _, err = run(capsys, "import", project.dir, tmp_path / "tasks.json")
    assert code == 2 and "no labeled rows" in err


def test_upload_names_match_only_when_unique_and_are_reported(capsys, tmp_path, project):
    name = Path(LOOKALIKE).name
    assert sum(Path(p).name == name for p in project.paths) == 1
    project.set_classes(["even", "odd"])   # one class alone cannot name a project's classes
    (tmp_path / "up.json").write_text(json.dumps([task(f"/data/upload/4/0a1b2c3d-{name}", ["even"])]))
    code, out, err = run(capsys, "import", project.dir, tmp_path / "up.json")
    assert code == 0, err
    assert f"matched by its uploaded file name (unique in the project): " \
           f"/data/upload/4/0a1b2c3d-{name} -> {LOOKALIKE}" in out
    assert labels_by_path(project) == {LOOKALIKE: "even"}


def test_export_writes_every_image_and_its_config(capsys, tmp_path, project, document_root):
    project.set_classes(["even", "odd"])
    project.add_labels({0: "odd"}, queued_only=False)
    code, out, err = run(capsys, "export", project.dir, "--format", "label-studio", "--out",
                         tmp_path / "t.json", "--document-root", document_root)
    assert code == 0, err
    tasks = json.loads((tmp_path / "t.json").read_text())
    assert [t["data"]["image"] for t in tasks] == \
        [f"/data/local-files/?d=images/{p}" for p in project.paths]
    assert tasks[0]["annotations"][0]["ground_truth"] is False
    assert "labeling config written to" in out and (tmp_path / "t.label_config.xml").exists()
    other, _ = Project.create(tmp_path / "q", document_root / "images", image_size=8,
                              progress=False)
    # one label alone cannot name a project's classes: the config written beside it does
    assert run(capsys, "import", other.dir, tmp_path / "t.json", "--document-root",
               document_root)[0] == 2
    assert run(capsys, "import", other.dir, tmp_path / "t.json", "--document-root",
               document_root, "--label-config", tmp_path / "t.label_config.xml")[0] == 0
    assert labels_by_path(other) == {project.paths[0]: "odd"}
    assert Project.open(other.dir).classes == ["even", "odd"]
    code, out, err = run(capsys, "export", project.dir, "--format", "label-studio", "--out",
                         tmp_path / "t.json")
    assert code == 2 and "already exists" in err
    code, out, err = run(capsys, "export", project.dir, "--format", "label-studio", "--out",
                         tmp_path / "u.json", "--document-root", tmp_path / "elsewhere")
    assert code == 2 and "not inside it" in err and not (tmp_path / "u.json").exists()
