"""Starts and stops the tracking servers the tracking benchmarks compare.

`GhafServer` runs `ghaf server` on a fresh data directory and reads the admin token it
prints once; `MlflowServer` runs `mlflow server` with its defaults on a fresh sqlite file.
Both listen on a free 127.0.0.1 port and are stopped by SIGTERM when the `with` block ends.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout} s")


def http_ok(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop(process, what):
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        print(f"{what} ignored SIGTERM for 60 s; killing it", file=sys.stderr)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class GhafServer:
    """`ghaf server` on `data_dir`. The token of a fresh directory is kept in
    `data_dir/bench-token`, so the server can be stopped and started again."""

    def __init__(self, binary, data_dir):
        self.binary = binary
        self.data_dir = data_dir
        self.process = None
        self.url = None
        self.token = None

    def __enter__(self):
        os.makedirs(self.data_dir, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GHAF_")}
        env["RUST_LOG"] = "warn"
        self.process = subprocess.Popen(
            [self.binary, "server", "--listen", f"127.0.0.1:{port}", "--data-dir", self.data_dir],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=True,
        )
        token_file = os.path.join(self.data_dir, "bench-token")
        if os.path.exists(token_file):
            with open(token_file) as f:
                self.token = f.read().strip()
        else:
            for line in self.process.stdout:
                line = line.strip()
                if line.startswith("ghaf_"):
                    self.token = line
                    break
            if not self.token:
                raise RuntimeError("ghaf server printed no admin token")
            with open(token_file, "w") as f:
                f.write(self.token)
        wait_until(lambda: http_ok(f"{self.url}/healthz"), "ghaf server")
        return self

    def __exit__(self, *exc):
        stop(self.process, "ghaf server")
        return False

    def meta_db(self):
        return os.path.join(self.data_dir, "meta.db")


class MlflowServer:
    """`mlflow server` with its defaults and a sqlite backend in `data_dir`."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.process = None
        self.url = None
        self.token = None

    def __enter__(self):
        os.makedirs(self.data_dir, exist_ok=True)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
        self.process = subprocess.Popen(
            [
                mlflow,
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.db()}",
                "--artifacts-destination",
                os.path.join(self.data_dir, "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.data_dir, "server.log"), "a"),
            start_new_session=True,
        )
        wait_until(lambda: http_ok(f"{self.url}/health"), "mlflow server", timeout=300)
        return self

    def __exit__(self, *exc):
        stop(self.process, "mlflow server")
        return False

    def db(self):
        return os.path.join(self.data_dir, "mlflow.db")


def client_for(server):
    """An MlflowClient for the server. The client reads its token from the environment on
    every request, so Ghaf's token stays set; `mlflow server` ignores it."""
    from mlflow import MlflowClient

    if server.token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = server.token
    return MlflowClient(server.url)


def load_average():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
