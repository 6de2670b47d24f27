"""Process plumbing, apart from the mathematics: which devices a run uses (devices,
distributed, sharding), the XLA:CPU default set at import (xla_env), Ctrl-C and exit
statuses of a command (interrupt, command), fault injection for the crash tests
(faults), optional dependency groups (extras) and neural-tangents' compatibility shim
(_nt_compat). Nothing is imported here: `import crc_jax` must stay fast."""
