"""Edges of `crc-jax` and its page, in process (the subprocess versions are rows of
docs/reliability.md's table, tests/bad_inputs_crc_jax.py): Ctrl-C, a refused write, the
socket's address reuse, the page's start-up check and the images it may take labels for;
and crc_jax.durable.claim_dir, the one rule for output folders."""

from __future__ import annotations

import errno
import json
import re
import shutil
import socket

import numpy as np
import pytest
from PIL import Image

from crc_jax import durable
from crc_jax.project import cli
from crc_jax.errors import StorageError
from crc_jax.project import Project
from crc_jax.project.server import create_app, make_server
from crc_jax.project.web import bind
from crc_jax.runtime import command
from crc_jax.project.store import ProjectError
from image_folder import write_digits

CLASSES = [str(d) for d in range(10)]


# -- claim_dir --------------------------------------------------------------------------

def test_claim_dir_takes_a_new_an_empty_or_its_own_folder(tmp_path):
    new = durable.claim_dir(tmp_path / "a" / "b", ".mine", command="cmd")
    assert (new / ".mine").is_file()
    (tmp_path / "empty").mkdir()
    durable.claim_dir(tmp_path / "empty", ".mine", command="cmd")
    (new / "report.md").write_text("mine")      # the command's own file, then a rerun
    durable.claim_dir(new, ".mine", command="cmd")
    assert (new / "report.md").read_text() == "mine"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    durable.claim_dir(tmp_path / "run", ".mine", command="cmd", accept=("config.json",))
    assert (tmp_path / "run" / ".mine").is_file()


def test_claim_dir_refuses_a_folder_of_other_files_and_leaves_it(tmp_path):
    (tmp_path / "summary.csv").write_text("the user's")
    (tmp_path / "report.md").write_text("the user's")
    with pytest.raises(StorageError, match=r"^--out .*: not empty and not made by cmd "
                       r"\(it holds report\.md, summary\.csv\); give a new or empty folder$"):
        durable.claim_dir(tmp_path, ".mine", command="cmd", flag="--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "summary.csv"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="exists and is not a directory"):
        durable.claim_dir(tmp_path / "file", ".mine", command="cmd")


def test_a_refused_atomic_write_names_the_file_asked_for_not_its_temporary(tmp_path,
                                                                         monkeypatch):
    def read_only(name, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(name))

    monkeypatch.setattr(durable, "open", read_only, raising=False)
    with pytest.raises(OSError) as caught:
        durable.write_atomic(tmp_path / "labels.csv", b"path,label\n")
    assert command.error_line(caught.value) == f"{tmp_path / 'labels.csv'}: Read-only file system"


def test_an_answer_without_its_newline_survives_a_read_then_an_append(tmp_path):
    """The labels log read first (as every command does when it opens the project), then
    appended to: the whole last line that lacked its newline must get it, not have the new
    line glued to it."""
    from crc_jax.project.labels_log import LabelsLog

    path = tmp_path / "labels.jsonl"
    LabelsLog(path).record([{"op": "label", "id": i, "label": "a", "source": "t"}
                            for i in range(2)])
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    log = LabelsLog(path)
    assert log.answers() == {0: "a", 1: "a"}      # a read, without repair
    log.record([{"op": "label", "id": 2, "label": "b", "source": "t"}])
    lines = durable.read_lines(path)
    assert not lines.torn and not lines.needs_newline
    assert [e["id"] for e in lines.entries] == [0, 1, 2]
    assert LabelsLog(path).answers() == {0: "a", 1: "a", 2: "b"}


# -- the CLI ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    write_digits(root / "images", 16, broken=False)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)).save(
        root / "outside.png")
    (root / "images" / "zz_link.png").symlink_to(root / "outside.png")
    Project.create(root / "project", root / "images", image_size=8, classes=CLASSES,
                   progress=False)
    return root / "project"


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys, project_dir):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "status", interrupted)
    assert cli.main(["status", str(project_dir)]) == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["interrupted: what was saved is whole; run the command again"]


