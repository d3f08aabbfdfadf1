"""Real servers for the tests, on loopback only, each started in a process group of its own and
stopped by that group and by the process ids of everything it started (never by name):

- `MotoS3`: an S3-compatible server (`python -m moto.server`) with fake credentials;
- `TcpProxy`: a forwarder in front of it, which a test stops to make the store "go away" and
  starts again on the same port (the server, and what it holds, stays up behind it);
- `RayCluster`: a head and worker nodes (`ray start --block`), one CPU each, free ports, a temp
  folder and an auth token of their own;
- `start_dashboard`: optuna-dashboard on a study's storage.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

HOST = "127.0.0.1"
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-4f1c",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout}s")


def start(args: list[str], log: Path | None = None, env: dict | None = None) -> subprocess.Popen:
    """A process in its own process group (ours to stop), output to `log`."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen, started: list[psutil.Process] = ()) -> None:
    """SIGKILL `proc`'s process group and, by pid, every process it started (Ray workers move to
    process groups of their own), including the ones recorded in `started` earlier."""
    try:
        started = list(started) + psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        started = list(started)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for child in started:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


class MotoS3:
    """`python -m moto.server` on 127.0.0.1:<port>; `bucket` exists. `uri(prefix, port)` is the
    run URI (through `port`, e.g. a proxy's, default the server's own)."""

    def __init__(self, folder: Path, bucket: str = "bucket"):
        self.port = free_port()
        self.bucket = bucket
        self.proc = start([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                          folder / "moto.log", FAKE_CREDENTIALS)
        wait_for_port(self.port, self.proc)
        import boto3

        self.client = boto3.client("s3", endpoint_url=f"http://{HOST}:{self.port}",
                                   aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                   aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                                   region_name="us-east-1")
        self.client.create_bucket(Bucket=bucket)

    def uri(self, prefix: str, port: int | None = None) -> str:
        return (f"s3://{self.bucket}/{prefix}?endpoint_override={HOST}:{port or self.port}"
                "&scheme=http")

    def keys(self, prefix: str) -> list[str]:
        """The objects under `prefix` (not the empty folder markers pyarrow leaves)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", [])
                      if not o["Key"].endswith("/"))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def close(self) -> None:
        stop(self.proc)


_PROXY = r"""
import socket, sys, threading
listen, target = int(sys.argv[1]), int(sys.argv[2])
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen))
server.listen(64)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", target))
    for a, b in ((client, upstream), (upstream, client)):
        threading.Thread(target=pipe, args=(a, b), daemon=True).start()
"""


class TcpProxy:
    """127.0.0.1:<port> forwarded to 127.0.0.1:<target>; `down()` and `up()` take it away and
    bring it back on the same port."""

    def __init__(self, target: int):
        self.port = free_port()
        self.target = target
        self.proc: subprocess.Popen | None = None
        self.up()

    def up(self) -> None:
        self.proc = start([sys.executable, "-c", _PROXY, str(self.port), str(self.target)])
        wait_for_port(self.port, self.proc)

    def down(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None


class RayCluster:
    """A head and `workers` worker nodes, each started with `--node-ip-address 127.0.0.1`, one CPU
    each. `address` is the head's host:port; `env` is what a driver needs to join (the cluster's
    auth token, and cluster mode on).

    Ray refuses worker nodes while its cluster mode is off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    which tests/conftest.py sets so that a single-machine Ray binds loopback only); with it on,
    Ray resolves 127.0.0.1 to this machine's own address and its servers listen on every
    interface. Traffic to the machine's own address never leaves it."""

    def __init__(self, folder: Path, workers: int = 1, env: dict | None = None):
        self.temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: socket paths
        token = self.temp / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
                    **(env or {})}
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        self.started: list[psutil.Process] = []
        try:
            self._node(folder / "ray-head.log", "--head", "--port", str(self.port),
                       "--include-dashboard", "false",
                       "--ray-client-server-port", str(free_port()))
            wait_for_port(self.port, self.nodes[0])
            for i in range(workers):
                self._node(folder / f"ray-worker{i}.log", "--address", self.address)
            self._wait_for_nodes(1 + workers)
        except BaseException:
            self.close()
            raise

    def _node(self, log: Path, *args: str) -> None:
        ports = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
        command = [str(Path(sys.executable).parent / "ray"), "start", *args,
                   "--node-ip-address", HOST, "--num-cpus", "1", "--block",
                   "--object-store-memory", str(200 * 2**20), "--disable-usage-stats",
                   "--temp-dir", str(self.temp)]
        for flag in ports:
            command += [flag, str(free_port())]
        self.nodes.append(start(command, log, self.env))

    def _wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        probe = ("import ray; ray.init(address='%s', log_to_driver=False, logging_level='ERROR');"
                 "print(sum(1 for n in ray.nodes() if n['Alive']))" % self.address)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(node.poll() is not None for node in self.nodes):
                raise RuntimeError("a Ray node exited while starting (see its log)")
            out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                 env={**os.environ, **self.env}, timeout=120)
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
                self._record_started()
                return
            time.sleep(1)
        raise TimeoutError(f"the Ray cluster did not reach {count} nodes in {timeout}s")

    def _record_started(self) -> None:
        for node in self.nodes:
            try:
                self.started += psutil.Process(node.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                pass

    def close(self) -> None:
        self._record_started()
        for node in reversed(self.nodes):
            stop(node, self.started)
        shutil.rmtree(self.temp, ignore_errors=True)


def start_dashboard(storage: str, log: Path) -> tuple[subprocess.Popen, str]:
    """optuna-dashboard on `storage` (a journal path or an RDB URL), bound to 127.0.0.1; returns
    the process and its base URL once it answers."""
    port = free_port()
    proc = start([str(Path(sys.executable).parent / "optuna-dashboard"), storage, "--host", HOST,
                  "--port", str(port)], log)
    url = f"http://{HOST}:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/meta", timeout=5).read()
            return proc, url
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                stop(proc)
                raise RuntimeError(f"optuna-dashboard did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
