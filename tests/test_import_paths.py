"""`crc-jax import` maps a row to an image by its full path under the images folder, never by
its file name alone (issue #23, item 1): rows outside the folder, in another folder, or
naming a duplicate `init` kept out are unmapped, listed, and nothing is written."""

import os

import numpy as np
import pytest
from PIL import Image

from crc_jax.project import cli
from crc_jax.project import Project


def write_png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


@pytest.fixture()
def project(tmp_path):
    """Images whose names repeat across folders, a duplicate kept out, and a project."""
    images = tmp_path / "images"
    write_png(images / "img_000_c0.png", 0)
    write_png(images / "img_007_c1.png", 7)
    write_png(images / "a" / "img_001_c1.png", 1)
    write_png(images / "b" / "img_009_c1.png", 9)
    (images / "z").mkdir()
    (images / "z" / "img_009_c1.png").write_bytes((images / "a" / "img_001_c1.png").read_bytes())
    write_png(tmp_path / "elsewhere" / "img_007_c1.png", 70)  # a same-named file outside
    assert cli.main(["init", str(tmp_path / "p"), "--images", str(images),
                     "--classes", "c0,c1", "--image-size", "8"]) == 0
    p = Project.open(tmp_path / "p")
    assert "z/img_009_c1.png" not in p.paths  # the duplicate was kept out
    return p


def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def log_bytes(project):
    path = project.dir / "labels.jsonl"
    return path.read_bytes() if path.exists() else b""


CASES = [  # (row path, what the old code labeled instead)
    ("../../../../etc/img_007_c1.png", "img_007_c1.png"),
    ("photos/sub/deeper/img_000_c0.png", "img_000_c0.png"),
    ("z/img_009_c1.png", "b/img_009_c1.png"),  # the duplicate init kept out
]


@pytest.mark.parametrize("reference,lookalike", CASES)
def test_a_path_naming_no_project_image_is_unmapped_and_nothing_is_written(
        capsys, tmp_path, project, reference, lookalike):
    good = project.paths.index("a/img_001_c1.png")
    (tmp_path / "rows.csv").write_text(f"path,label\n{reference},c0\na/img_001_c1.png,c1\n")
    code, out, err = run(capsys, "import", project.dir, tmp_path / "rows.csv")
    assert code == 2 and reference in err and "nothing was imported" in err, (code, out, err)
    assert "--skip-unmapped" in err and log_bytes(project) == b""

    code, out, err = run(capsys, "import", project.dir, tmp_path / "rows.csv", "--skip-unmapped")
    assert code == 0, err
    assert f"not imported: {reference}" in out and "1 new answers" in out
    assert Project.open(project.dir).labels() == {good: "c1"}  # the lookalike got nothing
    assert project.paths.index(lookalike) not in Project.open(project.dir).labels()


def test_only_unmapped_rows_is_an_error_even_with_skip(capsys, tmp_path, project):
    rows = "".join(f"{ref},c0\n" for ref, _ in CASES)
    (tmp_path / "rows.csv").write_text("path,label\n" + rows)
    code, out, err = run(capsys, "import", project.dir, tmp_path / "rows.csv", "--skip-unmapped")
    assert code == 2 and "none of the 3 labeled rows" in err and log_bytes(project) == b""


def test_absolute_paths_are_accepted_only_inside_the_images_folder(capsys, tmp_path, project):
    inside = project.images_root / "img_007_c1.png"
    outside = tmp_path / "elsewhere" / "img_007_c1.png"
    (tmp_path / "out.csv").write_text(f"path,label\n{outside},c1\n")
    code, _, err = run(capsys, "import", project.dir, tmp_path / "out.csv")
    assert code == 2 and "outside the images folder" in err and log_bytes(project) == b""
    (tmp_path / "in.csv").write_text(f"path,label\n{inside},c1\n")
    assert run(capsys, "import", project.dir, tmp_path / "in.csv")[0] == 0
    assert Project.open(project.dir).labels() == {project.paths.index("img_007_c1.png"): "c1"}


def test_local_files_urls_resolve_against_the_document_root(capsys, tmp_path, project):
    """?d= is relative to Label Studio's document root, not to the images folder."""
    root = tmp_path  # the images folder is tmp_path/images
    rows = ("path,label\n"
            "/data/local-files/?d=images/b/img_009_c1.png,c1\n"
            "/data/local-files/?d=elsewhere/img_007_c1.png,c0\n")  # another folder: unmapped
    (tmp_path / "ls.csv").write_text(rows)
    code, _, err = run(capsys, "import", project.dir, tmp_path / "ls.csv", "--document-root", root)
    assert code == 2 and "elsewhere/img_007_c1.png" in err and "outside the images folder" in err
    code, out, err = run(capsys, "import", project.dir, tmp_path / "ls.csv", "--document-root", root,
                         "--skip-unmapped")
    assert code == 0, err
    assert Project.open(project.dir).labels() == {project.paths.index("b/img_009_c1.png"): "c1"}
    # With Label Studio's default root (/), the same ?d= path names nothing of the project.
    (tmp_path / "again.csv").write_text("path,label\n/data/local-files/?d=images/a/img_001_c1.png,c1\n")
    code, _, err = run(capsys, "import", project.dir, tmp_path / "again.csv")
    assert code == 2 and "document root /" in err


def test_a_symlinked_document_root_still_maps(capsys, tmp_path, project):
    link = tmp_path / "link_root"
    os.symlink(tmp_path, link)
    (tmp_path / "ls.csv").write_text("path,label\n/data/local-files/?d=images/img_000_c0.png,c0\n")
    assert run(capsys, "import", project.dir, tmp_path / "ls.csv", "--document-root", link)[0] == 0
    assert Project.open(project.dir).labels() == {project.paths.index("img_000_c0.png"): "c0"}
