"""Errors a user can act on: a bad config value or bad input data.

The CLI turns these into one line on stderr and exit status 2.
"""


class ConfigError(ValueError):
    """A config field holds a value that is not allowed. The message names the dotted field."""

    def __init__(self, field: str, message: str):
        self.field = field
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
