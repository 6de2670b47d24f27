"""The labeling page's HTTP API (Flask test client): answers saved at once, conflicts between
tabs, images served by id only, cross-origin and rebinding requests refused, a round from
the page."""

import os
import time

import pytest

from crc_jax.project import Project, RoundSettings
from crc_jax.project.server import create_app
from image_folder import write_digits

ORIGIN = "http://127.0.0.1:8765"
SETTINGS = RoundSettings(model="mlp", width=32, epochs=1, steps_per_epoch=3, flip=False)


@pytest.fixture
def app_project(tmp_path):
    truth = write_digits(tmp_path / "images", 40)
    project, _ = Project.create(tmp_path / "proj", tmp_path / "images", image_size=8,
                                classes=[str(d) for d in range(10)], progress=False)
    project.next_batch(10, RoundSettings(cold_start="random"))
    app = create_app(project, settings=SETTINGS, budget=10)
    return app.test_client(), project, truth


def post(client, url, payload, **headers):
    headers = {"Origin": ORIGIN, "Host": "127.0.0.1:8765", **headers}
    return client.post(url, json=payload, headers=headers)


def get(client, url):
    return client.get(url, headers={"Host": "127.0.0.1:8765"})


def test_answers_are_saved_before_the_reply(app_project):
    client, project, truth = app_project
    state = get(client, "/api/state").get_json()
    assert state["total"] == 10 and state["done"] == 0 and state["classes"][0] == "0"
    first, second = state["queue"][0], state["queue"][1]
    r = post(client, "/api/answer", {"id": first["id"], "label": str(truth[first["path"]])})
    assert r.status_code == 200
    assert Project.open(project.dir).labels() == {first["id"]: str(truth[first["path"]])}
    assert post(client, "/api/answer", {"id": second["id"], "skip": True}).status_code == 200
    state = get(client, "/api/state").get_json()
    assert state["done"] == 2 and state["labeled"] == 1
    assert post(client, "/api/undo", {"id": second["id"]}).status_code == 200
    assert get(client, "/api/state").get_json()["done"] == 1
    assert [e["op"] for e in project.log.events()] == ["label", "skip", "undo"]


def test_second_tab_conflict_and_bad_answers(app_project):
    client, project, truth = app_project
    item = get(client, "/api/state").get_json()["queue"][0]
    assert post(client, "/api/answer", {"id": item["id"], "label": "3"}).status_code == 200
    assert post(client, "/api/answer", {"id": item["id"], "label": "3"}).status_code == 200  # same: no-op
    r = post(client, "/api/answer", {"id": item["id"], "label": "4"})  # the other tab
    assert r.status_code == 409 and "already has the answer" in r.get_json()["error"]
    not_queued = next(i for i in range(len(project)) if i not in project.queue_ids())
    r = post(client, "/api/answer", {"id": not_queued, "label": "4"})
    assert r.status_code == 400 and "not in the queue" in r.get_json()["error"]
    assert post(client, "/api/answer", {"id": item["id"], "label": "cat"}).status_code == 400
    assert post(client, "/api/answer", {"id": 10_000, "label": "3"}).status_code == 400
    assert post(client, "/api/answer", {"id": "1", "label": "3"}).status_code == 400
    assert len(project.log.events()) == 1


def test_images_by_id_only(app_project, tmp_path):
    client, project, _ = app_project
    r = get(client, "/image/0")
    assert r.status_code == 200 and r.data == (project.images_root / project.paths[0]).read_bytes()
    assert get(client, f"/image/{len(project)}").status_code == 404
    for url in ("/image/../../project.json", "/image/%2e%2e%2fproject.json", "/image/-1",
                "/images/../proj/labels.jsonl", "/static/../api.py"):
        assert get(client, url).status_code == 404, url
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    target = project.images_root / project.paths[1]
    target.unlink()
    os.symlink(secret, target)  # a link leaving the images folder
    assert get(client, "/image/1").status_code == 404


def test_formats_browsers_cannot_show_come_as_png(app_project):
    import io

    import numpy as np
    from PIL import Image

    client, project, _ = app_project
    tiff = next(i for i, p in enumerate(project.paths) if p.endswith(".tif"))  # 16-bit grayscale
    r = get(client, f"/image/{tiff}")
    assert r.status_code == 200 and r.mimetype == "image/png"
    shown = np.asarray(Image.open(io.BytesIO(r.data)))
    assert shown.shape == (8, 8, 3)
    assert np.array_equal(shown, np.asarray(project.pool()[tiff]))  # the pool's 8x8 scan


