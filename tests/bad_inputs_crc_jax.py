"""The `crc-jax` rows of docs/reliability.md's bad-input table: the labeling app's commands,
its page, Ctrl-C, and projects on a read-only or full file system.

Each case is a dict as in tests/bad_inputs.py (name, given, args, workdir, expect, existing,
exit); a case with a `runner` is run by it instead of as a plain subprocess:
  * `page`: starts `crc-jax label DIR --port 0`, sends one HTTP request once the page serves,
    then stops the server with Ctrl-C (the table shows the reply's status and message);
  * `interrupt`: starts the command and sends SIGINT once its output matches a pattern.
Cases that need to mount a file system (a full tmpfs, a read-only bind mount) are marked
`skip` with the reason on a machine that does not allow mounting (tests/mounts.py).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import mounts
from bad_inputs import names_kept
from image_folder import write_digits
from onnx_models import write_conv_net

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "crc_jax.project.cli"]
CLASSES = ",".join(str(d) for d in range(10))
# A round small enough for seconds on a CPU.
FAST = ["--model", "mlp", "--width", "32", "--epochs", "1", "--steps-per-epoch", "3",
        "--no-flip"]


class Live:
    """A command running in the background, its output collected as it comes."""

    def __init__(self, args, *, env=None):
        self.proc = subprocess.Popen([*CLI, *map(str, args)], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out = {"stdout": bytearray(), "stderr": bytearray()}
        self.readers = [threading.Thread(target=self._read, args=(name,), daemon=True)
                        for name in self.out]
        for reader in self.readers:
            reader.start()

    def _read(self, name):
        stream = getattr(self.proc, name)
        while chunk := stream.read1(4096):
            self.out[name] += chunk

    def text(self, name: str) -> str:
        return bytes(self.out[name]).decode("utf-8", "replace")

    def wait_for(self, pattern: str, stream: str = "stdout", timeout: float = 300):
        """The first match of `pattern` in the output, or None once the command ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text(stream))
            if found or self.proc.poll() is not None:
                return found or re.search(pattern, self.text(stream))
            time.sleep(0.05)
        return None

    def finish(self, *, interrupt: bool, timeout: float = 120) -> subprocess.CompletedProcess:
        if interrupt and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(timeout=10)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode,
                                           self.text("stdout"), self.text("stderr"))


def request(port: int, method: str, path: str, payload=None) -> tuple[int, str]:
    """(status, the reply's "error", or a short description of a good reply)."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            body = reply.read()
            status, kind = reply.status, reply.headers.get_content_type()
    except urllib.error.HTTPError as err:
        body, status, kind = err.read(), err.code, err.headers.get_content_type()
    if kind == "application/json":
        reply_json = json.loads(body)
        return status, str(reply_json.get("error") or json.dumps(reply_json, sort_keys=True))
    return status, f"{kind}, {len(body)} bytes"


PAGE_LINE = r"labeling page: http://127\.0\.0\.1:(\d+)/"


def run_page(case: dict) -> dict:
    """`crc-jax label` started; the case's request sent once it serves; Ctrl-C."""
    live = Live(case["args"])
    served = live.wait_for(PAGE_LINE)
    http = (0, "the page did not start")
    if served:
        http = request(int(served.group(1)), *case["request"])
    return {"proc": live.finish(interrupt=True), "http": http}


def run_interrupted(case: dict) -> dict:
    """The command started, and Ctrl-C (SIGINT) sent once its output matches `interrupt`."""
    live = Live(case["args"])
    stream, pattern = case["interrupt"]
    found = live.wait_for(pattern, stream)
    return {"proc": live.finish(interrupt=found is not None, timeout=300)}


