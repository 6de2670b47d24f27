"""The run machinery of experiments, apart from the library: the active-learning loop,
its journal and run directory, resuming, the initial model and in-training checkpoints.
Its config arrives checked and its strategies built (crc_jax.config.validate). The
library (ntk, acquisition, ssl, models, data, train) never imports it."""