def test_other_origins_and_hosts_are_refused(app_project):
    client, project, _ = app_project
    item = get(client, "/api/state").get_json()["queue"][0]
    payload = {"id": item["id"], "label": "3"}
    assert post(client, "/api/answer", payload, Origin="http://evil.example").status_code == 403
    r = client.post("/api/answer", json=payload,
                    headers={"Host": "127.0.0.1:8765", "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = client.post("/api/answer", data="id=1&label=3",  # a plain HTML form from elsewhere
                    headers={"Host": "127.0.0.1:8765",
                             "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    r = client.get("/api/state", headers={"Host": "attacker.example:8765"})
    assert r.status_code == 403
    assert post(client, "/api/next-round", {"budget": 5}, Origin="http://evil.example").status_code == 403
    assert project.log.events() == [] and len(project.rounds()) == 1


def test_next_round_from_the_page(app_project):
    client, project, truth = app_project
    for item in get(client, "/api/state").get_json()["queue"]:
        post(client, "/api/answer", {"id": item["id"], "label": str(truth[item["path"]])})
    assert post(client, "/api/next-round", {"budget": 0}).status_code == 400
    assert post(client, "/api/next-round", {"budget": 5}).status_code == 202
    deadline = time.time() + 300
    while time.time() < deadline:
        state = get(client, "/api/state").get_json()
        if not state["round"]["running"]:
            break
        assert post(client, "/api/next-round", {"budget": 5}).status_code == 409
        time.sleep(0.5)
    assert state["round"]["phase"] == "done", state["round"]
    assert state["rounds"] == 2 and state["total"] == 5 and state["done"] == 0
    assert len(project.rounds()) == 2 and not project.rounds()[-1]["cold_start"]


def test_a_file_replaced_with_the_same_size_and_time_is_neither_shown_nor_labeled(tmp_path):
    """A queued file replaced by another picture of the same size and modification time
    (`cp -p`, `rsync -a`), after the page showed it once: it is shown no more and takes
    no label (a label would go on the pool image the annotator did not see)."""
    import shutil

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for k in range(6):   # uncompressed BMPs of one side: every file has the same size
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            tmp_path / "images" / f"img_{k}.bmp")
    project, _ = Project.create(tmp_path / "proj", tmp_path / "images", image_size=8,
                                classes=["a", "b"], progress=False)
    project.next_batch(2, RoundSettings(cold_start="random"))
    client = create_app(project, settings=SETTINGS, budget=2).test_client()
    victim = project.queue_ids()[0]
    path = project.images_root / project.paths[victim]
    assert get(client, f"/image/{victim}").data == path.read_bytes()     # shown once
    other = next(p for p in sorted((tmp_path / "images").iterdir()) if p != path)
    before = path.stat()
    shutil.copyfile(other, path)                                         # another picture
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))          # same mtime (cp -p)
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    r = get(client, f"/image/{victim}")
    assert r.status_code == 404 and "changed since init" in r.get_json()["error"]
    r = post(client, "/api/answer", {"id": victim, "label": "a"})
    assert r.status_code == 409 and "changed since init" in r.get_json()["error"]
    assert Project.open(project.dir).labels() == {}


def test_an_image_that_cannot_be_shown_says_why(app_project):
    client, project, _ = app_project
    item = get(client, "/api/state").get_json()["queue"][0]
    (project.images_root / item["path"]).unlink()
    r = get(client, f"/image/{item['id']}")
    assert r.status_code == 404
    assert r.get_json()["error"] == (f"image {item['id']} ({item['path']}) cannot be shown: its "
                                     f"file is missing from {project.images_root.resolve()}")


def features_project(tmp_path, truth):
    """A `--features FILE` project over the digits folder (vectors: one-hot of the digit)."""
    import numpy as np

    from crc_jax.project import features
    from crc_jax.project.scan import list_images

    paths = list_images(tmp_path / "images")
    vectors = np.eye(10, dtype=np.float32)[[truth.get(p, 0) for p in paths]] + 0.1
    np.savez(tmp_path / "emb.npz", paths=np.array(paths), features=vectors)
    project, _ = Project.create(tmp_path / "fproj", tmp_path / "images",
                                classes=[str(d) for d in range(10)], progress=False,
                                features=features.embeddings_file(tmp_path / "emb.npz"))
    project.next_batch(4, RoundSettings(ssl="mean_teacher", model="linear", cold_start="random"))
    return project


