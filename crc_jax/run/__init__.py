"""The run machinery of experiments, apart from the library: the active-learning loop,
its journal and run directory, in-training checkpoints, config validation and fault
injection. The library (ntk, acquisition, ssl, models, data, train) never imports it."""
