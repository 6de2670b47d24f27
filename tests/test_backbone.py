"""`crc-jax init --backbone FILE`: features computed at init by the real onnxruntime (an
ONNX conv net built here with the onnx helper API, checked against the same net in
NumPy) or by a Flax/orbax checkpoint of a crc_jax model; in chunks, resumed after a kill;
then init -> next -> label -> next on a folder of real image files."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from crc_jax.project import cli
from crc_jax.runtime import extras
from crc_jax.errors import MissingExtra
from crc_jax.project import Project, ProjectError, features
from crc_jax.project.features import backbones, chunks
from crc_jax.project.scan import load_image
from image_folder import write_digits
from onnx_models import FEATURES, numpy_features, write_conv_net

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ",".join(str(d) for d in range(10))
SIDE = 16
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
META = {"mean": ",".join(map(str, MEAN)), "std": ",".join(map(str, STD))}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return root, write_digits(root, 48)        # + 3 broken files and a duplicate


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "net.onnx"
    return path, write_conv_net(path, side=SIDE, metadata=META)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_onnxruntime_features_equal_the_numpy_network(tmp_path, layout):
    w = write_conv_net(tmp_path / "net.onnx", side=SIDE, layout=layout, metadata=META)
    encoder = backbones.OnnxEncoder(tmp_path / "net.onnx")
    assert (encoder.input_size, encoder.mean, encoder.std) == (SIDE, MEAN, STD)  # from the model
    assert encoder.describe()["layout"] == layout and encoder.provider == "CPUExecutionProvider"
    x = np.random.default_rng(0).integers(0, 256, (7, SIDE, SIDE, 3)).astype(np.uint8)
    expected = numpy_features(x, w, MEAN, STD)
    assert np.abs(expected).max() > 1.0   # a non-trivial output to compare
    np.testing.assert_allclose(encoder.encode(x), expected, rtol=1e-5, atol=1e-5)
    # options override the metadata
    plain = backbones.OnnxEncoder(tmp_path / "net.onnx", mean="0", std="1")
    np.testing.assert_allclose(plain.encode(x), numpy_features(x, w, [0.0] * 3, [1.0] * 3),
                               rtol=1e-5, atol=1e-5)


def test_a_model_with_a_fixed_batch_of_one_and_a_dynamic_side(tmp_path):
    w = write_conv_net(tmp_path / "one.onnx", side=SIDE, batch=1)
    encoder = backbones.OnnxEncoder(tmp_path / "one.onnx")
    x = np.random.default_rng(1).integers(0, 256, (3, SIDE, SIDE, 3)).astype(np.uint8)
    np.testing.assert_allclose(encoder.encode(x), numpy_features(x, w), rtol=1e-5, atol=1e-5)
    write_conv_net(tmp_path / "dyn.onnx", side="S")  # a symbolic side: the size is an option
    with pytest.raises(ProjectError, match="not fixed; give --input-size"):
        backbones.OnnxEncoder(tmp_path / "dyn.onnx")
    assert backbones.OnnxEncoder(tmp_path / "dyn.onnx", input_size=12).input_size == 12


def test_backbone_init_next_label_next_on_image_files(capsys, tmp_path, images, onnx_model):
    root, truth = images
    model, w = onnx_model
    code = cli.main([str(a) for a in ("init", tmp_path / "p", "--images", root, "--backbone",
                                       model, "--classes", CLASSES, "--batch-size", 5)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"48 images as {FEATURES}-d feature vectors (float32, from net.onnx)" in out
    assert out.count("skipped broken/") == 3 and "duplicate duplicates/" in out
    project = Project.open(tmp_path / "p")
    source = project.meta["features"]["source"]
    assert (source["kind"], source["input_size"], source["mean"]) == ("onnx", SIDE, MEAN)
    decoded = np.stack([load_image(root / p, SIDE) for p in project.paths])
    expected = numpy_features(decoded, w, MEAN, STD)
    np.testing.assert_allclose(np.asarray(project.pool()) * project.meta["features"]["scale"],
                               expected, rtol=1e-4, atol=1e-4)
    assert not (tmp_path / "p" / chunks.PARTIAL).exists()

    fast = ["--ssl", "pi_model", "--model", "mlp", "--width", "16", "--epochs", "2",
            "--steps-per-epoch", "5"]
    for round_index in range(2):
        assert cli.main([str(a) for a in ("next", tmp_path / "p", "--budget", 10, *fast)]) == 0
        capsys.readouterr()
        ids = project.pending()
        assert len(ids) == 10 and project.rounds()[-1]["cold_start"] == (round_index == 0)
        project.add_labels({i: str(truth[project.paths[i]]) for i in ids})
    assert project.queue()[0]["predicted"] in project.classes
    assert len(project.labels()) == 20


RESUME_SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    from crc_jax.project import Project, features
    source = features.backbone(Path(sys.argv[3]), batch_size=4)
    source.chunk_images = 8
    Project.create(Path(sys.argv[1]), Path(sys.argv[2]), features=source, progress=False)
''')


def test_a_killed_backbone_init_resumes_from_its_chunks(tmp_path, images, onnx_model):
    root, _ = images
    model, _ = onnx_model
    script = tmp_path / "init.py"
    script.write_text(RESUME_SCRIPT)
    env = dict(os.environ, CRC_JAX_FAULT="features_chunk:3",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(script), tmp_path / "p", root, model], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    partial = tmp_path / "p" / chunks.PARTIAL
    assert sorted(f.name for f in partial.glob("chunk_*.npz")) == [chunks.chunk_name(k) for k in range(3)]
    with pytest.raises(ProjectError, match="init did not finish"):
        Project.open(tmp_path / "p")

    class Counting:            # the same encoder, counting the images it encodes
        def __init__(self, inner):
            self.inner, self.input_size, self.images = inner, inner.input_size, 0

        def encode(self, x):
            self.images += len(x)
            return self.inner.encode(x)

        def describe(self):
            return self.inner.describe()

    resumed = features.backbone(model, batch_size=4)
    resumed.chunk_images = 8
    resumed.encoder = counting = Counting(resumed.encoder)
    project, result = Project.create(tmp_path / "p", root, features=resumed, progress=False)
    # 52 files: the empty one and the duplicate are never chunk members, so 50 are: the 48
    # digits (sorted first: batch_*/) then 2 broken files that do not decode. The 3 chunks
    # written before the kill held 24 digits; only the other 24 are encoded now.
    assert counting.images == 24
    fresh = features.backbone(model, batch_size=4)
    twin, twin_result = Project.create(tmp_path / "twin", root, features=fresh, progress=False)
    assert project.paths == twin.paths and len(project) == 48
    np.testing.assert_array_equal(np.asarray(project.pool()), np.asarray(twin.pool()))
    assert result.skipped == twin_result.skipped and len(result.skipped) == 3


def test_bad_backbones_and_options_are_one_line(capsys, tmp_path, images, onnx_model):
    root, _ = images
    model, _ = onnx_model
    (tmp_path / "junk.onnx").write_bytes(b"not a model")

    def error(*args, match):
        code = cli.main([str(a) for a in ("init", tmp_path / "p", "--images", root, *args)])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(err) == 1 and match in err[0], err
        assert not (tmp_path / "p").exists()

    error("--backbone", tmp_path / "junk.onnx", match="onnxruntime cannot load it")
    error("--backbone", tmp_path / "none.onnx", match="no such file")
    error("--backbone", model, "--input-size", 32, match="the model takes 16x16 images")
    error("--backbone", model, "--mean", "0.5,0.5", match="expected 3 values")
    error("--backbone", model, "--mean", "123.7,116.3,103.5", match="0-1 pixel scale")
    error("--backbone", model, "--std", "0,1,1", match="must be positive")
    error("--backbone", model, "--backbone-model", "cnn", match="only for Flax checkpoints")
    error("--backbone", tmp_path / "w.msgpack", match="needs --backbone-model")
    error("--features", tmp_path / "x.npz", "--backbone", model, match="not allowed with")


def test_missing_onnxruntime_is_one_line_naming_the_extra(monkeypatch, onnx_model):
    monkeypatch.setitem(extras.EXTRAS, "onnx", ("onnxruntime_is_not_installed",))
    with pytest.raises(MissingExtra, match=r"pip install 'crc_jax\[onnx\]'"):
        features.backbone(onnx_model[0])


def test_flax_and_orbax_checkpoints_of_a_crc_jax_model(tmp_path, images):
    """A crc_jax.models model saved as msgpack (as a project saves its rounds) or by orbax:
    the stored features are the model's own `return_features` output."""
    import jax
    import orbax.checkpoint as ocp
    from flax import serialization

    from crc_jax import models

    root, _ = images
    module = models.get("cnn", num_classes=10, width=4, dense_width=12)
    variables = module.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))
    (tmp_path / "w.msgpack").write_bytes(serialization.to_bytes(variables))
    ocp.PyTreeCheckpointer().save(str(tmp_path / "orbax"), variables)
    pools = []
    for name, path in (("m", tmp_path / "w.msgpack"), ("o", tmp_path / "orbax")):
        source = features.backbone(path, model="cnn:width=4,dense_width=12", input_size=8)
        project, _ = Project.create(tmp_path / name, root, features=source, progress=False)
        assert project.meta["features"]["source"]["kind"] == "flax"
        pools.append(np.asarray(project.pool()) * project.meta["features"]["scale"])
    x = np.stack([load_image(root / p, 8) for p in project.paths]).astype(np.float32) / 255.0
    expected = np.asarray(models.apply_functions(module).features(variables, x))
    np.testing.assert_allclose(pools[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pools[1], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ProjectError, match="do not fit --backbone-model cnn:width=8"):
        features.backbone(tmp_path / "w.msgpack", model="cnn:width=8,dense_width=12", input_size=8)


def test_the_labeling_page_serves_a_features_project(tmp_path, images, onnx_model):
    """The page shows the original files and saves answers, as for an image project."""
    from crc_jax.project import RoundSettings
    from crc_jax.project.server import create_app

    root, truth = images
    project, _ = Project.create(tmp_path / "p", root, classes=[str(d) for d in range(10)],
                                features=features.backbone(onnx_model[0]), progress=False)
    project.next_batch(5, RoundSettings(ssl="mean_teacher", model="linear", cold_start="typiclust"))
    client = create_app(project, settings=RoundSettings(ssl="mean_teacher", model="linear"),
                        budget=5).test_client()
    host = {"Host": "127.0.0.1:8765"}
    state = client.get("/api/state", headers=host).get_json()
    assert state["total"] == 5
    item = state["queue"][0]
    r = client.get(f"/image/{item['id']}", headers=host)   # the file, or a PNG preview (TIFF)
    assert r.status_code == 200 and r.mimetype.startswith("image/") and len(r.data) > 50
    r = client.post("/api/answer", json={"id": item["id"], "label": str(truth[item["path"]])},
                    headers={**host, "Origin": "http://127.0.0.1:8765"})
    assert r.status_code == 200 and project.labels() == {item["id"]: str(truth[item["path"]])}


def test_models_that_cannot_give_vectors_are_one_line_and_leave_nothing(capsys, tmp_path, images):
    """A grayscale model (refused as it loads), one whose channel count is symbolic (refused
    when onnxruntime rejects the batch), one computing NaN (refused naming the image): one
    line each, and no directory, marker or feature chunks left behind."""
    import onnx

    root, _ = images
    write_conv_net(tmp_path / "gray.onnx", side=SIDE, channels=1)
    write_conv_net(tmp_path / "gray_nhwc.onnx", side=SIDE, channels=1, layout="NHWC")
    model = onnx.load(str(tmp_path / "gray.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    onnx.save(model, str(tmp_path / "any_channels.onnx"))
    write_conv_net(tmp_path / "nan.onnx", side=SIDE, nan=True)
    for name, match in (
            ("gray.onnx", "input 'image' has shape ['N', 1, 16, 16], 1 channel; crc-jax feeds RGB"),
            ("gray_nhwc.onnx", "input 'image' has shape ['N', 16, 16, 1], 1 channel"),
            ("any_channels.onnx", "onnxruntime cannot run it on input 'image' of shape"),
            ("nan.onnx", "its vector for 'batch_0/")):
        code = cli.main([str(a) for a in ("init", tmp_path / "p", "--images", root, "--backbone",
                                          tmp_path / name)])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(err) == 1 and match in err[0], (name, err)
        assert not (tmp_path / "p").exists(), sorted(os.listdir(tmp_path / "p"))
    assert "holds NaN or infinite values" in err[0]


def test_mean_and_std_errors_name_their_source(capsys, tmp_path, images):
    root, _ = images
    write_conv_net(tmp_path / "m255.onnx", side=SIDE,
                   metadata={"mean": "123.7,116.3,103.5", "std": "0.229,0.224,0.225"})
    write_conv_net(tmp_path / "net.onnx", side=SIDE)

    def error(*args):
        code = cli.main([str(a) for a in ("init", tmp_path / "p", "--images", root, *args)])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(err) == 1, err
        assert not (tmp_path / "p").exists()
        return err[0]

    line = error("--backbone", tmp_path / "m255.onnx")
    assert "m255.onnx: its metadata 'mean' is '123.7,116.3,103.5', on the 0-255 pixel scale" in line
    assert "give --mean 0.4851,0.4561,0.4059" in line and not line.startswith("error: --mean")
    assert "must be finite" in error("--backbone", tmp_path / "net.onnx", "--mean", "nan")
    assert "must be finite" in error("--backbone", tmp_path / "net.onnx", "--std", "inf")
    assert "at least 0.001" in error("--backbone", tmp_path / "net.onnx", "--std", "1e-40")
    assert "overflow" not in error("--backbone", tmp_path / "net.onnx", "--std", "1e-40")
    # --mean given on the 0-1 scale overrides the metadata's
    assert backbones.OnnxEncoder(tmp_path / "m255.onnx", mean="0.5").mean == [0.5] * 3


def test_non_utf8_file_names_are_skipped_and_listed_with_a_backbone(capsys, tmp_path, onnx_model):
    root = tmp_path / "images"
    write_digits(root, 6, broken=False)
    (root / "odd.png").write_bytes((root / "batch_0" / os.listdir(root / "batch_0")[0]).read_bytes()
                                   + b" ")
    os.rename(root / "odd.png", os.fsencode(root) + b"/caf\xe9.png")
    code = cli.main([str(a) for a in ("init", tmp_path / "p", "--images", root, "--backbone",
                                      onnx_model[0])])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "skipped caf\\xe9.png: its file name is not valid UTF-8" in out
    assert len(Project.open(tmp_path / "p")) == 6
