"""A project knows its kind (images, features, backbone) and `next`'s defaults follow it;
the options given to a command are kept for later rounds and shown by `status`.

tests/fixtures/format_v2_kindless holds a features and a backbone project made before
`init` recorded the kind: they open with the kind inferred from what the store holds."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from crc_jax.project import cli
from crc_jax.project import Project, features, settings
from crc_jax.project.server import create_app

OLD = Path(__file__).resolve().parent / "fixtures" / "format_v2_kindless"
V1 = Path(__file__).resolve().parent / "fixtures" / "format_v1"
SHORT = ["--epochs", "1", "--steps-per-epoch", "2"]


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def old_project(tmp_path, name, fixtures=OLD):
    """A copy of a fixture project, its project.json pointed at the copied images."""
    if not (tmp_path / "images").exists():
        shutil.copytree(fixtures / "images", tmp_path / "images")
    shutil.copytree(fixtures / name, tmp_path / name)
    meta = json.loads((tmp_path / name / "project.json").read_text())
    meta["images"] = str(tmp_path / "images")
    (tmp_path / name / "project.json").write_text(json.dumps(meta))
    return tmp_path / name


def truth(path: str) -> str:
    return "even" if int(path.split("_")[1].split(".")[0]) % 2 == 0 else "odd"


@pytest.mark.parametrize("name", ["features", "backbone"])
def test_an_old_project_opens_with_its_kind_and_trains_on_its_defaults(capsys, tmp_path, name):
    directory = old_project(tmp_path, name)
    assert "kind" not in json.loads((directory / "project.json").read_text())
    project = Project.open(directory)
    assert project.kind == name
    assert project.round_settings() == settings.for_kind(name)
    project.add_labels({i: truth(project.paths[i]) for i in project.pending()})
    code, out, err = run(capsys, "next", directory, "--budget", 2, *SHORT)   # no --ssl, --model
    assert code == 0, err
    entry = Project.open(directory).rounds()[-1]
    assert not entry["cold_start"]
    assert (entry["settings"]["ssl"], entry["settings"]["model"]) == ("mean_teacher", "linear")


def test_a_format_1_project_is_an_images_project(tmp_path):
    directory = old_project(tmp_path, "project", fixtures=V1)
    project = Project.open(directory)
    assert project.kind == "images" and project.round_settings().ssl == "fixmatch"


def test_init_records_the_kind(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(OLD / "images", images)
    made, _ = Project.create(tmp_path / "i", images, image_size=8, classes=["even", "odd"],
                             progress=False)
    paths = sorted(p.name for p in images.iterdir())
    np.savez(tmp_path / "f.npz", paths=np.array(paths), features=np.eye(8, 3, dtype=np.float32) + 1)
    vectors, _ = Project.create(tmp_path / "f", images, classes=["even", "odd"], progress=False,
                                features=features.embeddings_file(tmp_path / "f.npz"))
    for project, kind in ((made, "images"), (vectors, "features")):
        assert json.loads((project.dir / "project.json").read_text())["kind"] == kind
        assert Project.open(project.dir).kind == kind


def test_a_features_project_runs_next_with_the_budget_alone(capsys, tmp_path):
    """`crc-jax next proj --budget N` on a features project: the kind's defaults (Mean
    Teacher, a linear head), no FixMatch error."""
    directory = old_project(tmp_path, "features")
    json_meta = json.loads((directory / "project.json").read_text())
    json_meta["kind"] = "features"
    (directory / "project.json").write_text(json.dumps(json_meta))
    code, out, err = run(capsys, "next", directory, "--budget", 2)   # cold: CRC, default kind
    assert code == 0, err
    assert Project.open(directory).rounds()[-1]["settings"]["ssl"] == "mean_teacher"


def test_options_given_are_kept_for_later_rounds_until_given_again(capsys, tmp_path):
    directory = old_project(tmp_path, "features")
    project = Project.open(directory)
    project.add_labels({i: truth(project.paths[i]) for i in project.pending()})
    code, _, err = run(capsys, "next", directory, "--budget", 2, "--ssl", "pi_model", *SHORT)
    assert code == 0, err
    kept = {"budget": 2, "ssl": "pi_model", "epochs": 1, "steps_per_epoch": 2}
    assert json.loads((directory / "options.json").read_text()) == kept
    code, out, err = run(capsys, "status", directory)
    assert code == 0, err
    assert "features project; next round: model linear, ssl pi_model" in out
    assert "kept options (give one again to change it): --budget 2 --epochs 1 --ssl pi_model " \
           "--steps-per-epoch 2" in out
    st = json.loads(run(capsys, "status", directory, "--json")[1])
    assert st["kind"] == "features" and st["kept_options"] == kept
    assert st["settings"]["ssl"] == "pi_model" and st["settings"]["model"] == "linear"

    project.add_labels({i: truth(project.paths[i]) for i in project.pending()})
    code, _, err = run(capsys, "next", directory)   # nothing retyped
    assert code == 0, err
    entry = Project.open(directory).rounds()[-1]
    assert len(entry["queue"]) == 2
    assert {k: entry["settings"][k] for k in ("ssl", "epochs", "steps_per_epoch", "model")} == \
        {"ssl": "pi_model", "epochs": 1, "steps_per_epoch": 2, "model": "linear"}

    project.add_labels({i: truth(project.paths[i]) for i in project.pending()})
    code, _, err = run(capsys, "next", directory, "--ssl", "supervised", "--no-flip")   # overrides
    assert code == 0, err
    assert Project.open(directory).rounds()[-1]["settings"]["ssl"] == "supervised"
    assert json.loads((directory / "options.json").read_text()) == {**kept, "ssl": "supervised",
                                                                     "flip": False}
    # A round that fails keeps nothing of what it was given.
    before = (directory / "options.json").read_bytes()
    code, _, err = run(capsys, "next", directory, "--budget", 99, "--ssl", "mean_teacher")
    assert code == 2 and "exceeds" in err
    assert (directory / "options.json").read_bytes() == before


def test_a_budget_is_asked_for_once(capsys, tmp_path):
    directory = old_project(tmp_path, "features")
    code, _, err = run(capsys, "next", directory)
    assert code == 2 and err.strip() == ("error: --budget: give the number of images to pick "
                                         "(it is kept for later rounds)")
    assert not (directory / "options.json").exists()


@pytest.mark.parametrize("content, match", [
    ('{"ssl": "nope"}', "ssl: 'nope' is not one of"),
    ('{"epochs": "many"}', "epochs: 'many' is not a int"),
    ('{"colour": 3}', "colour: not a round option"),
    ('{"ssl": "fixmatch"}', "fixmatch is defined by image augmentation"),
    ("[1, 2]", "not an object of options"),
    ("{", "is not valid JSON"),
])
def test_a_damaged_options_file_is_one_line_naming_it(capsys, tmp_path, content, match):
    directory = old_project(tmp_path, "features")
    (directory / "options.json").write_text(content)
    for command in (["next", directory, "--budget", 2], ["status", directory]):
        code, _, err = run(capsys, *command)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert "options.json" in lines[0] and match in lines[0], lines[0]


def test_a_given_option_the_kind_cannot_use_is_refused_and_not_kept(capsys, tmp_path):
    directory = old_project(tmp_path, "backbone")
    code, _, err = run(capsys, "next", directory, "--budget", 2, "--model", "cnn")
    assert code == 2 and err.startswith("error: --model: cnn takes images")
    assert not (directory / "options.json").exists()


def test_the_page_trains_on_the_projects_settings(tmp_path):
    directory = old_project(tmp_path, "features")
    Project.open(directory).keep_options({"epochs": 3})
    runner = create_app(Project.open(directory)).extensions["crc_jax"].runner
    assert runner.settings == settings.for_kind("features", {"epochs": 3})


def test_every_kind_the_store_knows_has_defaults():
    from crc_jax.project import store

    assert set(settings.KIND_DEFAULTS) == set(store.KINDS)
    for kind in store.KINDS:
        settings.check(settings.for_kind(kind), vectors=store.KINDS[kind] == "features")


def test_help_texts_read_the_kind_table(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["next", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "SSL algorithm (fixmatch for images; mean_teacher for features, backbone)" in out
    assert "model (mlp for images; linear for features, backbone)" in out
