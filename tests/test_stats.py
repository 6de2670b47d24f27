"""The report's statistics (experiments/stats.py) against a hand computation on a fixed
small summary.csv: AULC by the trapezoid rule, paired differences to random, t intervals."""

import csv

import numpy as np
import pytest

from experiments import report, stats

COUNTS = (10, 20, 40)          # uneven spacing: the trapezoid weights are 10 and 20
RANDOM = {0: (0.50, 0.60, 0.70), 1: (0.40, 0.60, 0.80), 2: (0.60, 0.60, 0.60)}
SHIFT = {"A": (12, 9, 6), "B": (3, -1, 1)}     # accuracy points added at every count
T_975_2 = 4.302652729911275   # t quantile 0.975 with 2 degrees of freedom (tables: 4.303)


def write_summary(path, *, trials=3, unfinished=True):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["strategy", "trial", "step", "num_labeled", "test_accuracy"])
        for name in ("random", "A", "B"):
            for t in range(trials):
                for step, (n, acc) in enumerate(zip(COUNTS, RANDOM[t])):
                    shift = 0 if name == "random" else SHIFT[name][t] / 100
                    w.writerow([name, t, step, n, f"{acc + shift:.6f}"])
        if unfinished:  # an unfinished trial of A (two counts only): left out of A's AULC
            w.writerow(["A", 3, 0, 10, "0.9"])
            w.writerow(["A", 3, 1, 20, "0.9"])


def test_aulc_and_paired_t_intervals_equal_hand_computation(tmp_path):
    write_summary(tmp_path / "summary.csv")
    table = {r["strategy"]: r for r in stats.aulc_table(report.load_rows([tmp_path]))}
    # random, trial 0: (10·(50+60)/2 + 20·(60+70)/2) / 30 = 1850/30; trial 1: 1900/30; trial 2: 60
    random_aulc = [1850 / 30, 1900 / 30, 60.0]
    mean = np.mean(random_aulc)                       # 61.6667
    half = T_975_2 * (5 / 3) / np.sqrt(3)             # sd = 5/3 by hand
    r = table["random"]
    assert r["trials"] == 3 and r["paired_trials"] == 0
    assert (r["aulc"], r["aulc_lo"], r["aulc_hi"]) == pytest.approx((mean, mean - half, mean + half))

    a = table["A"]                                    # Δ = 12, 9, 6: mean 9, sd 3
    assert a["trials"] == 3 and a["paired_trials"] == 3
    half_a = T_975_2 * 3 / np.sqrt(3)                 # 7.4524
    assert (a["diff"], a["diff_lo"], a["diff_hi"]) == pytest.approx((9, 9 - half_a, 9 + half_a))
    assert a["excludes_zero"]
    b = table["B"]                                    # Δ = 3, -1, 1: mean 1, sd 2
    half_b = T_975_2 * 2 / np.sqrt(3)                 # 4.9683
    assert (b["diff"], b["diff_lo"], b["diff_hi"]) == pytest.approx((1, 1 - half_b, 1 + half_b))
    assert not b["excludes_zero"]


def test_report_writes_statistics_and_plots_with_three_trials(tmp_path):
    write_summary(tmp_path / "summary.csv")
    report.write_report([tmp_path], out_dir=tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "| A | 3 | 70.67 [" in md     # (1850/30 + 12 + 1900/30 + 9 + 60 + 6) / 3
    assert "| +9.00 [1.55, 16.45] * |" in md
    assert "| +1.00 [-3.97, 5.97] |" in md
    assert "paired t interval" in md
    with open(tmp_path / "stats.csv") as f:
        rows = {r["strategy"]: r for r in csv.DictReader(f)}
    assert rows["A"]["excludes_zero"] == "True" and rows["B"]["excludes_zero"] == "False"
    for png in ("learning_curve_ci.png", "paired_difference.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_report_without_enough_trials_has_no_intervals(tmp_path):
    write_summary(tmp_path / "summary.csv", trials=2, unfinished=False)
    report.write_report([tmp_path], out_dir=tmp_path)
    assert "AULC" not in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "paired_difference.png").exists()
    assert np.isnan(stats.t_interval([1.0, 2.0])[1])


def test_same_strategy_from_two_workdirs_is_told_apart(tmp_path):
    for name in ("fixmatch", "supervised"):
        (tmp_path / name).mkdir()
        write_summary(tmp_path / name / "summary.csv")
    rows = report.load_rows([tmp_path / "fixmatch", tmp_path / "supervised"])
    names = {r["strategy"] for r in rows}
    assert names == {"random", "A", "B", "random [supervised]", "A [supervised]",
                     "B [supervised]"}


def test_spreads_are_sample_standard_deviations(tmp_path):
    assert stats.sample_sd([50.0, 60.0, 70.0]) == pytest.approx(10.0)   # ddof = 0: 8.16
    assert np.isnan(stats.sample_sd([1.0]))
    assert stats.sample_sd(np.array([[1.0, 2.0], [3.0, 6.0]]), axis=0) == pytest.approx(
        [np.sqrt(2), 2 * np.sqrt(2)])
    assert np.isnan(stats.sample_sd(np.array([[1.0, 2.0]]), axis=0)).all()
    write_summary(tmp_path / "summary.csv")
    report.write_report([tmp_path], out_dir=tmp_path)
    md = (tmp_path / "report.md").read_text()
    # random at 10 labels: 50, 40, 60 % -> mean 50, sample SD 10 (population SD 8.16)
    assert "| random (n = 3) | 50.00 ± 10.00 |" in md
    assert "mean ± SD" in md and "n − 1" in md
    with open(tmp_path / "report.csv") as f:
        first = next(csv.DictReader(f))
    assert (first["strategy"], first["sd_accuracy"]) == ("random", "10.0000")


def test_paired_p_values_equal_the_t_distribution_by_hand(tmp_path):
    write_summary(tmp_path / "summary.csv")
    table = {r["strategy"]: r for r in stats.aulc_table(report.load_rows([tmp_path]))}
    # A: Δ = 12, 9, 6 -> t = 9 / (3/√3); with 2 degrees of freedom the two-sided p is
    # 1 − t/√(t² + 2) (closed form of Student's t with ν = 2).
    t = 9 / (3 / np.sqrt(3))
    assert table["A"]["p"] == pytest.approx(1 - t / np.sqrt(t * t + 2))
    t = 1 / (2 / np.sqrt(3))                              # B: Δ = 3, -1, 1
    assert table["B"]["p"] == pytest.approx(1 - t / np.sqrt(t * t + 2))
    assert np.isnan(table["random"]["p"])
    assert stats.paired_p([2.0, 2.0, 2.0]) == 0.0 and stats.paired_p([0.0, 0.0, 0.0]) == 1.0
    md = stats.markdown(list(table.values()))
    assert "| +9.00 [1.55, 16.45] * | 0.035 |" in md
    assert "uncorrected for the 2 comparisons to random" in md
    assert (stats.p_text(0.0315), stats.p_text(0.3), stats.p_text(0.0004)) == ("0.032", "0.30",
                                                                               "< 0.001")
