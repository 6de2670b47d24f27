"""`crc-jax init --features FILE`: one vector per image from a file, refused with one line
when it does not fit the folder; rounds train a head over the vectors, and every
registered strategy (cold-start ones included) picks from them."""

import json
import os

import numpy as np
import pytest

from crc_jax import acquisition, ntk
from crc_jax.project import cli
from crc_jax.project import Project, ProjectError, RoundSettings, features, rounds, store
from crc_jax.project import settings as round_settings
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
        result = rounds.run_round(round_settings.plan(settings, 5, vectors=True),
                                  pool=project.pool(), labeled=np.array(sorted(labeled)),
                                  labels=np.array([int(project.labels()[i]) for i in sorted(labeled)]),
                                  candidates=np.array([i for i in range(len(project))
                                                       if i not in labeled]),
                                  num_classes=10, round_index=1)
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
    result = rounds.run_round(round_settings.plan(settings, 6, vectors=True), pool=x,
                              labeled=np.zeros(0, np.int64), labels=np.zeros(0, np.int32),
                              candidates=np.arange(120), num_classes=6, round_index=0)
    assert result.cold_start and result.strategy == "typiclust"
    assert sorted(blob[result.picked].tolist()) == list(range(6))
    crc = rounds.run_round(round_settings.plan(RoundSettings(ssl="mean_teacher", model="linear"),
                                               6, vectors=True), pool=x,
                           labeled=np.zeros(0, np.int64), labels=np.zeros(0, np.int32),
                           candidates=np.arange(120), num_classes=6, round_index=0)
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


# ------------------------------------------------------------------- features at any size

def svd_rank(phi, *, bias=True):
    """The definition: singular values of Z = [Φ, 1] above (d+1)·ε₃₂·σmax, from an SVD."""
    z = np.asarray(phi, np.float64)
    z = np.concatenate([z, np.ones((len(z), 1))], axis=1) if bias else z
    sv = np.linalg.svd(z, compute_uv=False)
    return int(np.sum(sv > z.shape[1] * ntk.FLOAT32_EPS * sv[0])) if sv[0] > 0 else 0


@pytest.mark.parametrize("n, d", [(12, 40), (40, 12), (20, 19), (21, 20), (3, 500)])
def test_rank_from_either_gram_is_the_rank_of_the_features(n, d):
    """ZᵀZ ((d+1)²) and ZZᵀ (N²) give one rank, that of the SVD, deficient or not; the
    smaller one is what feature_rank forms."""
    rng = np.random.default_rng(n * d)
    for deficient in (False, True):
        phi = rng.normal(size=(n, d)).astype(np.float32)
        if deficient:
            phi[:, :2] = 0.0                      # dead units
            phi[-1] = phi[0]                      # a repeated vector
        for bias in (True, False):
            ranks = {side: ntk.rank_from_gram(ntk.smaller_gram(phi, bias=bias, side=side),
                                              (d + bias) * ntk.FLOAT32_EPS)
                     for side in ("features", "samples")}
            assert ranks["features"] == ranks["samples"] == svd_rank(phi, bias=bias), ranks
            assert ntk.feature_rank(phi, bias=bias) == ranks["features"]
            assert ntk.smaller_gram(phi, bias=bias).shape[0] == min(n, d + bias)


def linear_head_ctx(x, labeled, num_classes=3, seed=0):
    """A Context whose images are the vectors, under a dense head (CRC's last layer)."""
    from crc_jax.acquisition import Context

    rng = np.random.default_rng(seed)
    params = {"head": {"kernel": rng.normal(size=(x.shape[1], num_classes)).astype(np.float32),
                       "bias": np.zeros(num_classes, np.float32)}}
    labeled = np.asarray(labeled)
    return Context(apply_fn=lambda v, xb: xb @ v["params"]["head"]["kernel"]
                   + v["params"]["head"]["bias"], variables={"params": params}, x=x,
                   labeled=labeled, unlabeled=np.setdiff1d(np.arange(len(x)), labeled),
                   num_classes=num_classes, features_fn=lambda v, xb: xb, batch_size=8)


