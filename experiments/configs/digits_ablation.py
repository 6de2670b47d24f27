"""The CPU-scale CRC ablation on scikit-learn's 8x8 digits: group size, NTK parameters, start.

digits_study's protocol (FixMatch MLP, dropout 0.25, Q0 = 20 (2 per class), Q = 10,
5 acquisitions, 10 trials; trial k starts every strategy of a run from the same labeled set,
so strategies are paired by trial) with the questions a reader of the paper asks first:

  * (no variant) CRC with group size G in {1, 2, 5, 10} on the last-layer NTK and on all
    parameters (`crc:group_size=G`, `crc:subset=all,group_size=G`), and random.
  * `:near_duplicate` a badly conditioned start: per class a random anchor and its nearest
    image of the same class (crc_jax/data/initial_sets.py); random and CRC (G = 5, last).
  * `:spread` a well spread start: per class a random image and the image of that class
    farthest from it (farthest-point sampling); random and CRC (G = 5, last).

A variant's trial k draws its anchors from the same (seed, k) generator as the others, but
its initial set differs, so the paired difference to random is read within one variant.

Command:  nice -n 10 experiments/run_digits_ablation.sh   (one workdir per strategy or
          variant under runs/digits_ablation/, resumable; then the reports)
          or one part:  python -m experiments.main --config=digits_ablation:spread --workdir=DIR
Expect:   hours on a shared 2-core CPU; docs/results/digits_ablation/ holds what this machine gave.
"""

from experiments.configs import base, digits_study

GROUP_SIZES = (1, 2, 5, 10)
STRATEGIES = ("random",) + tuple(
    f"crc:group_size={g}" for g in GROUP_SIZES) + tuple(
    f"crc:subset=all,group_size={g}" for g in GROUP_SIZES)
STARTS = ("near_duplicate", "spread")


def get_config(arg=None):
    options = base.parse_variant(arg, allowed=STARTS)
    if options & {"val"} or len(options) > 1:
        raise ValueError(f"digits_ablation takes no argument or one of {', '.join(STARTS)}, got {arg!r}")
    c = digits_study.get_config()
    c.strategies = STRATEGIES
    if options:
        c.al.initial_rule = options.pop()
        c.strategies = ("random", "crc")
    return c
