"""`crc-jax init --features FILE`: one vector per image from a file, refused with one line
when it does not fit the folder; rounds train a head over the vectors, and every
registered strategy (cold-start ones included) picks from them."""

import json
import os

import numpy as np
import pytest

from crc_jax import acquisition, cli
from crc_jax.project import Project, ProjectError, RoundSettings, features, rounds, store
from crc_jax.project.scan import list_images
from image_folder import write_digits

CLASSES = ",".join(str(d) for d in range(10))
FAST = ["--ssl", "mean_teacher", "--model", "linear"]   # default length: 200 steps
SETTINGS = RoundSettings(ssl="mean_teacher", model="linear", epochs=2, steps_per_epoch=5)


def digit_vectors(paths, truth, *, d=24, seed=0):
    """Vectors that carry the digit (a one-hot direction) plus noise: a 'good backbone'."""
    rng = np.random.default_rng(seed)
    out = rng.normal(size=(len(paths), d)).astype(np.float32)
    for row, p in enumerate(paths):
        out[row, truth[p]] += 8.0
    return out * 7.5   # a backbone's own scale; the store divides it out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    truth = write_digits(root, 60, broken=False)
    paths = list_images(root)          # the duplicate copy is an image of the folder too
    truth = {p: truth.get(p, truth[next(iter(truth))]) for p in paths}
    return root, truth, paths, digit_vectors(paths, truth)


def save_npz(path, paths, vectors):
    np.savez(path, paths=np.array(paths, dtype=str), features=vectors)
    return path


def save_csv(path, paths, vectors, *, broken_row=None):
    lines = ["path," + ",".join(f"f{k}" for k in range(vectors.shape[1]))]
    for row, (p, v) in enumerate(zip(paths, vectors)):
        values = [repr(float(x)) for x in v]
        if row == broken_row:
            values = values[:-1]
        lines.append(",".join([p, *values]))
    path.write_text("\n".join(lines) + "\n")
    return path


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *args, match):
    code, _, err = run(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    assert lines[0].startswith("error: ") and match in lines[0], lines[0]
    return lines[0]


def test_features_file_init_next_label_next(capsys, tmp_path, folder):
    root, truth, paths, vectors = folder
    npz = save_npz(tmp_path / "emb.npz", paths, vectors)
    code, out, _ = run(capsys, "init", tmp_path / "p", "--images", root, "--features", npz,
                       "--classes", CLASSES)
    assert code == 0, out
    assert "60 images as 24-d feature vectors (float32, from emb.npz)" in out
    project = Project.open(tmp_path / "p")
    assert project.input_kind == "features" and project.paths == paths
    pool = project.pool()
    assert isinstance(pool, np.memmap) and pool.shape == (60, 24) and pool.dtype == np.float32
    scale = project.meta["features"]["scale"]
    np.testing.assert_allclose(np.asarray(pool) * scale, vectors, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.mean(np.square(pool, dtype=np.float64))), 1.0, rtol=1e-6)
    assert not (tmp_path / "p" / "features.partial").exists()

    assert run(capsys, "next", tmp_path / "p", "--budget", 10, *FAST)[0] == 0  # cold: CRC
    assert project.rounds()[-1]["cold_start"]
    project.add_labels({i: str(truth[project.paths[i]]) for i in project.pending()})
    code, out, _ = run(capsys, "next", tmp_path / "p", "--budget", 10, *FAST)
    assert code == 0, out
    entry = project.rounds()[-1]
    assert not entry["cold_start"] and entry["model"] and entry["settings"]["model"] == "linear"
    queue = project.queue()
    assert len(queue) == 10 and all(r["predicted"] in project.classes for r in queue)

    assert run(capsys, "predict", tmp_path / "p", "--out", tmp_path / "pred.csv")[0] == 0
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert len(lines) == 61
    right = sum(line.split(",")[2] == str(truth[line.split(",")[1]]) for line in lines[1:])
    assert right / 60 > 0.5   # a linear head on 10 labels of separable vectors
    assert run(capsys, "status", tmp_path / "p")[0] == 0
    assert run(capsys, "export", tmp_path / "p", "--out", tmp_path / "labels.csv")[0] == 0
    assert len((tmp_path / "labels.csv").read_text().splitlines()) == 11


def test_csv_and_float16_give_the_same_pool(tmp_path, folder):
    root, _, paths, vectors = folder
    order = np.random.default_rng(1).permutation(len(paths))  # any row order
    csv_file = save_csv(tmp_path / "emb.csv", [paths[i] for i in order], vectors[order])
    a, _ = Project.create(tmp_path / "a", root, features=features.embeddings_file(csv_file),
                          progress=False)
    b, _ = Project.create(tmp_path / "b", root, progress=False, feature_dtype="float16",
                          features=features.embeddings_file(save_npz(tmp_path / "e.npz", paths, vectors)))
    assert b.pool().dtype == np.float16 and b.meta["features"]["dtype"] == "float16"
    np.testing.assert_allclose(np.asarray(a.pool()) * a.meta["features"]["scale"], vectors,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(b.pool(), np.float32), np.asarray(a.pool()),
                               rtol=2e-3, atol=2e-3)


