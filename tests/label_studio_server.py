"""A real Label Studio on 127.0.0.1 for the slow tests (tests/test_label_studio_server.py).

Label Studio is installed from the package registry into its own virtual environment by
.ci/install_label_studio (`make test-label-studio` runs it first). It is started the way
docs/labeling.md ("With Label Studio") says: the environment variables of that section's
first code block, read from the file here, with the document root and the data folder in
temporary folders, and an API token given at start.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
VERSION = "1.23.2"  # as pinned in .ci/install_label_studio
TOKEN = "crcjax0test0token0123456789"
USER, PASSWORD = "admin@example.com", "crc-jax-test-password"


def venv() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crc_jax" / \
        f"label-studio-{VERSION}"
    return Path(os.environ.get("LABEL_STUDIO_VENV", default))


def installed() -> bool:
    return (venv() / "bin" / "label-studio").exists()


def documented_environment(document_root: Path) -> dict:
    """The `export NAME=value` lines of docs/labeling.md's Label Studio block, as a dict;
    the document root is this test's."""
    text = (ROOT / "docs" / "labeling.md").read_text()
    block = re.search(r"<!-- label-studio-env -->\n```bash\n(.*?)```", text, re.S).group(1)
    env = {}
    for line in block.splitlines():
        match = re.match(r"export (\w+)=(\S+)", line)
        if match:
            env[match.group(1)] = match.group(2)
    assert "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT" in env, block
    env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(document_root)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudio:
    """A started server: its URL and an authenticated requests session."""

    def __init__(self, url: str, document_root: Path, log: Path):
        self.url, self.document_root, self.log = url, document_root, log
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {TOKEN}"

    def call(self, method: str, path: str, **kwargs):
        response = self.http.request(method, self.url + path, timeout=120, **kwargs)
        assert response.status_code < 400, (method, path, response.status_code, response.text[:800])
        return response.json() if response.content else None

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.http.get(self.url + path, timeout=60, **kwargs)

    def tasks(self, project: int, ordering=None) -> list:
        """Every task of a project (with annotations and predictions), optionally sorted by a
        data-manager view (e.g. ["tasks:data.crc_rank"])."""
        query = f"/api/tasks?project={project}&fields=all&page_size=1000"
        if ordering:
            view = self.call("POST", "/api/dm/views",
                             json={"project": project, "data": {"ordering": ordering}})
            query += f"&view={view['id']}"
        return self.call("GET", query)["tasks"]

    def export(self, project: int, export_type: str) -> bytes:
        response = self.get(f"/api/projects/{project}/export?exportType={export_type}")
        assert response.status_code == 200, response.text[:500]
        return response.content


@contextlib.contextmanager
def running(document_root: Path, data_dir: Path):
    """Start Label Studio (the installed one) and stop it afterwards."""
    port = free_port()
    env = dict(os.environ, **documented_environment(document_root),
               LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), COLLECT_ANALYTICS="false")
    log = data_dir / "label_studio.log"
    command = [str(venv() / "bin" / "label-studio"), "start", "--no-browser",
               "--data-dir", str(data_dir), "--internal-host", "127.0.0.1", "--port", str(port),
               "--username", USER, "--password", PASSWORD, "--user-token", TOKEN,
               "--enable-legacy-api-token"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=data_dir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = LabelStudio(f"http://127.0.0.1:{port}", document_root, log)
    try:
        deadline = time.time() + 300
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if server.get("/api/projects").status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, "Label Studio did not start:\n" + log.read_text()[-3000:]
            time.sleep(1)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the session this test started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
