"""A paired comparison of every baseline family on scikit-learn's 8x8 digits (2-core CPU).

FixMatch on the demo's MLP (digits_fixmatch's training settings) with dropout 0.25 before
the head (needed by BALD; the same model for every strategy), every registered strategy
but greedy CRC: random, entropy, margin, least confidence, EGL, CRC (last-layer NTK,
G = 5), CRC on the infinite-width MLP kernel, BADGE, core-set, TypiClust, ProbCover and
BALD; Q0 = 20 (2 per class), Q = 10, 5 acquisitions (up to 70 labels), 10 trials. Trial k
starts every strategy
from the same labeled set (drawn from (seed, k)) and trains its step-0 model with the
same keys, so differences between strategies are paired by trial. The report adds the
area under each learning curve and its paired difference to random with a 95% paired-t
interval (experiments/stats.py).

Variant `digits_study:supervised`: the same protocol, supervised training, random only
(the "no SSL" row; run it into its own workdir and pass both to experiments.report).

Command:  python -m experiments.main --config=digits_study --workdir=runs/digits_study
          python -m experiments.main --config=digits_study:supervised --workdir=runs/digits_study_supervised
          python -m experiments.report runs/digits_study runs/digits_study_supervised --out runs/digits_study
          or experiments/run_digits_study.sh: one workdir per strategy, each with its own
          summary.csv as soon as it finishes (how docs/results.md's figures were made).
Expect:   about an hour on a shared 2-core CPU (measured: 64 min, load average 13-24); margin,
          confidence, TypiClust and BADGE above random in AULC (docs/results.md, docs/results/digits_study).
"""

from experiments.configs import digits_fixmatch

STRATEGIES = ("random", "entropy", "margin", "confidence", "egl", "crc", "crc_infinite:arch=mlp",
              "badge", "coreset", "typiclust", "probcover", "bald")


def get_config(arg=None):
    c = digits_fixmatch.get_config()
    c.trials = 10
    c.strategies = STRATEGIES
    c.model.dropout = 0.25
    c.al.initial_size = 20
    c.al.query_size = 10
    c.al.group_size = 5
    c.al.steps = 5
    if arg == "supervised":
        c.ssl.name = "supervised"
        c.strategies = ("random",)
    elif arg:
        raise ValueError(f"digits_study takes no argument or 'supervised', got {arg!r}")
    return c