def test_paths_may_be_absolute_dot_relative_windows_or_cwd_relative(tmp_path, folder, monkeypatch):
    root, _, paths, vectors = folder
    forms = []
    for k, p in enumerate(paths):
        forms.append([str(root / p), "./" + p, p.replace("/", "\\"), p][k % 4])
    monkeypatch.chdir(root.parent)
    forms[3] = os.path.join(root.name, paths[3])   # relative to the current directory
    source = features.embeddings_file(save_npz(tmp_path / "e.npz", forms, vectors))
    project, _ = Project.create(tmp_path / "p", root, progress=False, features=source)
    np.testing.assert_allclose(np.asarray(project.pool()) * project.meta["features"]["scale"],
                               vectors, rtol=1e-6)


BAD_CASES = {
    "missing": ("no vector for", lambda p, v: (p[1:], v[1:])),
    "extra": ("is not an image of", lambda p, v: (p + ["elsewhere/x.png"], np.concatenate([v, v[:1]]))),
    "duplicate": ("has two vectors", lambda p, v: (p + [p[5]], np.concatenate([v, v[:1]]))),
    "nan": ("NaN or infinite", lambda p, v: (p, np.where(np.arange(len(p))[:, None] == 7, np.nan, v))),
    "inf": ("NaN or infinite", lambda p, v: (p, np.where(np.arange(len(p))[:, None] == 9, np.inf, v))),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_npz_is_one_line_naming_the_path_and_writes_nothing(capsys, tmp_path, folder, case):
    root, _, paths, vectors = folder
    match, make = BAD_CASES[case]
    bad_paths, bad_vectors = make(list(paths), vectors)
    npz = save_npz(tmp_path / "bad.npz", bad_paths, bad_vectors)
    line = one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features", npz,
                          match=match)
    named = {"missing": paths[0], "extra": "elsewhere/x.png", "duplicate": paths[5],
             "nan": paths[7], "inf": paths[9]}[case]
    assert repr(named) in line, line
    assert not (tmp_path / "p").exists()


def test_bad_csv_and_file_shapes_are_one_line(capsys, tmp_path, folder):
    root, _, paths, vectors = folder
    ragged = save_csv(tmp_path / "ragged.csv", paths, vectors, broken_row=4)
    line = one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features", ragged,
                          match="23 values, expected 24")
    assert repr(paths[4]) in line and "line 6" in line
    text = save_csv(tmp_path / "text.csv", paths, vectors).read_text().replace(
        repr(float(vectors[2, 3])), "n/a", 1)
    (tmp_path / "text.csv").write_text(text)
    line = one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                          tmp_path / "text.csv", match="'n/a' is not a number")
    assert repr(paths[2]) in line
    (tmp_path / "noheader.csv").write_text(f"{paths[0]},1,2\n")
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                   tmp_path / "noheader.csv", match="expected a header 'path,")
    np.savez(tmp_path / "ragged.npz", paths=np.array(paths[:2]),
             features=np.array([np.zeros(3), np.zeros(4)], dtype=object))
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                   tmp_path / "ragged.npz", match="pickled object array")
    np.savez(tmp_path / "keys.npz", names=np.array(paths), vectors=vectors)
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                   tmp_path / "keys.npz", match="expected arrays 'paths' and 'features'")
    np.savez(tmp_path / "count.npz", paths=np.array(paths), features=vectors[:-1])
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                   tmp_path / "count.npz", match="60 paths but 59 vectors")
    (tmp_path / "emb.parquet").write_bytes(b"PAR1")
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                   tmp_path / "emb.parquet", match="Parquet is not read")
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                   tmp_path / "emb.npz", "--image-size", 16, match="--image-size")
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--input-size", 16,
                   match="--input-size: only with --backbone")
    assert not (tmp_path / "p").exists()


def test_dropout_and_feature_noise_from_the_command_line(capsys, tmp_path, folder):
    """`next --dropout/--feature-noise` reach the round (recorded in its settings); a bad
    value is one line naming the option, before any work."""
    root, truth, paths, vectors = folder
    project, _ = Project.create(tmp_path / "p", root, classes=CLASSES.split(","), progress=False,
                                features=features.embeddings_file(
                                    save_npz(tmp_path / "e.npz", paths, vectors)))
    project.add_labels({i: str(truth[p]) for i, p in enumerate(paths[:20])}, queued_only=False)
    short = [*FAST, "--epochs", 1, "--steps-per-epoch", 3]
    one_line_error(capsys, "next", project.dir, "--budget", 5, *short, "--dropout", 1.5,
                   match="--dropout: must be in [0, 1)")
    one_line_error(capsys, "next", project.dir, "--budget", 5, *short, "--feature-noise", -1,
                   match="--feature-noise: must be >= 0")
    assert project.rounds() == []
    code, out, _ = run(capsys, "next", project.dir, "--budget", 5, *short, "--dropout", 0.3,
                       "--feature-noise", 0.25)
    assert code == 0, out
    entry = project.rounds()[-1]
    assert not entry["cold_start"]
    assert entry["settings"]["dropout"] == 0.3 and entry["settings"]["feature_noise"] == 0.25


