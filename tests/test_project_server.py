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