def brute_force_scores(x, labeled, groups, num_classes=3):
    """λ⁺min of C·(ΦΦᵀ + 1) over L ∪ g in float64, r = min(|L ∪ g|, ρ), ρ from the SVD."""
    phi, rho, out = np.asarray(x, np.float64), svd_rank(x), []
    for g in groups:
        s = np.concatenate([labeled, g])
        ev = np.linalg.eigvalsh(num_classes * (phi[s] @ phi[s].T + 1.0))
        out.append(ev[len(s) - min(len(s), rho)])
    return np.array(out)


def test_crc_scores_of_20_vectors_of_d_100000_in_bounded_memory():
    """20 vectors of d = 100,000: the rank comes from a 20×20 Gram (a (d+1)² one is 74.5 GiB);
    the scores equal the brute-force definition, a group repeating a vector scores 0."""
    import tracemalloc

    from crc_jax.acquisition.crc import crc as crc_lib

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 100_000)).astype(np.float32)
    x[19] = x[18]
    labeled = np.arange(5)
    groups = np.arange(5, 20).reshape(5, 3)            # the last group holds rows 18 and 19
    ctx = linear_head_ctx(x, labeled)
    tracemalloc.start()
    try:
        scores = crc_lib.score_groups(ctx, groups, subset="last")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 2**20, f"{peak / 2**20:.0f} MiB of NumPy arrays at once"
    ref = brute_force_scores(x, labeled, groups)
    assert ntk.feature_rank(x) == svd_rank(x) == 19
    np.testing.assert_allclose(scores[:4], ref[:4], rtol=1e-6)
    assert abs(scores[4]) < 1e-6 * ref[:4].min() and abs(ref[4]) < 1e-6 * ref[:4].min()


def test_the_device_backend_ranks_20_vectors_of_d_100000_through_the_20x20_gram():
    """The float64 device path (what a GPU runs; here XLA on the CPU) forms its rank Gram
    on the device: N² as well, with the host's scores."""
    from crc_jax.acquisition.crc import crc as crc_lib

    x = np.random.default_rng(0).normal(size=(20, 100_000)).astype(np.float32)
    ctx = linear_head_ctx(x, np.arange(5))
    groups = np.arange(5, 20).reshape(5, 3)
    np.testing.assert_allclose(crc_lib.score_groups(ctx, groups, backend="device"),
                               crc_lib.score_groups(ctx, groups, backend="host"), rtol=1e-9)


def test_crc_scores_are_identical_through_either_gram(monkeypatch):
    """At small d the (d+1)² path still exists: forcing it gives the same scores, bit for bit."""
    from crc_jax.acquisition.crc import crc as crc_lib

    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 40)).astype(np.float32)
    x[:, :3] = 0.0
    x[29] = x[7]
    ctx = linear_head_ctx(x, np.arange(6))
    groups = np.arange(6, 30).reshape(6, 4)
    smaller = ntk.smaller_gram(x).shape
    default = crc_lib.score_groups(ctx, groups, subset="last")
    original = ntk.smaller_gram
    monkeypatch.setattr(ntk, "smaller_gram", lambda phi, **kw: original(
        phi, **dict(kw, side="features")))
    forced = crc_lib.score_groups(ctx, groups, subset="last")
    assert smaller == (30, 30) and ntk.smaller_gram(x).shape == (41, 41)
    np.testing.assert_array_equal(forced, default)
    np.testing.assert_allclose(default, brute_force_scores(x, np.arange(6), groups),
                               rtol=1e-6, atol=1e-9 * default.max())


def test_float16_underflow_and_overflow_are_refused_naming_the_vector(capsys, tmp_path, folder):
    root, _, paths, vectors = folder
    huge = vectors.copy()
    huge[3] *= 1e9                 # 1e9 times the rest: float16 would zero the other 59
    npz = save_npz(tmp_path / "huge.npz", paths, huge)
    line = one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features", npz,
                          "--feature-dtype", "float16", match="--feature-dtype float16: the vector")
    assert f"of {paths[0]!r} underflows it (59 such vectors" in line
    assert "use --feature-dtype float32" in line and not (tmp_path / "p").exists()
    code, out, _ = run(capsys, "init", tmp_path / "p", "--images", root, "--features", npz)
    assert code == 0, out                       # float32 holds them
    scaled = np.array([[1.0, 1.0], [7e4, 0.0], [2.0, 1.0]], np.float32)   # RMS units
    with np.errstate(over="ignore"):
        stored = scaled.astype(np.float16)
    with pytest.raises(ProjectError, match=r"the vector of 'b' overflows it \(1 such"):
        store.check_stored(scaled, stored, ["a", "b", "c"], "float16")