def run_after_kill(case: dict) -> dict:
    """A page killed (SIGKILL) while a browser holds a connection to it; then the case's
    command restarts it on the same port at once, and is stopped with Ctrl-C."""
    port = case["port"]
    first = Live(["label", case["workdir"], "--port", port])
    browser = None
    if first.wait_for(PAGE_LINE):
        browser = socket.create_connection(("127.0.0.1", port))
        browser.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # unfinished
        time.sleep(0.5)
    first.proc.kill()
    first.finish(interrupt=False)
    try:
        live = Live(case["args"])
        live.wait_for(PAGE_LINE)
        return {"proc": live.finish(interrupt=True)}
    finally:
        if browser is not None:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def labels_file(path: Path, rows) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def noise_png(path: Path, *, seed: int) -> Path:
    """An 8x8 image of random pixels (unlike any other file: not an exact duplicate)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_queue(project_dir: Path, ids) -> None:
    """queue.csv naming `ids` (as `crc-jax next` writes it), so the page takes answers."""
    from crc_jax import durable
    from crc_jax.project import Project
    from crc_jax.project.api import QUEUE_FIELDS

    paths = Project.open(project_dir).paths
    durable.write_atomic(project_dir / "queue.csv",
                         durable.csv_bytes(QUEUE_FIELDS, [[i, paths[i], "", ""] for i in ids]))


@contextlib.contextmanager
def cases(root: Path):
    """Prepare the crc-jax cases under `root`; yields them; unmounts what it mounted."""
    from crc_jax.project import Project
    from crc_jax.project.settings import RoundSettings

    mounted: list[Path] = []
    try:
        yield build(root, Project, RoundSettings, mounted)
    finally:
        for path in reversed(mounted):
            mounts.unmount(path)


def nothing_left(result: dict) -> list[str]:
    """A refused `init` into a new directory leaves no directory (no marker, no chunks)."""
    workdir = result["workdir"]
    return [f"left behind: {sorted(p.name for p in workdir.iterdir())}"] if workdir.exists() else []


def init_inputs(root: Path, images: Path, odd: Path, case, new_project) -> None:
    """`crc-jax init` given a bad features file, model or option, or a folder of the user's."""
    import numpy as np

    from crc_jax.project.scan import list_images

    paths = list_images(images)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(paths), 8)).astype(np.float32)
    inputs = root / "init_inputs"
    inputs.mkdir()
    np.save(inputs / "array.npy", vectors)
    (inputs / "array.npy").rename(inputs / "features.npz")
    field = "x" * 140_000    # over csv's field limit (131072 characters)
    (inputs / "labels_long.csv").write_text(f"path,label\n{paths[0]},{field}\n")
    (inputs / "features_long.csv").write_text(f"path,f0\n{paths[0]},{'1' * 140_000}\n")
    huge = vectors.copy()
    huge[3] *= 1e9            # one vector 1e9 times the others
    np.savez(inputs / "huge_row.npz", paths=np.array(paths), features=huge)
    np.savez(inputs / "zero_width.npz", paths=np.array(paths),
             features=np.zeros((len(paths), 0), np.float32))
    np.savez(inputs / "zero_rows.npz", paths=np.array([], dtype=str),
             features=np.zeros((0, 8), np.float32))
    (inputs / "empty_folder").mkdir()
    odd_paths = list_images(odd)
    np.savez(inputs / "odd.npz", paths=np.array(odd_paths),
             features=rng.normal(size=(len(odd_paths), 8)).astype(np.float32))
    gray, nan_net, net = inputs / "gray.onnx", inputs / "nan.onnx", inputs / "net.onnx"
    write_conv_net(gray, side=16, channels=1)
    write_conv_net(nan_net, side=16, nan=True)
    write_conv_net(net, side=16)
    meta_255 = inputs / "meta_255.onnx"
    write_conv_net(meta_255, side=16, metadata={"mean": "123.7,116.3,103.5",
                                                "std": "58.4,57.1,57.4"})

    left = "none before; nothing left (no directory, marker or feature chunks)"

    def init(name, given, expect, *extra, **more):
        case(name, given, expect, lambda w: ["init", w, "--images", images, *extra],
             existing=False, check=nothing_left, kept=left, **more)

    init("init --features: a .npy file named .npz", "`crc-jax init DIR --images PHOTOS "
         "--features F.npz`, F.npz written by `np.save` (one array)",
         r"features\.npz: holds one NumPy array \(\.npy data\), not an \.npz archive; write it "
         r"with np\.savez", "--features", inputs / "features.npz")
    init("init --features .npy named .npz, with --labels", "as above, with `--labels "
         "labels.csv` (the labels file is fine)", r"--features .*features\.npz: holds one NumPy "
         r"array", "--features", inputs / "features.npz", "--labels",
         labels_file(inputs / "labels.csv", [(p, str(k % 2)) for k, p in enumerate(paths[:6])]))
    init("init --labels with a field over 128 KB", "`crc-jax init DIR --images PHOTOS --labels "
         "L.csv`, a label of 140,000 characters", r"labels_long\.csv: not a labels CSV \(field "
         r"larger than field limit \(131072\)\)", "--labels", inputs / "labels_long.csv")
    init("init --features CSV with a field over 128 KB", "`--features F.csv`, a value of "
         "140,000 characters", r"features_long\.csv line 2: not a features CSV row \(field "
         r"larger than field limit", "--features", inputs / "features_long.csv")
    init("init --backbone single-channel ONNX", "`--backbone M.onnx`, M taking (N, 1, 16, 16) "
         "images", r"input 'image' has shape \['N', 1, 16, 16\], 1 channel; crc-jax feeds RGB "
         r"images \(3 channels\)", "--backbone", gray)
    init("init --backbone whose output is NaN", "`--backbone M.onnx`, M computing NaN "
         "(a NaN bias)", r"nan\.onnx: its vector for '[^']+' holds NaN or infinite values",
         "--backbone", nan_net)
    init("init --backbone --mean nan", "`--backbone M.onnx --mean nan`",
         r"^error: --mean: values must be finite numbers, got 'nan'$", "--backbone", net,
         "--mean", "nan")
    init("init --backbone --std 1e-40", "`--backbone M.onnx --std 1e-40`",
         r"^error: --std: values must be positive, at least 0\.001", "--backbone", net,
         "--std", "1e-40")
    init("init --backbone with 0-255 metadata", "`--backbone M.onnx` (no --mean), M's metadata "
         "`mean` 123.7,116.3,103.5 (the 0-255 scale)", r"its metadata 'mean' is "
         r"'123\.7,116\.3,103\.5', on the 0-255 pixel scale; .* give --mean "
         r"0\.4851,0\.4561,0\.4059", "--backbone", meta_255)
    init("init --features --feature-dtype float16 underflow", "`--features F.npz "
         "--feature-dtype float16`, one vector 1e9 times the other 29",
         r"--feature-dtype float16: the vector of '[^']+' underflows it \(29 such vectors",
         "--features", inputs / "huge_row.npz", "--feature-dtype", "float16")
    init("init --features of width 0", "`--features F.npz`, features of shape (30, 0)",
         r"zero_width\.npz: its vectors have 0 values \(shape \(30, 0\)\)",
         "--features", inputs / "zero_width.npz")
    case("init --features with 0 rows, empty folder", "`crc-jax init DIR --images EMPTY "
         "--features F.npz`, an empty folder and a file of 0 vectors",
         r"zero_rows\.npz: holds no vectors \(0 rows\)",
         ["init", root / "init_zero_rows", "--images", inputs / "empty_folder", "--features",
          inputs / "zero_rows.npz"], workdir=root / "init_zero_rows", existing=False,
         check=nothing_left, kept=left)

    def odd_name_skipped(result):
        from crc_jax.project import Project

        try:
            paths = Project.open(result["workdir"]).paths
        except Exception as err:  # noqa: BLE001 (reported as the problem)
            return [f"the project does not open: {err}"]
        return [] if len(paths) == 30 and not any("caf" in p for p in paths) else [
            f"{len(paths)} images indexed, expected 30"]

    for option, source in (("--features", inputs / "odd.npz"), ("--backbone", net)):
        case(f"non-UTF-8 file name with {option}", f"an image named `caf\\xe9.png` (Latin-1 "
             f"bytes) in the folder, `crc-jax init DIR --images PHOTOS {option} "
             f"{source.name}`", r"skipped caf\\xe9\.png: its file name is not valid UTF-8",
             lambda w, o=option, f=source: ["init", w, "--images", odd, o, f], existing=False,
             exit=0, check=odd_name_skipped,
             kept="a project of the 30 other images; the file is listed as skipped")

    def users_folder(w):
        w.mkdir()
        (w / "learning_curve.png").write_bytes(b"the user's plot")
        (w / "predictions.csv").write_text("my,own\n1,2\n")

    case("init into a folder of the user's", "`crc-jax init DIR --images PHOTOS`, DIR holding "
         "the user's learning_curve.png and predictions.csv",
         r"is not empty: it holds learning_curve\.png, predictions\.csv, which crc-jax init "
         r"did not write; choose a new or empty directory",
         lambda w: ["init", w, "--images", images], existing=True,
         workdir=root / "init_users_folder", prepare=users_folder, check=names_kept)


