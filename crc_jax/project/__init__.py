"""Label your own images: a project directory from a folder of images to a trained model.

`Project` (crc_jax.project.api) is the loop: `create`/`open`, `next_batch(n)` (train and
pick, label nothing), `add_labels`, `skip`, `undo`, `import_file`, `status`, `predict`.
"""

from crc_jax.project.api import Project
from crc_jax.project.settings import RoundSettings
from crc_jax.project.store import ProjectError

__all__ = ["Project", "ProjectError", "RoundSettings"]
