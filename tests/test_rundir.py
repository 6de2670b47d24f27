"""One writer per run directory; a different config on an existing directory is refused."""

import pytest

from crc_jax.errors import RunDirError
from crc_jax.run.rundir import RunDir


def test_second_writer_is_refused_and_lock_is_released(tmp_path):
    with RunDir(tmp_path / "run"):
        with pytest.raises(RunDirError, match="in use by another process"):
            with RunDir(tmp_path / "run"):
                pass
    with RunDir(tmp_path / "run"):  # released on exit
        pass


def test_other_config_refused_same_config_accepted(tmp_path):
    cfg = {"seed": 0, "al": {"query_size": 10}, "train": {"progress": True}}
    with RunDir(tmp_path) as rd:
        rd.bind_config(cfg)
        rd.bind_config({**cfg, "train": {"progress": False}})  # cosmetic field
        with pytest.raises(RunDirError, match="al.query_size: 10 -> 20"):
            rd.bind_config({**cfg, "al": {"query_size": 20}})


def test_unwritable_workdir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot be written"):
        with RunDir(blocker / "sub"):
            pass