def build(root: Path, Project, RoundSettings, mounted: list) -> list[dict]:
    images = root / "images"
    truth = write_digits(images, 30, broken=False)
    by_path = sorted(truth)
    labeled = labels_file(root / "labels.csv", [(p, truth[p]) for p in by_path[:12]])
    more = labels_file(root / "more_labels.csv", [(p, truth[p]) for p in by_path[12:20]])
    # 18 labels whose log lines (each names this long file) overflow the last page of a log
    # holding 12: on a full disk the first write is short and the next one fails
    rest = labels_file(root / f"labels_{'x' * 140}.csv", [(p, truth[p]) for p in by_path[12:]])

    def new_project(directory: Path, *, labels=True, trained=False, image_root=images):
        project, _ = Project.create(directory, image_root, image_size=8,
                                    classes=CLASSES.split(","), progress=False)
        if labels:
            project.import_file(labeled)
        if trained:
            project.next_batch(4, RoundSettings(model="mlp", width=32, epochs=1,
                                                steps_per_epoch=3, flip=False))
        return directory

    base = new_project(root / "project", trained=True)
    out: list[dict] = []
    cant_mount = mounts.unavailable()

    def slug(name):
        return re.sub(r"[^A-Za-z0-9]+", "_", name)

    def case(name, given, expect, args, *, workdir=None, existing=True, prepare=None,
             needs_mount=False, **extra):
        """A case on a copy of the trained project (workdir), unless `workdir` is given."""
        if workdir is None:
            workdir = root / slug(name)
            if existing:
                shutil.copytree(base, workdir)
        if needs_mount and cant_mount:
            extra["skip"] = cant_mount
        elif prepare is not None:
            prepare(workdir)
        args = args(workdir) if callable(args) else args
        out.append(dict(name=name, given=given, module="crc_jax.project.cli", args=list(map(str, args)),
                        workdir=workdir, expect=expect, existing=existing, **extra))

    # --- init
    case("crc-jax init with one class", "`crc-jax init DIR --images PHOTOS --classes a`",
         r"--classes: give at least 2 classes, got 1 \('a'\)",
         lambda w: ["init", w, "--images", images, "--classes", "a"], existing=False)
    odd = root / "images_odd_name"
    shutil.copytree(images, odd)
    shutil.move(noise_png(root / "odd.png", seed=3), os.fsencode(odd) + b"/caf\xe9.png")  # Latin-1

    def odd_name_skipped(result):
        problems = []
        try:
            project = Project.open(result["workdir"])
        except Exception as err:  # noqa: BLE001 (reported as the problem)
            return [f"the project does not open: {err}"]
        if len(project) != len(truth) or any("caf" in p for p in project.paths):
            problems.append(f"{len(project)} images indexed, expected {len(truth)}")
        return problems

    case("non-UTF-8 file name", "an image named `caf\\xe9.png` (Latin-1 bytes) in the folder "
         "given to `crc-jax init`", r"skipped caf\\xe9\.png: its file name is not valid UTF-8",
         lambda w: ["init", w, "--images", odd, "--classes", CLASSES, "--image-size", 8],
         existing=False, exit=0, check=odd_name_skipped,
         kept="a project of the 30 other images; the file is listed as skipped")

    init_inputs(root, images, odd, case, new_project)

    # --- project files damaged or edited
    case("index.csv missing", "the project's index.csv deleted, then `crc-jax status DIR`",
         r"index\.csv: missing", lambda w: ["status", w],
         prepare=lambda w: (w / "index.csv").unlink())

    def truncate_pool(w):
        data = (w / "pool.npy").read_bytes()
        (w / "pool.npy").write_bytes(data[:len(data) // 2])

    case("pool.npy truncated", "the project's pool.npy cut to half, then `crc-jax status DIR`",
         r"pool\.npy: .*(truncated|unreadable)", lambda w: ["status", w], prepare=truncate_pool)

    def rename_class(w):
        meta = json.loads((w / "project.json").read_text())
        meta["classes"][meta["classes"].index("3")] = "three"
        (w / "project.json").write_text(json.dumps(meta, indent=2))

    case("classes edited in project.json", "class `3` renamed `three` in project.json, then "
         "`crc-jax status DIR`", r"project\.json: .*class(es)? .*'3'", lambda w: ["status", w],
         prepare=rename_class)

    def drop_models(w):
        shutil.rmtree(w / "models")

    case("model file missing", "the project's models/ folder deleted, then `crc-jax predict DIR`",
         r"models/round_\d+\.msgpack: missing", lambda w: ["predict", w], prepare=drop_models)

    # --- options
    case("--port out of range", "`crc-jax label DIR --port 99999`",
         r"argument --port: must be a port number in 0\.\.65535, got '99999'",
         lambda w: ["label", w, "--port", 99999])
    case("group size that cannot fill the budget at cold start",
         "`crc-jax next DIR --budget 5 --strategy crc:group_size=4` on a project without labels",
         r"--strategy: 'crc:group_size=4': group_size 4 must divide the budget \(5\)",
         lambda w: ["next", w, "--budget", 5, "--strategy", "crc:group_size=4", *FAST],
         prepare=lambda w: (shutil.rmtree(w), new_project(w, labels=False)))
    case("unknown strategy option at cold start",
         "`crc-jax next DIR --budget 5 --strategy badge:foo=1` on a project without labels",
         r"--strategy: 'badge:foo=1': badge has no option 'foo'",
         lambda w: ["next", w, "--budget", 5, "--strategy", "badge:foo=1", *FAST],
         prepare=lambda w: (shutil.rmtree(w), new_project(w, labels=False)))

    # --- import: a row names one image by its full path, never by its file name alone
    # (before issue 23 each of these labeled a same-named image of the project, exit 0)
    target, fresh_row = by_path[20], (by_path[21], truth[by_path[21]])
    name = Path(target).name
    dup_images = root / "images_with_duplicate"
    shutil.copytree(images, dup_images)
    (dup_images / "kept_out").mkdir()
    shutil.copy(dup_images / target, dup_images / "kept_out" / name)  # same bytes: a duplicate
    for label, reference, why, prepare in (
            ("leaving the images folder", f"../../../../etc/{name}",
             r"leaves the images folder", None),
            ("in a folder the project lacks", f"photos/sub/{target}",
             r"no image of the project at this path", None),
            ("of a duplicate init kept out", f"kept_out/{name}",
             r"no image of the project at this path",
             lambda w: (shutil.rmtree(w), new_project(w, image_root=dup_images)))):
        rows = labels_file(root / f"rows_{slug(label)}.csv",
                           [(reference, truth[target]), fresh_row])
        case(f"import path {label}", f"`crc-jax import DIR FILE.csv`, a row naming "
             f"`{reference}` (the project has `{target}`) and a good row",
             rf"1 of 2 labeled rows name no image of this project: '{re.escape(reference)}' "
             rf"\({why}\); nothing was imported", lambda w, rows=rows: ["import", w, rows],
             prepare=prepare)

    # --- import and export
    def unlabeled_export(w):   # a project with labels and no round yet: no queue.csv
        shutil.rmtree(w)
        new_project(w)

    case("export into the project's queue.csv", "`crc-jax export DIR --out DIR/queue.csv` "
         "before any round (the name of the file `next` writes and `status` reads)",
         r"--out .*queue\.csv: inside the project directory .*; choose a file outside it",
         lambda w: ["export", w, "--out", w / "queue.csv"], prepare=unlabeled_export)
    link = root / "links" / "labels.csv"

    def dangling_link(_w):
        link.parent.mkdir()
        link.symlink_to(root / "links" / "nowhere" / "labels.csv")

    def link_kept(_result):
        return ([] if link.is_symlink() and os.readlink(link) == str(root / "links" / "nowhere" /
                                                                     "labels.csv")
                else ["the user's symbolic link was replaced"])

    case("export onto a dangling symlink", "`crc-jax export DIR --out LINK`, LINK a symbolic "
         "link of the user's pointing to a file that does not exist",
         r"--out .*labels\.csv: already exists \(a symbolic link\); choose a new file",
         lambda w: ["export", w, "--out", link], prepare=dangling_link, check=link_kept)
    predicted_link = root / "links_predict" / "predictions.csv"

    def dangling_predict_link(_w):
        predicted_link.parent.mkdir()
        predicted_link.symlink_to(root / "links_predict" / "nowhere" / "predictions.csv")

    def predict_link_kept(_result):
        return ([] if predicted_link.is_symlink() and os.readlink(predicted_link) == str(
            root / "links_predict" / "nowhere" / "predictions.csv")
                else ["the user's symbolic link was replaced"])

    case("predict onto a dangling symlink", "`crc-jax predict DIR --out LINK`, LINK a symbolic "
         "link of the user's pointing to a file that does not exist",
         r"--out .*predictions\.csv: already exists \(a symbolic link\); choose a new file",
         lambda w: ["predict", w, "--out", predicted_link], prepare=dangling_predict_link,
         check=predict_link_kept)
    shapes = root / "label_studio_wrong_shape.json"
    shapes.write_text(json.dumps([{"data": {"image": by_path[0]},
                                   "annotations": {"result": "3"}}]))
    case("Label Studio JSON of the wrong shape", "`crc-jax import DIR FILE.json`, `annotations` "
         "an object instead of a list",
         r"label_studio_wrong_shape\.json: task 1: 'annotations' is a dict, expected a list",
         lambda w: ["import", w, shapes])
    case("export into a missing folder", "`crc-jax export DIR --out <no such dir>/labels.csv`",
         r"--out .*no_such_dir/labels\.csv: the folder .*no_such_dir does not exist",
         lambda w: ["export", w, "--out", root / "no_such_dir" / "labels.csv"])
    read_only_out = root / "read_only_out"
    read_only_out.mkdir()

    def seal_out(_w):
        mounted.append(mounts.read_only(read_only_out))

    case("export into a read-only folder",
         "`crc-jax export DIR --out <a read-only mount>/labels.csv`",
         r"read_only_out/labels\.csv: [Rr]ead-only file system",
         lambda w: ["export", w, "--out", read_only_out / "labels.csv"], prepare=seal_out,
         needs_mount=True)

    def seal(w):
        mounted.append(mounts.read_only(w))

    case("import into a read-only project", "`crc-jax import DIR FILE.csv`, DIR a read-only "
         "bind mount", r"[Rr]ead-only file system", lambda w: ["import", w, more],
         prepare=seal, needs_mount=True)
    case("next on a read-only project", "`crc-jax next DIR --budget 4`, DIR a read-only bind "
         "mount", r"[Rr]ead-only file system", lambda w: ["next", w, "--budget", 4, *FAST],
         prepare=seal, needs_mount=True)

    def full_disk(name, labels):
        """A project alone on a tiny tmpfs that is then filled to the last byte."""
        disk = root / f"disk_{name}"
        if cant_mount:
            return disk / "project"
        mounted.append(mounts.tmpfs(disk, 256))
        project_dir = new_project(disk / "project", labels=labels)
        mounts.fill(disk)  # the labels log's last page keeps its free bytes, nothing more
        return project_dir

    case("import on a full disk", "`crc-jax import DIR FILE.csv` (18 labels) with DIR alone on "
         "a 256 KiB tmpfs filled to the last byte (the first write is short, the next fails)",
         r"labels\.jsonl: No space left on device",
         lambda w: ["import", w, rest], workdir=full_disk("import", labels=True),
         needs_mount=True)
    case("next on a full disk", "`crc-jax next DIR --budget 4` (cold start), DIR alone on a "
         "256 KiB tmpfs filled to the last byte", r"No space left on device",
         lambda w: ["next", w, "--budget", 4, "--cold-start", "random", *FAST],
         workdir=full_disk("next", labels=False), needs_mount=True)

    # --- the labels log: a whole last line without its newline is an answer like any other
    def strip_newline(w):
        log = w / "labels.jsonl"
        log.write_bytes(log.read_bytes().rstrip(b"\n"))

    def newline_added_answers_kept(result):
        before, after = result["before"]["labels.jsonl"], result["after"]["labels.jsonl"]
        if not after.startswith(before + b"\n"):
            return ["labels.jsonl: the last answer was cut or changed"]
        added = after[len(before) + 1:].count(b"\n")
        return [] if added == 8 else [f"labels.jsonl: {added} lines added, expected 8"]

    case("labels log without its last newline", "labels.jsonl's last line (a whole, "
         "checksummed answer) without its newline, then `crc-jax import DIR FILE.csv` "
         "(8 new labels)", r"^8 new answers imported from 8 labeled rows \(0 already saved, 0 unmapped; "
         r"12 -> 20 labeled\)$",
         lambda w: ["import", w, more], prepare=strip_newline, exit=0,
         check=newline_added_answers_kept,
         kept="labels.jsonl: its last answer kept, a newline added, then the 8 new lines")

    # --- the page
    odd_images = root / "images_page"
    shutil.copytree(images, odd_images)
    outside = noise_png(root / "outside.png", seed=1)
    (odd_images / "zz_link.png").symlink_to(outside)
    noise_png(odd_images / "zz_new\nline.png", seed=2)
    page_project = new_project(root / "page_project", image_root=odd_images)
    paths = Project.open(page_project).paths
    link_id, newline_id = paths.index("zz_link.png"), paths.index("zz_new\nline.png")
    write_queue(page_project, [link_id, newline_id])

    def page_case(name, given, expect, status, method, path, payload=None):
        workdir = root / slug(name)
        shutil.copytree(page_project, workdir)
        out.append(dict(name=name, given=given, module="crc_jax.project.cli",
                        args=["label", str(workdir), "--port", "0"], workdir=workdir,
                        expect=expect, existing=True, exit=130, status=status,
                        request=(method, path, payload), runner=run_page))

    page_case("label for an image the page cannot show",
              "`POST /api/answer` for a queued image whose file is a symlink out of the "
              "images folder", r"image \d+ \(zz_link\.png\) cannot be shown", 409, "POST",
              "/api/answer", {"id": link_id, "label": "1"})
    page_case("newline in an image file name", "`GET /image/ID` of an image named "
              "`zz_new\\nline.png`", r"^image/png, \d+ bytes$", 200, "GET",
              f"/image/{newline_id}")

    def move_images(w):
        meta = json.loads((w / "project.json").read_text())
        meta["images"] = str(root / "images_moved_away")
        (w / "project.json").write_text(json.dumps(meta, indent=2))

    case("images folder moved", "the images folder gone from where project.json says, then "
         "`crc-jax label DIR`", r"images folder .*images_moved_away is missing",
         lambda w: ["label", w, "--port", 0], prepare=move_images,
         timeout=300)   # (before the fix: the page served, every image a 404)

    port = free_port()
    restart = root / "restart_after_kill"
    shutil.copytree(base, restart)
    out.append(dict(name="restart right after a kill", given="`crc-jax label DIR --port P` "
                    "killed (SIGKILL) while a browser holds a connection, then started again "
                    "at once on the same port", module="crc_jax.project.cli",
                    args=["label", str(restart), "--port", str(port)], workdir=restart,
                    expect=r"^interrupted: the labeling page stopped", existing=True,
                    exit=130, port=port, runner=run_after_kill,
                    check=lambda r: [] if re.search(PAGE_LINE, r["proc"].stdout)
                    else ["the restarted page did not serve"]))

    # --- Ctrl-C
    case("Ctrl-C during crc-jax next", "SIGINT once `crc-jax next DIR --budget 4` has begun "
         "training (JIT compiling)", r"^interrupted: the round was not saved",
         # long enough that the round is still training when the signal comes
         lambda w: ["next", w, "--budget", 4, *FAST, "--epochs", 200], exit=130,
         interrupt=("stderr", r"train n="), runner=run_interrupted)
    case("Ctrl-C on the labeling page", "SIGINT to `crc-jax label DIR` while it serves",
         r"^interrupted: the labeling page stopped", lambda w: ["label", w, "--port", 0],
         exit=130, interrupt=("stdout", PAGE_LINE), runner=run_interrupted)
    served_bad_requests(case, images)
    return out


# ---- begin: serve-ml and the page, requests of the wrong shape (issue 32 point 5) ---------
# Each case starts the server on a copy of the trained project, posts one request whose body
# is given as raw bytes (a deeply nested JSON cannot be written by json.dumps), then stops
# it with Ctrl-C: HTTP 400 with a one-line JSON error, exit 130, no traceback, no file
# changed.

ML_LINE = r"Label Studio ML backend: http://127\.0\.0\.1:(\d+)"
DEEP_JSON = b"[" * 100_000 + b"]" * 100_000   # deeper than Python's JSON parser reads
DEEP_PAGE_JSON = b"[" * 30_000 + b"]" * 30_000   # the same under the page's 64 KiB limit


def post_raw(port: int, path: str, body: bytes, headers: dict) -> tuple[int, str]:
    """(status, the reply's "error", or its JSON) of one POST of `body`."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=60) as reply:
            status, raw, kind = reply.status, reply.read(), reply.headers.get_content_type()
    except urllib.error.HTTPError as err:
        status, raw, kind = err.code, err.read(), err.headers.get_content_type()
    if kind != "application/json":
        return status, f"{kind}, {len(raw)} bytes"
    reply_json = json.loads(raw)
    return status, str(reply_json.get("error") or json.dumps(reply_json, sort_keys=True))


def run_served(case: dict) -> dict:
    """The server started; the case's raw POST sent once it serves; Ctrl-C."""
    live = Live(case["args"])
    served = live.wait_for(case["serves"])
    http = (0, "the server did not start")
    if served:
        port = int(served.group(1))
        headers = {"Origin": f"http://127.0.0.1:{port}"} if case["serves"] == PAGE_LINE else {}
        http = post_raw(port, case["path"], case["body"], headers)
    return {"proc": live.finish(interrupt=True), "http": http}


def served_bad_requests(case, images: Path) -> None:
    """Add the cases of this block through build()'s `case` (each on a copy of the
    trained project)."""
    from crc_jax.project.label_studio_config import config_xml

    config = config_xml(CLASSES.split(","))
    task = {"id": 5, "data": {"image": "/data/local-files/?d=images/batch_0/digit_0000.png"}}
    annotation = {"id": 9, "task": 5, "updated_at": "2026-12-01T10:00:00Z",
                  "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                              "value": {"choices": ["0"]}}]}
    project = {"id": 1, "label_config": config}
    hook = {"action": "ANNOTATION_CREATED", "annotation": annotation, "task": task,
            "project": project}
    shapes = [  # (name, given, route, body, expected message)
        ("serve-ml /setup with project \"abc\"", "`{\"project\": \"abc\", \"schema\": ...}`",
         "/setup", {"project": "abc", "schema": config},
         r"^project must be Label Studio's project id .*got \"abc\"$"),
        ("serve-ml webhook with project id \"abc\"", "an annotation webhook, `project.id` "
         "`\"abc\"`", "/webhook", {**hook, "project": {**project, "id": "abc"}},
         r"^project\.id must be Label Studio's project id"),
        ("serve-ml webhook with project a list", "an annotation webhook, `project` `[1]`",
         "/webhook", {**hook, "project": [1]}, r"^project must be an object, got \[1\]$"),
        ("serve-ml webhook with result a string", "an annotation webhook, `annotation.result` "
         "`\"0\"`", "/webhook", {**hook, "annotation": {**annotation, "result": "0"}},
         r"^annotation\.result must be a list, got \"0\"$"),
        ("serve-ml webhook with value a list", "an annotation webhook, "
         "`annotation.result[0].value` `[\"0\"]`", "/webhook",
         {**hook, "annotation": {**annotation, "result": [
             {**annotation["result"][0], "value": ["0"]}]}},
         r"^annotation\.result\[0\]\.value must be an object"),
        ("serve-ml webhook with data a list", "an annotation webhook, `task.data` `[\"x\"]`",
         "/webhook", {**hook, "task": {**task, "data": ["x"]}},
         r"^task\.data must be an object"),
        ("serve-ml webhook with annotations an int", "`ANNOTATIONS_DELETED` with "
         "`annotations` `7`", "/webhook",
         {"action": "ANNOTATIONS_DELETED", "project": project, "annotations": 7},
         r"^annotations must be a list of objects with an integer id, got 7$"),
        ("serve-ml bulk webhook with result a string", "`ANNOTATIONS_CREATED`, "
         "`annotation[0].result` `\"0\"`", "/webhook",
         {**hook, "action": "ANNOTATIONS_CREATED", "task": [task],
          "annotation": [{**annotation, "result": "0"}]},
         r"^annotation\[0\]\.result must be a list"),
        ("serve-ml predict with data a list", "`/predict`, `tasks[0].data` `[\"x\"]`",
         "/predict", {"tasks": [{"id": 5, "data": ["x"]}], "label_config": config},
         r"^tasks\[0\]\.data must be an object"),
        ("serve-ml webhook with deeply nested JSON", "`/webhook`, a body of 100,000 nested "
         "arrays", "/webhook", DEEP_JSON, r"^the JSON is nested too deeply$"),
        ("serve-ml predict with deeply nested JSON", "`/predict`, a body of 100,000 nested "
         "arrays", "/predict", DEEP_JSON, r"^the JSON is nested too deeply$"),
        ("serve-ml setup with deeply nested JSON", "`/setup`, a body of 100,000 nested "
         "arrays", "/setup", DEEP_JSON, r"^the JSON is nested too deeply$"),
    ]
    for name, given, route, body, expect in shapes:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        case(name, f"`crc-jax serve-ml DIR`: POST {given}", expect,
             lambda w: ["serve-ml", w, "--port", 0, "--document-root", images.parent],
             exit=130, status=400, runner=run_served, serves=ML_LINE, path=route, body=raw)
    case("page answer with deeply nested JSON", "`crc-jax label DIR`: POST `/api/answer`, a "
         "body of 30,000 nested arrays (60 KB)", r"^the JSON is nested too deeply$",
         lambda w: ["label", w, "--port", 0], exit=130, status=400, runner=run_served,
         serves=PAGE_LINE, path="/api/answer", body=DEEP_PAGE_JSON)
# ---- end: serve-ml and the page, requests of the wrong shape -------------------------------