def test_empty_files_and_folders_are_refused(capsys, tmp_path, folder):
    root, _, paths, vectors = folder
    np.savez(tmp_path / "wide0.npz", paths=np.array(paths), features=np.zeros((60, 0)))
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                   tmp_path / "wide0.npz", match="its vectors have 0 values (shape (60, 0))")
    (tmp_path / "empty").mkdir()
    np.savez(tmp_path / "rows0.npz", paths=np.array([], dtype=str), features=np.zeros((0, 24)))
    one_line_error(capsys, "init", tmp_path / "p", "--images", tmp_path / "empty", "--features",
                   tmp_path / "rows0.npz", match="holds no vectors (0 rows)")
    one_line_error(capsys, "init", tmp_path / "p", "--images", tmp_path / "empty", "--features",
                   save_npz(tmp_path / "e.npz", paths, vectors), match="no images found")
    assert not (tmp_path / "p").exists()


def test_npy_data_named_npz_and_long_csv_fields_are_one_line(capsys, tmp_path, folder):
    root, truth, paths, vectors = folder
    np.save(tmp_path / "v.npy", vectors)
    (tmp_path / "v.npy").rename(tmp_path / "v.npz")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{p},{truth[p]}\n" for p in paths[:10]))
    for extra in ([], ["--labels", labels]):     # the labels file is not blamed
        one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                       tmp_path / "v.npz", *extra,
                       match="v.npz: holds one NumPy array (.npy data), not an .npz archive")
    (tmp_path / "long.csv").write_text(f"path,f0\n{paths[0]},{'1' * 140_000}\n")
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--features",
                   tmp_path / "long.csv", match="long.csv line 2: not a features CSV row "
                                                "(field larger than field limit (131072))")
    (tmp_path / "long_labels.csv").write_text(f"path,label\n{paths[0]},{'x' * 140_000}\n")
    one_line_error(capsys, "init", tmp_path / "p", "--images", root, "--labels",
                   tmp_path / "long_labels.csv", match="long_labels.csv: not a labels CSV")
    assert not (tmp_path / "p").exists()


def test_non_utf8_file_names_are_skipped_and_listed_with_features(capsys, tmp_path):
    root = tmp_path / "images"
    write_digits(root, 6, broken=False)
    (root / "odd.png").write_bytes((root / list_images(root)[0]).read_bytes() + b" ")
    os.rename(root / "odd.png", os.fsencode(root) + b"/caf\xe9.png")
    listed = list_images(root)
    assert len(listed) == 7
    vectors = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    for name, rows in (("with.npz", listed), ("without.npz", [p for p in listed if "caf" not in p])):
        npz = save_npz(tmp_path / name, rows, vectors[:len(rows)])
        code, out, err = run(capsys, "init", tmp_path / f"p_{name}", "--images", root,
                             "--features", npz)
        assert code == 0, err
        assert "skipped caf\\xe9.png: its file name is not valid UTF-8" in out
        assert len(Project.open(tmp_path / f"p_{name}")) == 6


def test_init_refuses_a_folder_holding_the_users_files(capsys, tmp_path, folder):
    root, _, paths, vectors = folder
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "learning_curve.png").write_bytes(b"my plot")
    (mine / "predictions.csv").write_text("my,own\n")
    before = {p.name: p.read_bytes() for p in mine.iterdir()}
    for extra in ([], ["--features", save_npz(tmp_path / "e.npz", paths, vectors)]):
        one_line_error(capsys, "init", mine, "--images", root, *extra,
                       match="is not empty: it holds learning_curve.png, predictions.csv, "
                             "which crc-jax init did not write")
        assert {p.name: p.read_bytes() for p in mine.iterdir()} == before
    (tmp_path / "empty").mkdir()           # an empty folder is a new project's
    code, out, err = run(capsys, "init", tmp_path / "empty", "--images", root)
    assert code == 0, err
