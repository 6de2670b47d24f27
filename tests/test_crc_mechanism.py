"""The mechanism experiment (experiments/mechanism.py) and the replication's table
(experiments/replication.py): the retraining measures what train.fit trains, the analysis
reads the CSV as documented, and each table is recomputed from its committed CSV."""

import csv
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from experiments import mechanism, replication
from experiments.configs import mechanism as mechanism_config

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def moons_setup():
    config = mechanism_config.get_config("smoke")
    return mechanism.domain_setup(config.domains.moons, config), config


def test_project_run_trains_what_fit_trains(moons_setup):
    """Same init, batches and keys as train.fit: the test accuracy fit reports equals the
    one the instrumented run picks by fit's early stopping, and its first labeled-set
    cross-entropy is that of the initialisation."""
    setup, config = moons_setup
    sets = mechanism.labeled_sets(setup, (4, 6), np.random.default_rng(0))
    assert len(sets[4]) == 4 and set(sets[4]) < set(sets[6])
    key = jax.random.PRNGKey(3)
    run = mechanism.project_run(setup, sets[6], key, eval_every=5)
    fitted = mechanism.fit_on(setup, sets[6], key)
    assert run["test_acc"] == pytest.approx(fitted.test_accuracy, abs=1e-9)
    assert run["best_epoch"] == fitted.best_epoch
    assert run["steps"].tolist() == [0, 5, 10, 15, 20]
    v0 = mechanism.init_variables(setup, key)
    logits = setup.eval_apply(v0, setup.pool_x[sets[6]])
    ce0 = -np.mean(np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                                      setup.pool_y[sets[6]][:, None], axis=1))
    assert run["ce"][0] == pytest.approx(ce0, rel=1e-5)


def test_gd_curve_is_full_batch_gradient_descent_on_the_squared_loss(moons_setup):
    setup, _ = moons_setup
    v0 = mechanism.init_variables(setup, jax.random.PRNGKey(0))
    x = jnp.asarray(setup.pool_x[:6])
    y = jax.nn.one_hot(setup.pool_y[:6], 2)

    def loss(p):
        return 0.5 * jnp.mean(jnp.sum((setup.eval_apply({**v0, "params": p}, x) - y) ** 2, -1))

    curve = np.asarray(mechanism.gd_curve(setup.eval_apply, v0, x, y, 0.1, steps=2))
    p1 = jax.tree_util.tree_map(lambda a, g: a - 0.1 * g, v0["params"], jax.grad(loss)(v0["params"]))
    assert curve[0] == pytest.approx(float(loss(v0["params"])), rel=1e-6)
    assert curve[1] == pytest.approx(float(loss(p1)), rel=1e-5)
    assert len(curve) == 3


def test_early_stopping_and_depths():
    assert mechanism.early_stopping_epoch([0.5, 0.7, 0.6, 0.6, 0.9], patience=2) == 2
    assert mechanism.early_stopping_epoch([0.5, 0.7, 0.6, 0.6, 0.9], patience=0) == 5
    steps, curve = np.array([0, 10, 20]), np.array([1.0, 0.05, 0.001])
    assert mechanism.steps_to(steps, curve, 0.1) == 10
    assert mechanism.steps_to(steps, curve, 0.001) == 20
    assert mechanism.steps_to(steps, curve, 1e-4) == math.inf
    assert mechanism.depth_name(0.001) == "0p1pct"


def synthetic_rows(n_instances=6, sign=1.0):
    """Instances where GD speed and test accuracy follow the trained-model score (sign=1)
    or run against it (sign=-1)."""
    rows = []
    rng = np.random.default_rng(0)
    for i in range(n_instances):
        scores = np.sort(rng.uniform(1, 2, 4))[::-1]          # top, median, random, bottom
        for pick, s in zip(mechanism.PICKS, scores):
            speed = sign * s
            rows.append({"domain": "moons", "trial": i, "size": 4, "pick": pick,
                         "score_trained_last": s, "score_trained_all": s, "score_init_last": -s,
                         "score_init_all": rng.uniform(), "gd_ratio_1000": 10.0 ** (-speed),
                         "gd_steps_1pct": 100 - 10 * speed, "proj_ratio_f1": 0.5,
                         "test_acc": 0.5 + 0.1 * speed, "test_acc_final": 0.5})
    return rows


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_summary_reads_speed_as_higher_is_better(sign):
    table = mechanism.summarize(synthetic_rows(sign=sign), reps=200)

    def get(kind, pred, outcome):
        return next(r for r in table if r["kind"] == kind and r["predictor"] == pred
                    and r["outcome"] == outcome)

    for outcome in ("gd_speed_1000", "gd_pace_1pct", "test_acc"):
        assert get("spearman", "score_trained_last", outcome)["mean"] == pytest.approx(sign)
        assert get("spearman", "score_init_last", outcome)["mean"] == pytest.approx(-sign)
        paired = get("top_vs_bottom", "score_trained_last", outcome)
        assert (paired["wins"], paired["losses"]) == ((6, 0) if sign > 0 else (0, 6))
        assert paired["sign_p"] == pytest.approx(2 * 0.5 ** 6)
    assert math.isnan(get("spearman", "score_trained_last", "proj_speed_f1")["mean"])   # constant
    md = mechanism.markdown(synthetic_rows(sign=sign), reps=200)
    assert f"= {sign:+.2f} [{sign:+.2f}, {sign:+.2f}] over 6 instances" in md


def unmarked(page) -> str:
    """A committed page without experiments.tables' markers (each alone on its line, a blank
    line between it and the table)."""
    return re.sub(r"<!-- table:[A-Za-z0-9_.-]+ -->\n\n|\n\n<!-- /table -->", "", page.read_text())


def test_mechanism_table_recomputes_from_the_committed_csv():
    path = ROOT / "docs" / "results" / "mechanism" / "instances.csv"
    if not path.exists():
        pytest.skip("no committed mechanism results")
    table = unmarked(ROOT / "docs" / "results" / "mechanism" / "table.md")
    assert mechanism.table_from_csv(path) == table


def test_replication_paired_t_matches_scipy(tmp_path):
    rng = np.random.default_rng(1)
    base = rng.normal(85, 2, 20)
    trials = {str(t): {"random": b, "crc:subset=all,group_size=5": b + rng.normal(0.5, 1.5),
                       "crc:group_size=5": b + rng.normal(0, 1.5)} for t, b in enumerate(base)}
    path = tmp_path / "trials.csv"
    replication.write_trials(path, trials)
    with open(path) as f:
        assert next(csv.reader(f)) == ["trial", "random", "crc:group_size=5",
                                       "crc:subset=all,group_size=5"]
    md = replication.table_from_csv(path)
    back = replication.read_trials(path)
    a = np.array([v["crc:subset=all,group_size=5"] for v in back.values()])
    b = np.array([v["random"] for v in back.values()])
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval()
    want = f"{(a - b).mean():+.2f} [{ci.low:+.2f}, {ci.high:+.2f}] | {ref.statistic:.2f} | {ref.pvalue:.3g} |"
    assert want in md
    assert f"{b.mean():.2f} ± {b.std(ddof=1):.2f}" in md


def test_replication_table_recomputes_from_the_committed_csv():
    """summary.csv (accuracy per trial and step) -> trials.csv (AULC per trial) -> table.md."""
    folder = ROOT / "docs" / "results" / "replication"
    if not (folder / "trials.csv").exists():
        pytest.skip("no committed replication results")
    assert replication.trials_from_summary(folder) == replication.read_trials(folder / "trials.csv")
    assert replication.table_from_csv(folder / "trials.csv") == unmarked(folder / "table.md")
