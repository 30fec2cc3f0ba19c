"""`microw app` starts the Streamlit app on localhost with the chosen store."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_microw_app_serves_on_localhost(tmp_path):
    port = free_port()
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "microw_core.cli", "app", "--port", str(port),
                                 "--store", str(tmp_path / "store")],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    assert response.read() == b"ok"
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert b"<title>Streamlit</title>" in response.read() or response.status == 200
        text = log.read_text()
        assert f"http://127.0.0.1:{port}" in text and str(tmp_path / "store") in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # microw and the streamlit server it started
        proc.wait(30)
