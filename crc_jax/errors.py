"""Errors a user can act on, and the exit statuses commands end with.

Every command ends through crc_jax.runtime.command.run, which turns these errors into one
line on stderr and exit status EXIT_USAGE.
"""

EXIT_USAGE = 2          # a bad argument, config value, input or directory: one `error:` line
EXIT_PEER_LOST = 3      # a process of a multi-process run was lost (experiments.supervisor)
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): one `interrupted:` line


class UsageError(Exception):
    """A bad command-line argument; the message is the one line, naming the argument."""


class ConfigError(ValueError):
    """A config field holds a value that is not allowed. The message names the dotted field;
    `problem` is the message without it, `spec` the strategy spec at fault (if any)."""

    def __init__(self, field: str, message: str, *, spec: str | None = None):
        self.field, self.problem, self.spec = field, message, spec
        super().__init__(f"config.{field}: {message}" if field else message)


class DataError(ValueError):
    """Input data (images, labels, a data directory) that cannot be used, and why."""


class StorageError(RuntimeError):
    """A stored file that cannot be used as it must be: a corrupt journal line, a file that
    cannot be read or repaired (crc_jax.durable)."""


class RunDirError(StorageError):
    """A run directory that cannot be used: another config, a corrupt journal, a second writer."""


class MissingExtra(ImportError):
    """A feature needs an optional dependency group (a pip extra) that is not installed.

    The message is one line naming the feature and the command that installs the extra.
    """


class DeviceUnavailable(RuntimeError):
    """The platform a run asked for (device.require, crc-jax --device) is not the one JAX
    uses; the message is one line with JAX's reason (crc_jax.runtime.devices)."""


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN or infinite; the message names the global step."""
