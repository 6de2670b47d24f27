"""The label-source rules (crc_jax.project.label_sources) as each front uses them: an image's
answer is its latest live source; an update replaces its source's value; a deletion
withdraws its source only; a log written before sources were kept apart reads as it did.

The fronts are the real ones: the labeling page and the ML backend through Flask's test
client, `crc-jax import` through the CLI, over a project of real image files."""

import json
from pathlib import Path

import pytest

from crc_jax import durable
from crc_jax.project import cli
from crc_jax.project import Project, label_sources
from crc_jax.project.api import QUEUE_FIELDS
from crc_jax.project.labels_log import LabelsLog
from crc_jax.project.ml_backend import create_app as ml_app
from crc_jax.project.server import create_app as page_app
from image_folder import write_digits

CONFIG = (Path(__file__).parent / "fixtures" / "label_studio" / "crc_config"
          / "labeling_config.xml").read_text()
OLD_LOG = Path(__file__).parent / "fixtures" / "labels_log_v1"
PAGE = {"Origin": "http://127.0.0.1:8765", "Host": "127.0.0.1:8765"}


# -- the rule alone ----------------------------------------------------------------------

def replay(*events):
    sources = label_sources.Sources()
    for seq, (op, image, source, *rest) in enumerate(events):
        event = {"op": op, "id": image, "source": source}
        if op == "label":
            event["label"] = rest.pop(0)
        if rest:
            event["revision"] = rest[0]
        sources.apply(event, seq)
    return sources


def test_the_latest_live_source_gives_the_answer():
    s = replay(("label", 1, "a", "cat"), ("label", 1, "b", "dog"))
    assert s.answers == {1: "dog"}
    s = replay(("label", 1, "a", "cat"), ("label", 1, "b", "dog"), ("retract", 1, "b"))
    assert s.answers == {1: "cat"}          # b withdrawn: a stands
    s = replay(("label", 1, "a", "cat"), ("label", 1, "b", "dog"), ("label", 1, "a", "fox"))
    assert s.answers == {1: "fox"}          # a updated: the latest again
    s = replay(("label", 1, "a", "cat"), ("skip", 1, "b"))
    assert s.answers == {1: None}
    s = replay(("label", 1, "a", "cat"), ("label", 1, "b", "cat"), ("undo", 1, "page"))
    assert s.answers == {}                  # undo: every source of the image


def test_what_is_news_and_what_is_a_repeat():
    s = replay(("label", 1, "ls", "cat", "2026-12-01T10:00:00Z"))
    event = {"op": "label", "id": 1, "source": "ls", "label": "cat"}
    assert not s.is_news({**event, "revision": "2026-12-01T10:00:00Z"})   # a retry
    assert not s.is_news({**event, "label": "dog", "revision": "2026-12-01T09:00:00Z"})  # stale
    assert s.is_news({**event, "label": "dog", "revision": "2026-12-01T10:00:00.5Z"})
    assert not s.is_news({**event, "revision": "2026-12-01T10:00:00.5Z"})   # saved unchanged
    s = replay(("label", 1, "ls", "cat", "2026-12-01T10:00:00Z"), ("undo", 1, "page"))
    assert not s.is_news({**event, "revision": "2026-12-01T10:00:00Z"})  # undone: not revived
    assert s.is_news({**event, "revision": "2026-12-01T10:00:01Z"})      # submitted again
    s = replay(("label", 1, "page", "cat"), ("undo", 1, "page"))
    assert s.is_news({"op": "label", "id": 1, "source": "page", "label": "cat"})  # answered again
    assert not s.is_news({"op": "retract", "id": 1, "source": "page"})
    assert not s.is_news({"op": "undo", "id": 1, "source": "page"})
    # Fractional seconds or none: compared as times, not as text.
    assert label_sources.newer("2026-12-01T10:00:00.5Z", "2026-12-01T10:00:00Z")
    assert not label_sources.newer("2026-12-01T10:00:00Z", "2026-12-01T10:00:00.5Z")


# -- through the fronts ------------------------------------------------------------------

@pytest.fixture()
def fronts(tmp_path):
    root = tmp_path / "root"
    write_digits(root / "images", 12, seed=0)
    project, _ = Project.create(tmp_path / "p", root / "images", image_size=8,
                                classes=["even", "odd"], progress=False)
    # A queue as `crc-jax next` writes it (the page answers queued images only).
    durable.write_atomic(project.dir / "queue.csv", durable.csv_bytes(
        QUEUE_FIELDS, [[i, project.paths[i], "", ""] for i in (3, 4, 5, 6)]))
    return project, page_app(project).test_client(), ml_app(project, document_root=root).test_client()


def annotate(ml, project, image, ident, label, updated, action="ANNOTATION_CREATED"):
    task = {"id": 100 + image,
            "data": {"image": f"/data/local-files/?d=images/{project.paths[image]}"}}
    annotation = {"id": ident, "task": task["id"], "updated_at": updated, "was_cancelled": False,
                  "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                              "value": {"choices": [label]}}]}
    reply = ml.post("/webhook", json={"action": action, "annotation": annotation, "task": task,
                                      "project": {"id": 1, "label_config": CONFIG}})
    assert reply.status_code == 201, reply.get_json()
    return reply.get_json()["results"][0]


def delete(ml, *ids):
    reply = ml.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 1},
                                      "annotations": [{"id": i} for i in ids]})
    assert reply.status_code == 200, reply.get_json()