@pytest.fixture(scope="module")
def vector_project(tmp_path_factory, folder):
    root, truth, paths, vectors = folder
    tmp = tmp_path_factory.mktemp("vp")
    project, _ = Project.create(tmp / "p", root, classes=[str(d) for d in range(10)],
                                progress=False,
                                features=features.embeddings_file(save_npz(tmp / "e.npz", paths, vectors)))
    project.add_labels({i: str(truth[p]) for i, p in enumerate(paths[:20])}, queued_only=False)
    return project, truth


def test_fixmatch_and_image_models_are_refused_over_vectors(capsys, vector_project):
    project, _ = vector_project
    line = one_line_error(capsys, "next", project.dir, "--budget", 5, "--ssl", "fixmatch",
                          match="ssl: fixmatch is defined by image augmentation")
    assert "mean_teacher" in line and "pi_model" in line and "supervised" in line
    assert "fixmatch" in line.split("use one of")[0]   # not offered as an alternative
    one_line_error(capsys, "next", project.dir, "--budget", 5, "--ssl", "supervised",
                   "--model", "cnn", match="model: cnn takes images")
    assert project.rounds() == []


def test_every_registered_strategy_picks_from_vectors(vector_project):
    """Through the same from_spec/select path as image projects: each returns 5 new ids."""
    project, _ = vector_project
    labeled = set(project.labels())
    for name in acquisition.names():
        settings = RoundSettings(ssl="pi_model", model="mlp", width=16, epochs=1,
                                 steps_per_epoch=3, dropout=0.2, strategy=name)
        result = rounds.run_round(settings, pool=project.pool(),
                                  labeled=np.array(sorted(labeled)),
                                  labels=np.array([int(project.labels()[i]) for i in sorted(labeled)]),
                                  candidates=np.array([i for i in range(len(project))
                                                       if i not in labeled]),
                                  num_classes=10, budget=5, round_index=1)
        assert len(set(result.picked.tolist())) == 5, name
        assert not set(result.picked.tolist()) & labeled, name
        assert result.probs.shape == (60, 10), name


def test_cold_start_by_typiclust_with_no_labels_covers_the_clusters(tmp_path):
    """TypiClust is registered for cold start: with 0 labels it clusters the vectors
    (K = budget) and takes a typical point of each cluster, here one per blob."""
    assert "typiclust" in acquisition.STRATEGIES.names("cold_start")
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 16)) * 20
    blob = np.repeat(np.arange(6), 20)
    x = (centers[blob] + rng.normal(size=(120, 16))).astype(np.float32)
    settings = RoundSettings(ssl="mean_teacher", model="linear", cold_start="typiclust")
    result = rounds.run_round(settings, pool=x, labeled=np.zeros(0, np.int64),
                              labels=np.zeros(0, np.int32), candidates=np.arange(120),
                              num_classes=6, budget=6, round_index=0)
    assert result.cold_start and result.strategy == "typiclust"
    assert sorted(blob[result.picked].tolist()) == list(range(6))
    crc = rounds.run_round(RoundSettings(ssl="mean_teacher", model="linear"), pool=x,
                           labeled=np.zeros(0, np.int64), labels=np.zeros(0, np.int32),
                           candidates=np.arange(120), num_classes=6, budget=6, round_index=0)
    assert crc.cold_start and len(set(crc.picked.tolist())) == 6


def test_typiclust_cold_start_on_an_image_project(tmp_path):
    write_digits(tmp_path / "images", 40, broken=False)
    project, _ = Project.create(tmp_path / "p", tmp_path / "images", image_size=8, progress=False)
    ids = project.next_batch(5, RoundSettings(cold_start="typiclust", model="mlp", width=16))
    assert len(set(ids)) == 5 and project.rounds()[-1]["strategy"] == "typiclust"


def test_a_format_1_project_still_opens_as_images(tmp_path):
    write_digits(tmp_path / "images", 6, broken=False)
    project, _ = Project.create(tmp_path / "p", tmp_path / "images", image_size=8, progress=False)
    meta = json.loads((tmp_path / "p" / "project.json").read_text())
    assert meta["format"] == store.FORMAT_VERSION and meta["input"] == "images"
    del meta["input"]
    (tmp_path / "p" / "project.json").write_text(json.dumps(dict(meta, format=1)))
    assert Project.open(tmp_path / "p").input_kind == "images"
    (tmp_path / "p" / "project.json").write_text(json.dumps(dict(meta, format=2, input="audio")))
    with pytest.raises(ProjectError, match="input 'audio'"):
        Project.open(tmp_path / "p")
