"""The practitioner's loop end to end on real image files, through the Python API.

init on a folder of PNG/JPEG/WebP/BMP/TIFF digits (several sizes and modes, broken files,
a duplicate) -> cold-start batch (CRC on a random model) -> a simulated annotator labels
each queue -> several rounds of FixMatch + CRC. The model's accuracy on the whole pool
(checked against the true digits) rises over the rounds, and the labels log holds exactly
the answers given.
"""

import numpy as np
import pytest

from crc_jax.project import Project, RoundSettings
from image_folder import write_digits

SETTINGS = RoundSettings(model="mlp", width=128, epochs=5, steps_per_epoch=20, flip=False)


def pool_accuracy(project, truth) -> float:
    rows = project.predict()
    return float(np.mean([r["predicted"] == str(truth[r["path"]]) for r in rows]))


def test_rounds_from_image_files_raise_accuracy(tmp_path):
    truth = write_digits(tmp_path / "images", 300)
    project, scanned = Project.create(tmp_path / "proj", tmp_path / "images", image_size=8,
                                      classes=[str(d) for d in range(10)], progress=False)
    assert len(project) == 300 and len(scanned.skipped) == 3 and len(scanned.duplicates) == 1

    given, accuracies = {}, []
    for round_index in range(4):
        ids = project.next_batch(20, SETTINGS)
        assert len(set(ids)) == 20 and not set(ids) & set(given)  # new images only
        entry = project.rounds()[-1]
        assert entry["cold_start"] == (round_index == 0)
        queue = project.queue()
        assert [int(r["id"]) for r in queue] == ids
        assert all(r["path"] == project.paths[i] for r, i in zip(queue, ids))
        if round_index == 0:
            assert all(r["predicted"] == "" for r in queue)  # nothing trained yet
        else:
            accuracies.append(pool_accuracy(project, truth))
            assert all(r["predicted"] in project.classes for r in queue)
            assert all(0.0 < float(r["confidence"]) <= 1.0 for r in queue)
        answers = {i: str(truth[project.paths[i]]) for i in ids}  # the simulated annotator
        assert project.add_labels(answers) == 20
        given.update(answers)

    assert project.labels() == given
    logged = [(e["op"], e["id"], e["label"]) for e in project.log.events()]
    assert logged == [("label", i, c) for i, c in given.items()]  # nothing lost or doubled
    assert accuracies[-1] >= accuracies[0] + 0.05, accuracies
    assert accuracies[-1] >= 0.5, accuracies

    status = project.status()
    assert status["labeled"] == 80 and sum(status["labels_per_class"].values()) == 80
    assert status["rounds"] == 4 and status["pending"] == 0
    est = status["accuracy"]
    assert est["round"] == 3 and est["checked"] == 20
    queue_rounds = {e["step"]: e for e in project.rounds()}
    right = sum(queue_rounds[3]["classes"][p] == given[i]
                for i, p in zip(queue_rounds[3]["queue"], queue_rounds[3]["predicted"]))
    assert est["correct"] == right and est["low"] <= est["accuracy"] <= est["high"]
    assert (project.dir / "learning_curve.png").stat().st_size > 1000


def test_rerun_of_a_round_picks_the_same_batch(tmp_path):
    """Keys come from (seed, round): a round redone (after a crash) picks what it picked."""
    write_digits(tmp_path / "images", 60, broken=False)
    picks = []
    for name in ("a", "b"):
        project, _ = Project.create(tmp_path / name, tmp_path / "images", image_size=8,
                                    classes=[str(d) for d in range(10)], progress=False)
        picks.append(project.next_batch(10, SETTINGS))
    assert picks[0] == picks[1]
    random_pick = project.next_batch(10, RoundSettings(cold_start="random", seed=1))
    assert random_pick != picks[1]


@pytest.mark.parametrize("budget", [0, 61])
def test_budget_the_pool_cannot_meet_is_refused(tmp_path, budget):
    write_digits(tmp_path / "images", 60, broken=False)
    project, _ = Project.create(tmp_path / "p", tmp_path / "images", image_size=8,
                                classes=[str(d) for d in range(10)], progress=False)
    with pytest.raises(ValueError, match="budget"):
        project.next_batch(budget, SETTINGS)
    assert not (project.dir / "queue.csv").exists() and project.rounds() == []