def test_the_page_shows_and_labels_a_features_file_project(tmp_path):
    truth = write_digits(tmp_path / "images", 12, broken=False)
    project = features_project(tmp_path, truth)
    assert all(len(h) == 64 for h in project.hashes)   # init read the files once
    client = create_app(project, budget=4).test_client()
    state = get(client, "/api/state").get_json()
    assert state["notice"] == ""
    for item in state["queue"]:
        r = get(client, f"/image/{item['id']}")
        assert r.status_code == 200 and r.mimetype.startswith("image/")
        r = post(client, "/api/answer", {"id": item["id"], "label": str(truth[item["path"]])})
        assert r.status_code == 200, r.get_json()
    assert {project.paths[i]: c for i, c in Project.open(project.dir).labels().items()} == \
        {q["path"]: str(truth[q["path"]]) for q in state["queue"]}


def test_a_features_project_without_its_files_is_refused_at_start(tmp_path):
    from crc_jax.project import ProjectError
    from crc_jax.project.server import make_server

    truth = write_digits(tmp_path / "images", 6, broken=False)
    project = features_project(tmp_path, truth)
    for path in project.paths:
        (tmp_path / "images" / path).unlink()
    with pytest.raises(ProjectError, match=r"none of the 6 image files of this project is in .*"
                                           r"a features project's pool holds vectors only"):
        make_server(project, port=0)


def test_an_older_features_project_is_shown_with_a_notice(tmp_path):
    """index.csv without sha256 (made before init recorded them): the files are shown as
    they are, and the page says it cannot check them."""
    import json
    import shutil
    from pathlib import Path

    fixtures = Path(__file__).resolve().parent / "fixtures" / "format_v2_kindless"
    shutil.copytree(fixtures / "images", tmp_path / "images")
    shutil.copytree(fixtures / "features", tmp_path / "features")
    meta = json.loads((tmp_path / "features" / "project.json").read_text())
    meta["images"] = str(tmp_path / "images")
    (tmp_path / "features" / "project.json").write_text(json.dumps(meta))
    project = Project.open(tmp_path / "features")
    client = create_app(project, budget=2).test_client()
    state = get(client, "/api/state").get_json()
    assert "records no sha256 for 8 of the 8 images" in state["notice"]
    item = state["queue"][0]
    r = get(client, f"/image/{item['id']}")
    assert r.status_code == 200 and r.data == (tmp_path / "images" / item["path"]).read_bytes()
    assert post(client, "/api/answer", {"id": item["id"], "label": "odd"}).status_code == 200


def test_bad_request_shapes_are_400_never_500(app_project):
    """JSON nested deeper than the parser reads (a RecursionError before), and every field
    of each request replaced by a value of every other JSON type: a 400 (or 409 for an
    answer the state refuses) with a one-line JSON error."""
    client, project, _ = app_project
    headers = {"Origin": ORIGIN, "Host": "127.0.0.1:8765"}
    deep = "[" * 30_000 + "]" * 30_000   # under the page's 64 KiB request limit
    for url in ("/api/answer", "/api/undo", "/api/next-round"):
        r = client.post(url, data=deep, content_type="application/json", headers=headers)
        assert r.status_code == 400 and r.get_json()["error"] == "the JSON is nested too deeply"
    queued = project.queue_ids()[0]
    for url, valid in (("/api/answer", {"id": queued, "label": "3"}),
                       ("/api/answer", {"id": queued, "skip": True}),
                       ("/api/undo", {"id": queued}), ("/api/next-round", {"budget": 0})):
        for key in [None, *valid]:
            for value in ("abc", 7, -1, 1.5, True, None, [], [1], {}, {"a": 1}, deep[:200]):
                if url == "/api/next-round" and value == 7:
                    continue   # a valid budget: it would start a round
                payload = value if key is None else {**valid, key: value}
                r = post(client, url, payload)
                assert r.status_code < 500, (url, key, value, r.data[:300])
                if r.status_code >= 400:
                    assert "\n" not in r.get_json()["error"], (url, key, value)
