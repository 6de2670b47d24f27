"""The CLI's log lines go through tqdm.write: a progress bar is cleared first, so a log line
always starts a line of its own (absl's handler wrote it after the bar, on the bar's line)."""

import logging
import re
import sys

import pytest
from tqdm.auto import tqdm

from crc_jax.runtime import command


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in command.QUIET_LOGGERS}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, lvl in quiet.items():
        logging.getLogger(name).setLevel(lvl)


def test_log_line_never_shares_a_line_with_a_progress_bar(capsys, restore_logging):
    command.setup_logging()
    bar = tqdm(total=10, desc="training", file=sys.stderr, ascii=True)
    bar.update(3)
    logging.getLogger("crc_jax.run.loop").info("step 0: 20 labels")
    logging.getLogger("absl").warning("`TensorInfo.dtype` is deprecated")  # kept quiet
    bar.update(2)
    bar.close()
    err = capsys.readouterr().err
    pieces = re.split(r"[\r\n]", err)
    assert any(re.fullmatch(r"\d\d:\d\d:\d\d step 0: 20 labels", p) for p in pieces), err
    assert "deprecated" not in err
    assert any(p.startswith("training:") for p in pieces)
