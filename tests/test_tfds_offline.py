"""The real TFDS build path of the paper's data sets, run offline.

`tfds.builder(...).download_and_prepare()` runs for real for svhn_cropped, cifar10 and
cifar100 in an empty data directory: every import and the builders' own code, up to the
network request, which fails as it does on a machine without internet. A module missing
from the environment (importlib_resources was one) fails this test; the expected outcome
is crc_jax's one-line DataError saying how to prepare the set elsewhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOSTS = {"svhn_cropped": "ufldl.stanford.edu", "cifar10": "cs.toronto.edu",
         "cifar100": "cs.toronto.edu"}

SCRIPT = """
import json, sys
import requests

requested = []

def offline(self, url, *args, **kwargs):
    requested.append(url)
    raise requests.exceptions.ConnectionError(f"no network (test): {url}")

requests.Session.get = offline
from crc_jax.data import tfds_sets
from crc_jax.errors import DataError

out = {}
for name in sys.argv[1:]:
    requested.clear()
    try:
        tfds_sets.load(name)
        out[name] = {"error": None}
    except DataError as err:
        out[name] = {"error": str(err)}
    out[name]["requested"] = list(requested)
print("RESULT " + json.dumps(out))
"""


def test_offline_download_runs_the_real_build_path_then_says_how_to_prepare(tmp_path):
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *HOSTS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])
    for name, host in HOSTS.items():
        # The builder got as far as asking the network for its own files.
        assert any(host in url for url in result[name]["requested"]), result[name]
        message = result[name]["error"]
        assert message is not None and "\n" not in message, result[name]
        assert message.startswith(f"could not download {name!r}"), message
        assert f"tfds build {name} --data_dir=DIR" in message
        assert "--config.dataset.data_dir=DIR" in message