def answer(project, image):
    return Project.open(project.dir).answers().get(image, "unlabeled")


def test_cat_dog_cat_ends_cat(fronts):
    project, _, ml = fronts
    annotate(ml, project, 0, 7, "even", "2026-12-01T10:00:00.000001Z")
    annotate(ml, project, 0, 7, "odd", "2026-12-01T10:00:05.000001Z", "ANNOTATION_UPDATED")
    result = annotate(ml, project, 0, 7, "even", "2026-12-01T10:00:09.000001Z",
                      "ANNOTATION_UPDATED")
    assert result["status"] == "saved" and answer(project, 0) == "even"


def test_deleting_one_of_two_equal_annotations_keeps_the_label(fronts):
    project, _, ml = fronts
    annotate(ml, project, 1, 8, "odd", "2026-12-01T10:00:00Z")
    annotate(ml, project, 1, 9, "odd", "2026-12-01T10:01:00Z")
    delete(ml, 8)
    assert answer(project, 1) == "odd"
    delete(ml, 9)
    assert answer(project, 1) == "unlabeled"


def test_an_imported_label_stands_when_the_annotation_is_deleted(fronts, tmp_path, capsys):
    project, _, ml = fronts
    annotate(ml, project, 2, 10, "even", "2026-12-01T10:00:00Z")
    (tmp_path / "labels.csv").write_text(f"path,label\n{project.paths[2]},even\n")
    assert cli.main(["import", str(project.dir), str(tmp_path / "labels.csv")]) == 0
    delete(ml, 10)
    assert answer(project, 2) == "even"
    held = Project.open(project.dir).log.held(2)
    assert {s: h.live for s, h in held.items()} == {"label-studio:1:10": False,
                                                   "import:labels.csv": True}


def test_page_and_label_studio_on_one_image(fronts):
    """The page answers first; an annotation made later in Label Studio is the latest answer;
    once it is deleted the page's answer is back. The page's own conflict rule (a stale tab)
    and its undo (forget the image) hold as before."""
    project, page, ml = fronts
    queued = project.pending()[0]
    assert page.post("/api/answer", json={"id": queued, "label": "even"}, headers=PAGE).status_code == 200
    annotate(ml, project, queued, 11, "odd", "2026-12-01T10:00:00Z")
    assert answer(project, queued) == "odd"
    reply = page.post("/api/answer", json={"id": queued, "label": "even"}, headers=PAGE)
    assert reply.status_code == 409          # a tab that did not see the new answer
    delete(ml, 11)
    assert answer(project, queued) == "even"
    annotate(ml, project, queued, 12, "odd", "2026-12-01T10:05:00Z")
    assert page.post("/api/undo", json={"id": queued}, headers=PAGE).status_code == 200
    assert answer(project, queued) == "unlabeled"
    # The same revision again (a retried webhook, a catch-up): the undo stands.
    assert annotate(ml, project, queued, 12, "odd", "2026-12-01T10:05:00Z")["status"] == \
        "already saved"
    assert answer(project, queued) == "unlabeled"
    annotate(ml, project, queued, 12, "odd", "2026-12-01T10:06:00Z", "ANNOTATION_UPDATED")
    assert answer(project, queued) == "odd"  # submitted again in Label Studio


# -- a log written before sources were kept apart ----------------------------------------

def test_an_old_labels_log_reads_as_it_did(tmp_path):
    """tests/fixtures/labels_log_v1: lines written by crc_jax before this rule (import, page,
    API, a line without a source, webhook lines with their undo-then-label pattern, an
    annotation undone on the page); expected.json holds what that version read back."""
    expected = json.loads((OLD_LOG / "expected.json").read_text())
    path = tmp_path / "labels.jsonl"
    path.write_bytes((OLD_LOG / "labels.jsonl").read_bytes())
    log = LabelsLog(path)
    assert {str(k): v for k, v in log.answers().items()} == expected["answers"]
    assert [[e["op"], e["id"], e.get("source")] for e in log.events()] == expected["ops"]
    # New lines after the old ones; the old lines' sources keep their meaning.
    before = path.read_bytes()
    written = log.record([
        {"op": "label", "id": 10, "label": "odd", "source": "label-studio:1:23",
         "revision": "2026-12-01T10:02:00.000001Z"},   # the undone annotation, caught up
        {"op": "label", "id": 11, "label": "odd", "source": "label-studio:1:99",
         "revision": "2026-12-02T00:00:00Z"},           # another annotation on image 11
        {"op": "retract", "id": 11, "source": "label-studio:1:24"},   # the first one deleted
        {"op": "label", "id": 7, "label": "odd", "source": ""}],      # the unsourced line again
        strict=False)
    assert [e["id"] for e in written] == [11, 11]
    assert path.read_bytes().startswith(before)
    fresh = LabelsLog(path).answers()
    assert 10 not in fresh and fresh[11] == "odd" and fresh[7] == "odd"
    assert {k: v for k, v in fresh.items() if k not in (11,)} == \
        {int(k): v for k, v in expected["answers"].items() if k != "11"}
