"""Label your own images: a project directory from a folder of images to a trained model.

`Project` (crc_jax.project.api) is the loop: `create`/`open`, `next_batch(n)` (train and
pick, label nothing; `plan(n)` then `run_round(plan)` when the round is checked first),
`add_labels`, `skip`, `undo`, `import_file`, `status`, `predict`. The `crc-jax` command
is crc_jax.project.cli; the page (server) and the Label Studio ML backend (ml_backend)
share crc_jax.project.web.
"""

from crc_jax.project.api import Project
from crc_jax.project.settings import RoundSettings
from crc_jax.project.store import ProjectError

__all__ = ["Project", "ProjectError", "RoundSettings"]
