"""Empirical vs infinite-width NTK of the MLP and the (BatchNorm-free) CNN, on digits.

For each width and initialization seed, on a fixed class-stratified sample of images:
‖K̃_emp − K̃_inf‖_F/‖K̃_inf‖_F at initialization and after a short full-batch gradient
descent on MSE, λmin and λ⁺min of both kernels, and the overlap of the CRC groups the
two kernels select (plus the Spearman correlation of all group scores). Kernels are
class-trace sums in NTK parameterization (crc_jax.infinite explains why). CIFAR-10 is
added when TFDS has it prepared (`--config.data_dir`); it is skipped otherwise.

Command:  python -m experiments.ntk_compare --config=ntk_compare --workdir=docs/ntk_compare
          (--config=ntk_compare:smoke for a seconds-long run)
Expect:   a few minutes on a 2-core CPU; the distance at initialization falls about like
          width^-1/2 (fitted slope near -0.5), to about 0.05 at width 4096 for the MLP.
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 0                       # the sample and the CRC group partition
    c.seeds = 4                      # initialization seeds per width: 0 .. seeds-1
    c.datasets = ("digits", "cifar10")
    c.data_dir = ""                  # a prepared TFDS directory for cifar10; "" = TFDS default
    c.sample_size = 64               # images in the fixed sample (class-stratified)

    c.models = ("mlp", "cnn")
    c.mlp = ml_collections.ConfigDict()
    c.mlp.widths = (64, 128, 256, 512, 1024, 2048, 4096)
    c.mlp.depth = 2
    c.cnn = ml_collections.ConfigDict()
    c.cnn.widths = (8, 16, 32, 64)        # conv channels w (w, w, 2w); 128 takes minutes per seed on CPU
    c.cnn.dense_ratio = 4                 # dense width = ratio * w (the default CNN has 128 = 4 * 32)

    c.train = ml_collections.ConfigDict()
    c.train.steps = 30               # full-batch gradient descent steps on MSE (0 = no "trained" rows)
    c.train.lr_fraction = 0.5        # lr as a fraction of the GD stability limit 2n / λmax(K_inf)

    c.crc = ml_collections.ConfigDict()
    c.crc.labeled_size = 16          # L: the first images of the sample
    c.crc.group_size = 4             # G
    c.crc.query_size = 12            # labels acquired: the top query_size / G groups

    if arg == "smoke":
        c.seeds = 2
        c.datasets = ("digits",)
        c.sample_size = 24
        c.models = ("mlp", "cnn")
        c.mlp.widths = (16, 64)
        c.cnn.widths = (2, 4)
        c.train.steps = 2
        c.crc.labeled_size = 8
        c.crc.query_size = 8
    elif arg:
        raise ValueError(f"ntk_compare config takes no argument or 'smoke', got {arg!r}")
    return c
