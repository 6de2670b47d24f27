"""The real TFDS build path of the paper's data sets, run offline, and known offline fast.

`tfds.builder(...).download_and_prepare()` runs for real for svhn_cropped, cifar10 and
cifar100 in an empty data directory: every import, the builders' own code and the real
requests/urllib3 stack with TFDS's retry settings, up to the name lookup of the download
host, which fails as it does on a machine without internet (socket.getaddrinfo refuses the
hosts, so the test is offline on any machine). A module missing from the environment
(importlib_resources was one) fails this test; the expected outcome is crc_jax's one-line
DataError saying how to prepare the set elsewhere, after one probe of the host and one
attempt per file: TFDS's own 10 retries with back-off took 213 s per run.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from crc_jax.data import tfds_sets

ROOT = Path(__file__).resolve().parents[1]
# data set: (download host, files TFDS downloads for it)
SETS = {"svhn_cropped": ("ufldl.stanford.edu", 3), "cifar10": ("www.cs.toronto.edu", 1),
        "cifar100": ("www.cs.toronto.edu", 1)}

SCRIPT = """
import collections, json, socket, sys

HOSTS = set(sys.argv[1:-1])
looked_up = collections.Counter()
real_getaddrinfo = socket.getaddrinfo

def offline(host, *args, **kwargs):
    if host in HOSTS:
        looked_up[host] += 1
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (test)")
    return real_getaddrinfo(host, *args, **kwargs)

socket.getaddrinfo = offline
from crc_jax.data import tfds_sets
from crc_jax.errors import DataError

out = {}
for name in sys.argv[-1].split(","):
    looked_up.clear()
    try:
        tfds_sets.load(name)
        out[name] = {"error": None}
    except DataError as err:
        out[name] = {"error": str(err)}
    out[name]["looked_up"] = dict(looked_up)
print("RESULT " + json.dumps(out))
"""


def test_offline_download_runs_the_real_build_path_once_then_says_how_to_prepare(tmp_path):
    env = dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds"))
    hosts = sorted({host for host, _ in SETS.values()})
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *hosts, ",".join(SETS)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])
    for name, (host, files) in SETS.items():
        message = result[name]["error"]
        assert message is not None and "\n" not in message, result[name]
        assert message.startswith(f"could not download {name!r}"), message
        assert f"tfds build {name} --data_dir=DIR" in message
        assert "--config.dataset.data_dir=DIR" in message
        # one probe, then TFDS's own request for each of its files at most once (in
        # parallel: the first failure may cancel the rest): the builder got as far as
        # asking the network, without its 10 retries per file and their back-off
        seen = result[name]["looked_up"]
        # besides its own host, only hosts of sets tried before it: TFDS leaves the other
        # download threads of a failed set running, and on a busy machine one of them may
        # ask for its host while the next set is being tried
        earlier = {SETS[n][0] for n in list(SETS)[:list(SETS).index(name)]}
        assert host in seen and set(seen) - {host} <= earlier, (name, result[name])
        assert 2 <= seen[host] <= 1 + files, (name, result[name])
    assert "Dl Size" not in proc.stderr and "Dl Completed" not in proc.stderr   # no bars


# ------------------------------------------------------------- the probe, on 127.0.0.1

@pytest.fixture
def listening():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]     # closed again when the with block ends


def test_probe_accepts_a_listening_host_and_names_a_refusing_one(listening, monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    assert tfds_sets.unreachable([f"http://127.0.0.1:{listening}/a.mat",
                                  f"http://127.0.0.1:{listening}/b.mat"]) is None
    port = closed_port()
    failure = tfds_sets.unreachable([f"http://127.0.0.1:{port}/a.mat"])
    assert failure.startswith(f"no connection to 127.0.0.1:{port}: ") and "refused" in failure


def test_probe_goes_to_the_proxy_the_environment_names(listening, monkeypatch):
    looked_up = []
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo",
                        lambda host, *a, **k: looked_up.append(host) or real(host, *a, **k))
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{listening}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert tfds_sets.unreachable(["http://no-such-host.invalid/a.mat"]) is None
    assert "no-such-host.invalid" not in looked_up


def test_probe_gives_up_on_a_resolver_that_never_answers(monkeypatch):
    release = threading.Event()

    def hangs(*args, **kwargs):
        release.wait()
        raise socket.gaierror(socket.EAI_AGAIN, "late")

    monkeypatch.setattr(socket, "getaddrinfo", hangs)
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    try:
        failure = tfds_sets.unreachable(["http://example.invalid/a.mat"], timeout=0.2)
    finally:
        release.set()
    assert failure == "no connection to example.invalid:80: no answer within 0.2 s"