LOST_INTERRUPT = """
import gc, os, signal, sys, time
from crc_jax.project import cli

def swallowing_callback(phase, info):   # as JAX's _xla_gc_callback: an interrupt that
    if phase == "start" and not fired:   # lands here is "ignored", not raised
        fired.append(1)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10000):   # the handler runs here, inside the callback
            pass

def status(args):
    gc.callbacks.append(swallowing_callback)
    gc.collect()
    time.sleep(3600)   # only the interrupt's own ending stops this in time
    print("ran on after Ctrl-C")

fired = []
cli.COMMANDS["status"] = status
sys.argv = ["crc-jax", "status", "somewhere"]
sys.exit(cli.main())
"""


def test_ctrl_c_swallowed_by_a_gc_callback_still_ends_the_command():
    """A Ctrl-C that lands in a garbage-collection callback (JAX registers one) is printed
    as "Exception ignored" and lost by Python; the command must end all the same, with
    the one line and exit status 130, not run on."""
    import subprocess
    import sys

    # the command sleeps an hour after the lost interrupt: the timeout only guards a hang
    proc = subprocess.run([sys.executable, "-c", LOST_INTERRUPT], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert "ran on" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        "interrupted: what was saved is whole; run the command again"), proc.stderr


SWALLOWED_BY_CODE = """
import sys, time
from crc_jax.project import cli

def status(args):
    try:
        print("ready", flush=True)   # inside the try: the signal cannot land before it
        time.sleep(3600)   # the Ctrl-C lands here
    except BaseException:   # code that swallows the interrupt and runs on
        pass
    time.sleep(3600)   # only the grace period's ending stops this in time
    print("ran on after Ctrl-C")

cli.COMMANDS["status"] = status
sys.argv = ["crc-jax", "status", "somewhere"]
sys.exit(cli.main())
"""


def test_ctrl_c_swallowed_by_code_ends_the_command_after_the_grace_period():
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", SWALLOWED_BY_CODE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=600)   # a hang guard: the command sleeps an hour
    finally:
        proc.kill()
    assert proc.returncode == 130 and "ran on" not in out, (proc.returncode, out, err)
    assert err.strip().splitlines()[-1] == (
        "interrupted: what was saved is whole; run the command again"), err


def test_a_refused_write_is_one_line(monkeypatch, capsys, project_dir):
    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/x/labels.jsonl")

    monkeypatch.setitem(cli.COMMANDS, "import", full)
    assert cli.main(["import", str(project_dir), "f.csv"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["error: /x/labels.jsonl: No space left on device"]


def test_a_project_of_one_class_is_refused(tmp_path, capsys, project_dir):
    images = Project.open(project_dir).images_root
    assert cli.main(["init", str(tmp_path / "p"), "--images", str(images), "--classes", "a"]) == 2
    assert "--classes: give at least 2 classes, got 1 ('a')" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_a_first_import_of_one_class_is_refused(tmp_path, capsys, project_dir):
    """A project without classes takes them from its first labels: one class alone would
    make a one-class project, as `init --classes a` would."""
    images = Project.open(project_dir).images_root
    assert cli.main(["init", str(tmp_path / "p"), "--images", str(images)]) == 0
    path = Project.open(tmp_path / "p").paths[0]
    (tmp_path / "one.csv").write_text(f"path,label\n{path},cat\n")
    capsys.readouterr()
    assert cli.main(["import", str(tmp_path / "p"), str(tmp_path / "one.csv")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["error: these labels name one class only ('cat') and the project has none "
                   "yet: a project needs at least 2; name them first (crc-jax init --classes "
                   "a,b,..., or import with --label-config)"]
    project = Project.open(tmp_path / "p")
    assert project.classes == [] and project.answers() == {}


def test_a_failed_init_leaves_no_half_made_project_but_keeps_resumable_chunks(tmp_path):
    from crc_jax.project import store

    made = tmp_path / "made"
    store.prepare_dir(made)
    (made / "pool.npy").write_bytes(b"half")
    store.undo_init(made, made_dir=True)
    assert not made.exists()
    chunked = tmp_path / "chunked"   # a backbone's init, killed after some chunks
    store.prepare_dir(chunked)
    (chunked / "features.partial").mkdir()
    (chunked / "features.partial" / "chunk_000000.npz").write_bytes(b"a whole chunk")
    (chunked / "pool.npy").write_bytes(b"half")
    store.undo_init(chunked, made_dir=True)
    assert sorted(p.name for p in chunked.iterdir()) == [store.INIT_MARKER, "features.partial"]
    store.prepare_dir(chunked)   # the same init again: accepted, the chunks resume


# -- the page ---------------------------------------------------------------------------

def test_the_port_is_reused_while_old_connections_linger():
    """A killed page leaves its accepted connections in FIN_WAIT/TIME_WAIT for up to a
    minute; a restart must still bind (SO_REUSEADDR), as long as nobody listens."""
    server = bind("127.0.0.1", 0)
    port = server.getsockname()[1]
    browser = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()   # the server side closes first, as a killed process does
    server.close()
    try:
        again = bind("127.0.0.1", port)
        again.close()
    finally:
        browser.close()
    listening = bind("127.0.0.1", 0)
    try:
        with pytest.raises(ProjectError, match=r"--port \d+: cannot listen"):
            bind("127.0.0.1", listening.getsockname()[1])
    finally:
        listening.close()


def test_the_page_takes_no_label_for_an_image_it_cannot_show(project_dir, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(project_dir, copy)
    project = Project.open(copy)
    link = project.paths.index("zz_link.png")
    changed = next(i for i, p in enumerate(project.paths) if p.endswith(".png") and i != link)
    ok = next(i for i in range(len(project)) if i not in (link, changed))
    project.queue_ids = lambda: [link, changed, ok]
    images = project.images_root
    saved = (images / project.paths[changed]).read_bytes()
    try:   # the file changed since init: another image than the pool's
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / project.paths[changed])
        client = create_app(project).test_client()
        for i in (link, changed):
            reply = client.post("/api/answer", json={"id": i, "label": "1"})
            assert reply.status_code == 409, reply.data
            assert "cannot be shown" in reply.get_json()["error"]
            assert client.get(f"/image/{i}").status_code == 404
        assert client.post("/api/answer", json={"id": link, "skip": True}).status_code == 200
        assert client.post("/api/answer", json={"id": ok, "label": "1"}).status_code == 200
    finally:
        (images / project.paths[changed]).write_bytes(saved)
    assert Project.open(copy).answers() == {link: None, ok: "1"}


def test_the_page_refuses_to_start_without_its_images_folder(project_dir, tmp_path):
    copy = tmp_path / "p"
    shutil.copytree(project_dir, copy)
    meta = json.loads((copy / "project.json").read_text())
    meta["images"] = str(tmp_path / "moved_away")
    (copy / "project.json").write_text(json.dumps(meta))
    with pytest.raises(ProjectError, match=r"images folder .*moved_away is missing"):
        make_server(Project.open(copy), port=0)


# -- Label Studio files of the wrong shape ----------------------------------------------

@pytest.mark.parametrize("task,where", [
    ({"data": {"image": "a.png"}, "annotations": {"result": "3"}}, "task 1: 'annotations' is a dict"),
    ({"data": {"image": "a.png"}, "annotations": [{"result": "3"}]},
     "task 1, an annotation: 'result' is a str"),
])
def test_a_label_studio_export_of_the_wrong_shape_is_refused_not_skipped(tmp_path, task, where):
    """Before, a dict of annotations (or a result that is a string) was iterated as keys or
    characters and its answer dropped without a word."""
    from crc_jax.project import exchange

    path = tmp_path / "export.json"
    path.write_text(json.dumps([task]))
    with pytest.raises(ProjectError, match=rf"export\.json: {re.escape(where)}, expected a list"):
        exchange.read_labels_file(path)
